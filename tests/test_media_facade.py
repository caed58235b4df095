"""The facade decides a call's media once (lmchat.chat.media): which medium each placeholder stands for
(LLaMA-Factory's <image>, transformers' {"type": "image"}, OpenAI/vLLM parts), where media may come from (trusted
callers and the server's clients), and the decoded media every engine receives, fetched and decoded off the event
loop. The scripted engine (registered for real, accepting every kind) shows what an engine gets."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time

import pytest

pytest.importorskip("PIL")
pytest.importorskip("av")
np = pytest.importorskip("numpy")
from media_files import data_url, mp4_bytes, png_bytes, wav_bytes, write  # noqa: E402
from PIL import Image  # noqa: E402

from lmchat import ChatModel  # noqa: E402
from lmchat.chat.media import MediaItem, bind_media  # noqa: E402
from lmchat.chat.messages import Media, build_conversation  # noqa: E402
from lmchat.errors import ConfigError, InvalidRequestError, UnsupportedError  # noqa: E402


@pytest.fixture
def model(fake_script):
    script = fake_script(media=["image", "video", "audio"])
    with ChatModel({"infer_backend": "fake", "model_name_or_path": script, "image_max_pixels": 64 * 64}) as m:
        yield m


def user(content):
    return [{"role": "user", "content": content}]


# --- placeholders ------------------------------------------------------------------------------------------
def bound(messages, images=(), videos=(), audios=()):
    conversation = build_conversation(messages)
    return bind_media(conversation, Media(tuple(images), tuple(videos), tuple(audios)))


def test_llamafactory_placeholders_stand_for_the_given_media_in_order():
    conversation, items = bound(user("<image>Compare with<image>, and hear <audio>."), images=["a", "b"],
                                audios=["s"])
    assert conversation[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Compare with"},
                                          {"type": "image"}, {"type": "text", "text": ", and hear "},
                                          {"type": "audio"}, {"type": "text", "text": "."}]
    assert items == (MediaItem("image", "a", "images[0]"), MediaItem("image", "b", "images[1]"),
                     MediaItem("audio", "s", "audios[0]"))


def test_media_without_placeholders_are_prepended_to_the_first_user_message_as_in_llamafactory():
    messages = [{"role": "system", "content": "be brief"}, *user("What is this?"),
                {"role": "assistant", "content": "a cat"}, *user("And now?")]
    conversation, items = bound(messages, images=["a", "b"], videos=["v"])
    # LLaMA-Factory prepends the images, then the videos (before them)
    assert conversation[1]["content"] == [{"type": "video"}, {"type": "image"}, {"type": "image"},
                                          {"type": "text", "text": "What is this?"}]
    assert conversation[3]["content"] == "And now?"
    assert [item.source for item in items] == ["v", "a", "b"]


def test_parts_with_sources_and_placeholders_keep_the_prompt_order():
    parts = [{"type": "image_url", "image_url": {"url": "first.png"}}, {"type": "image"},
             {"type": "text", "text": "and"}, {"type": "audio_url", "audio_url": {"url": "s.wav"}}]
    conversation, items = bound([{"role": "system", "content": "s"}, *user(parts)], images=["second.png"])
    assert [item.source for item in items] == ["first.png", "second.png", "s.wav"]
    assert [item.param for item in items] == ["messages[1].content[0]", "images[0]", "messages[1].content[3]"]
    assert conversation[1]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "and"},
                                          {"type": "audio"}]  # the sources leave the prompt


def test_placeholder_text_without_given_media_stays_text():
    conversation, items = bound(user([{"type": "image_url", "image_url": {"url": "a.png"}},
                                      {"type": "text", "text": "what does <image> mean?"}]))
    assert conversation[0]["content"][1] == {"type": "text", "text": "what does <image> mean?"}
    assert [item.source for item in items] == ["a.png"]


@pytest.mark.parametrize(("text", "images", "message"), [
    ("<image><image>Two?", ["a"], "2 image placeholder.* but 1 image"),
    ("One <image>", ["a", "b"], "1 image placeholder.* but 2 image"),
])
def test_placeholder_counts_must_match(text, images, message):
    with pytest.raises(InvalidRequestError, match=message) as error:
        bound(user(text), images=images)
    assert error.value.param == "images"


def test_a_placeholder_part_without_any_given_medium_is_an_error():
    with pytest.raises(InvalidRequestError, match="1 image placeholder.* but 0 image"):
        bound(user([{"type": "image"}, {"type": "text", "text": "?"}]))


# --- what engines receive ----------------------------------------------------------------------------------
def test_every_kind_of_image_input_reaches_the_engine_decoded_and_within_the_pixel_budget(model, tmp_path):
    path = write(tmp_path, "a.png", png_bytes((40, 30)))
    array = np.zeros((20, 10, 3), np.uint8)
    images = [str(path), png_bytes((30, 40)), data_url("image/png", png_bytes((128, 128))),
              Image.new("RGB", (16, 16)), array]
    [answer] = model.chat(user("<image><image><image><image><image>Describe."), images=images)
    # image_max_pixels 64*64 scaled the 128x128 data URL down; image_min_pixels (32*32) scaled the small ones up
    assert answer.response_text == ("You said: <image><image><image><image><image>Describe. [image 40x30] "
                                    "[image 30x40] [image 64x64] [image 32x32] [image 22x45]")
    request = model.engine.requests[-1]
    assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in request.images)


def test_openai_parts_videos_and_audio_reach_the_engine_decoded(model, tmp_path):
    video = write(tmp_path, "clip.mp4", mp4_bytes(frames=8, fps=4))
    parts = [{"type": "text", "text": "Watch and listen"},
             {"type": "video_url", "video_url": {"url": str(video)}},
             {"type": "input_audio", "input_audio": {"data": data_url("audio/wav", wav_bytes(0.5, 8000))[22:],
                                                     "format": "wav"}}]
    [answer] = model.chat(user(parts))
    assert answer.response_text == "You said: Watch and listen<video><audio> [video 4x64x48] [audio 8000@16000]"
    clip = model.engine.requests[-1].videos[0]
    assert clip.fps == 2.0 and len(clip.frames) == 4  # video_fps 2 over a 2 s clip
    assert model.engine.requests[-1].audios[0].sampling_rate == 16000  # resampled to audio_sampling_rate


def test_the_n_answers_of_a_call_share_its_decoded_media(model):
    prepared = model.prepare(user("<image>?"), images=[png_bytes()], n=2)
    first, second = prepared.requests("r")
    assert first.images is second.images and first.images[0].size == (40, 30)
    assert prepared.prompt == "<|user|>\n<image>?<|end|>\n<|assistant|>\n"


def test_a_broken_medium_is_a_clear_error_naming_its_field(model):
    with pytest.raises(InvalidRequestError, match="image") as error:
        model.chat(user([{"type": "text", "text": "x"},
                         {"type": "image_url", "image_url": {"url": data_url("image/png", b"not a png")}}]))
    assert error.value.param == "messages[0].content[1]"
    with pytest.raises(InvalidRequestError) as error:
        model.chat(user("<image><image>"), images=[png_bytes(), b"\x89PNG broken"])
    assert error.value.param == "images[1]"
    assert model.engine.requests == []  # nothing reached the engine


def test_media_an_engine_cannot_take_are_refused_before_anything_is_read(fake_script, tmp_path):
    script = fake_script(media=["image"])
    with ChatModel({"infer_backend": "fake", "model_name_or_path": script}) as only_images:
        with pytest.raises(UnsupportedError, match="does not accept audios"):
            only_images.chat(user("<audio>"), audios=[str(tmp_path / "never-read.wav")])


# --- where media may come from -----------------------------------------------------------------------------
def test_trusted_callers_read_any_local_file_and_others_only_the_allowed_folder(model, tmp_path):
    path = write(tmp_path / "outside", "a.png", png_bytes())
    messages = user([{"type": "image_url", "image_url": {"url": str(path)}}, {"type": "text", "text": "?"}])
    assert model.chat(messages)[0].response_text.endswith("[image 40x30]")  # the library's user: any file
    untrusted = model.new_media_loader(trusted=False)
    with pytest.raises(InvalidRequestError, match="local files are not allowed") as error:
        model.run_sync(model.aprepare(messages, media_loader=untrusted))
    assert error.value.param == "messages[0].content[0]"


def test_allowed_local_media_path_confines_every_caller(fake_script, tmp_path):
    allowed = tmp_path / "media"
    inside, outside = write(allowed, "in.png", png_bytes()), write(tmp_path, "out.png", png_bytes())
    config = {"infer_backend": "fake", "model_name_or_path": fake_script(media=["image"]),
              "allowed_local_media_path": str(allowed)}
    with ChatModel(config) as model:
        assert model.chat(user("<image>"), images=[str(inside)])[0].response_text.endswith("[image 40x30]")
        for loader in (None, model.new_media_loader(trusted=False)):
            with pytest.raises(InvalidRequestError, match="outside the allowed media folder"):
                model.run_sync(model.aprepare(user("<image>"), images=[str(outside)], media_loader=loader))
    with pytest.raises(ConfigError, match="allowed_local_media_path"):
        ChatModel({**config, "allowed_local_media_path": str(tmp_path / "missing")})


class _SlowImage(http.server.BaseHTTPRequestHandler):
    body = png_bytes((48, 48))

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        for i in range(0, len(self.body), len(self.body) // 5 + 1):  # about half a second in all
            time.sleep(0.1)
            self.wfile.write(self.body[i:i + len(self.body) // 5 + 1])
            self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_image_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowImage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow.png"
    server.shutdown()
    server.server_close()


def test_urls_are_fetched_off_the_event_loop_under_the_domain_list(fake_script, slow_image_url):
    config = {"infer_backend": "fake", "model_name_or_path": fake_script(media=["image"])}
    messages = user([{"type": "image_url", "image_url": {"url": slow_image_url}}, {"type": "text", "text": "?"}])
    with ChatModel(config) as model:
        with pytest.raises(InvalidRequestError, match="not a public address|private|loopback"):
            model.chat(messages)  # loopback is refused unless the host is named
    with ChatModel({**config, "allowed_media_domains": "127.0.0.1"}) as model:
        async def ticking_while_fetching():
            ticks = 0

            async def tick():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            prepared = await model.aprepare(messages)
            ticker.cancel()
            return prepared, ticks

        prepared, ticks = model.run_sync(ticking_while_fetching())
        assert prepared.media.images[0].size == (48, 48)
        assert ticks >= 20  # the loop kept running during the ~0.5 s fetch


def test_sync_prepare_with_media_inside_an_event_loop_says_what_to_use(model):
    async def inside():
        return model.prepare(user("<image>"), images=[png_bytes()])

    with pytest.raises(InvalidRequestError, match="aprepare"):
        asyncio.run(inside())
    assert model.prepare(user("no media")).media == Media()


@pytest.mark.parametrize(("name", "message"), [("crop_to_patches", "is not honoured"),
                                             ("use_audio_in_video", "is not honoured"),
                                             ("image_do_pan_and_scan", "cannot honour image_do_pan_and_scan")])
def test_llamafactory_media_keys_an_engine_does_not_apply_are_refused_not_ignored(fake_script, name, message):
    from lmchat.errors import ConfigError

    script = fake_script(media=["image", "video", "audio"])
    with pytest.raises(ConfigError, match=f"{name} is not honoured" if "not honoured" in message else message) \
            as error:
        ChatModel({"infer_backend": "fake", "model_name_or_path": script, name: True})
    assert error.value.param == name
    ChatModel({"infer_backend": "fake", "model_name_or_path": script, name: False}).close()  # the default is fine
