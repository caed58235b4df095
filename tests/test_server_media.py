"""Media through the OpenAI-compatible server: the official ``openai`` client sends image, audio and video parts
(data URLs, http URLs, local paths) to a real uvicorn server on 127.0.0.1; the scripted engine describes the
decoded media it got. The clients' media follow the server's policy: no local files and no private addresses unless
``allowed_local_media_path`` / ``allowed_media_domains`` (``--allowed-local-media-path``/``--allowed-media-domains``)
allow them. A tiny real VLM (Qwen2-VL) answers through the server as it does through the library."""

from __future__ import annotations

import base64
import http.server
import re
import threading

import pytest

pytest.importorskip("PIL")
pytest.importorskip("av")
from media_files import data_url, mp4_bytes, png_bytes, wav_bytes, write  # noqa: E402
from test_server_support import ProcessServer, ThreadServer, assert_error  # noqa: E402

openai = pytest.importorskip("openai")


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[str, bytes]] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        kind, body = self.files.get(self.path, ("text/plain", b"missing"))
        self.send_response(200 if self.path in self.files else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def media_host():
    """A plain HTTP server on 127.0.0.1 serving a PNG and a WAV (the only network target of these tests)."""
    _Files.files = {"/cat.png": ("image/png", png_bytes((48, 36))), "/tone.wav": ("audio/wav", wav_bytes(0.5, 8000))}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("served-media")


@pytest.fixture(scope="module")
def server(tmp_path_factory, folder):
    script = tmp_path_factory.mktemp("script") / "script.json"
    script.write_text('{"media": ["image", "video", "audio"]}', encoding="utf-8")
    config = {"infer_backend": "fake", "model_name_or_path": str(script), "allowed_media_domains": "127.0.0.1",
              "allowed_local_media_path": str(folder)}
    with ThreadServer(config, served_model_names=("fake",)) as live:
        yield live


def ask(client, *parts, **options):
    content = [{"type": "text", "text": "Look:"}, *parts]
    completion = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": content}],
                                                **options)
    return completion.choices[0].message.content


def test_image_parts_as_data_urls_and_http_urls(server, media_host):
    client = server.openai()
    png = data_url("image/png", png_bytes((40, 30)))
    answer = ask(client, {"type": "image_url", "image_url": {"url": png, "detail": "low"}},
                 {"type": "image_url", "image_url": {"url": f"{media_host}/cat.png"}})
    assert answer == "You said: Look:<image><image> [image 40x30] [image 48x36]"


def test_audio_and_video_parts(server, media_host, folder):
    client = server.openai()
    wav = base64.b64encode(wav_bytes(0.25, 16000)).decode()
    video = write(folder, "clip.mp4", mp4_bytes(frames=8, fps=4))
    answer = ask(client, {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                 {"type": "audio_url", "audio_url": {"url": f"{media_host}/tone.wav"}},
                 {"type": "video_url", "video_url": {"url": str(video)}})
    assert answer == ("You said: Look:<audio><audio><video> [video 4x64x48] [audio 4000@16000] "
                      "[audio 8000@16000]")


def test_streamed_media_answers_equal_non_streamed(server):
    client = server.openai()
    part = {"type": "image_url", "image_url": {"url": data_url("image/png", png_bytes((20, 60)))}}
    stream = client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": [{"type": "text", "text": "Look:"}, part]}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == ask(client, part)


@pytest.mark.parametrize(("url", "message"), [
    ("/etc/hostname", "outside the allowed media folder"),
    ("file:///etc/passwd", "outside the allowed media folder"),
    ("http://169.254.169.254/latest/meta-data", "not allowed|domain"),
    ("ftp://127.0.0.1/x.png", "'ftp:', which is not allowed"),
    (data_url("image/png", b"garbage"), "image"),
])
def test_media_the_policy_refuses_are_400s_naming_the_part(server, url, message):
    body = {"model": "fake", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    with server.http() as http:
        error = assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages[0].content[1]")
    assert re.search(message, error["message"]), error["message"]


def test_without_the_flags_no_local_file_and_no_private_address_is_read(tmp_path, media_host):
    script = tmp_path / "script.json"
    script.write_text('{"media": ["image"]}', encoding="utf-8")
    image = write(tmp_path, "cat.png", png_bytes())
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": str(script)}) as live:
        with live.http() as http:
            for url, message in ((str(image), "local files are not allowed"),
                                 (f"{media_host}/cat.png", "127.0.0.1")):
                body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
                error = assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages[0].content[0]")
                assert message in error["message"]


def test_an_engine_without_media_refuses_them_before_any_fetch(tmp_path, media_host):
    script = tmp_path / "script.json"
    script.write_text("{}", encoding="utf-8")
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": str(script)}) as live, live.http() as http:
        body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a"}}]}]}
        error = assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages")
    assert "does not accept images" in error["message"]


def test_the_serve_command_takes_the_media_flags(tmp_path, media_host):
    script = tmp_path / "script.json"
    script.write_text('{"media": ["image"]}', encoding="utf-8")
    image = write(tmp_path / "allowed", "cat.png", png_bytes((44, 30)))
    server = ProcessServer("--infer_backend", "fake", "--model_name_or_path", str(script),
                           "--allowed-local-media-path", str(image.parent), "--allowed-media-domains", "127.0.0.1",
                           "--served-model-name", "fake")
    try:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=30)
        answer = ask(client, {"type": "image_url", "image_url": {"url": str(image)}},
                     {"type": "image_url", "image_url": {"url": f"{media_host}/cat.png"}})
        assert answer == "You said: Look:<image><image> [image 44x30] [image 48x36]"
    finally:
        server.stop()


# --- a real tiny VLM behind the server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory, tiny_tokenizer_dir, folder):
    import tiny_vlms

    model_dir = tiny_vlms.qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"), tiny_tokenizer_dir)
    config = {"model_name_or_path": str(model_dir), "do_sample": False, "max_new_tokens": 6,
              "allowed_local_media_path": str(folder)}
    with ThreadServer(config, served_model_names=("vlm",)) as live:
        yield live


def _png_image(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.mark.models
def test_a_tiny_vlm_answers_through_the_server_as_through_the_library(vlm_server, folder):
    from media_files import pattern_image

    buffer = __import__("io").BytesIO()
    pattern_image((64, 48), seed=3).save(buffer, "PNG")
    picture = buffer.getvalue()
    video = write(folder, "vlm-clip.mp4", mp4_bytes(frames=4, fps=2, size=(56, 56)))
    client = vlm_server.openai()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url("image/png", picture)}},
                                             {"type": "text", "text": "Describe"},
                                             {"type": "video_url", "video_url": {"url": str(video)}}]}]
    completion = client.chat.completions.create(model="vlm", messages=messages, max_tokens=6, temperature=0)
    library = vlm_server.chat_model
    expected_prepared = library.prepare([{"role": "user", "content": "<image>Describe<video>"}],
                                        images=[_png_image(picture)], videos=[str(video)])
    [expected] = library.chat([{"role": "user", "content": "<image>Describe<video>"}],
                              images=[_png_image(picture)], videos=[str(video)], max_new_tokens=6)
    assert completion.choices[0].message.content == expected.response_text
    assert completion.usage.prompt_tokens == expected_prepared.prompt_tokens == expected.prompt_length
    assert completion.usage.completion_tokens == expected.response_length
    with vlm_server.http() as http:  # vLLM's /tokenize counts the media's expanded placeholders, as the chat does
        tokens = http.post("/tokenize", json={"model": "vlm", "messages": messages}).json()
    assert tokens["tokens"] == list(expected_prepared.prompt_token_ids)
    stream = client.chat.completions.create(model="vlm", messages=messages, max_tokens=6, temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == expected.response_text
    other = data_url("image/png", png_bytes((64, 48), color=(0, 250, 0)))
    messages[0]["content"][0]["image_url"]["url"] = other
    changed = client.chat.completions.create(model="vlm", messages=messages, max_tokens=6, temperature=0, logprobs=True)
    first = client.chat.completions.create(model="vlm", messages=[{**messages[0], "content": [
        {"type": "image_url", "image_url": {"url": data_url("image/png", picture)}}, *messages[0]["content"][1:]]}],
        max_tokens=6, temperature=0, logprobs=True)
    assert changed.choices[0].logprobs.content[0].logprob != first.choices[0].logprobs.content[0].logprob


@pytest.mark.models
def test_a_vlm_without_audio_refuses_an_audio_part_naming_the_kind(vlm_server):
    wav = base64.b64encode(wav_bytes(0.25, 16000)).decode()
    body = {"model": "vlm", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hear"}, {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}]}
    with vlm_server.http() as http:
        error = assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages")
    assert "audio" in error["message"]


def test_tokenize_with_media_follows_the_clients_policy(server):
    body = {"model": "fake", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": "/etc/hostname"}}]}]}
    with server.http() as http:
        error = assert_error(http.post("/tokenize", json=body), 400, param="messages[0].content[1]")
        assert "outside the allowed media folder" in error["message"]
        body["messages"][0]["content"][1]["image_url"]["url"] = data_url("image/png", png_bytes())
        assert http.post("/tokenize", json=body).json()["count"] > 0
        error = assert_error(http.post("/tokenize", json={**body, "add_generation_prompt": False}), 400,
                             param="add_generation_prompt")
