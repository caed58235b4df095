"""Images into the vLLM engine for real on vLLM's CPU backend: a tiny random-weight Idefics3 built here from a
config with its real processor (tests/tiny_vlms.py; vLLM 0.32's Qwen2-VL and LLaVA need torchvision, Idefics3 does
not). vLLM's own processor expands the placeholders the model's chat template wrote; the image reaches the model
(different images, different greedy answers), and in float32 the answers and prompt token counts equal the
transformers engine's on the same model and images. Through ``ChatModel.chat``, the server (``image_url``) and
batch inference. Audio the same way with a tiny Qwen2-Audio. Two vLLM engines for the module (~40-60 s each)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

import tiny_vlms  # noqa: E402
from media_files import data_url, pattern_image, png_bytes  # noqa: E402
from test_server_support import ThreadServer  # noqa: E402
from vllm_support import VLLM_TEST_SETTINGS  # noqa: E402

from lmchat import ChatModel  # noqa: E402
from lmchat.batch import BatchOptions, load_rows, run_batch  # noqa: E402
from lmchat.errors import EngineError, UnsupportedError  # noqa: E402

ASK = [{"role": "user", "content": "What is in the picture?"}]
GREEDY = {"do_sample": False, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def idefics3_dir(tmp_path_factory, tiny_tokenizer_dir):
    return tiny_vlms.idefics3(tmp_path_factory.mktemp("idefics3-vllm"), tiny_tokenizer_dir, head_dim=32)


@pytest.fixture(scope="module")
def images():
    return [pattern_image((64, 48), seed=1), pattern_image((48, 64), seed=2)]


@pytest.fixture(scope="module")
def transformers_answers(idefics3_dir, images):
    """(prompt token ids, greedy answer) of each image on the transformers engine, float32."""
    settings = {"model_name_or_path": str(idefics3_dir), "infer_dtype": "float32", "native_decode": "off"}
    with ChatModel({"infer_backend": "huggingface", **settings}) as model:
        return [(model.run_sync(model.aprepare(ASK, images=[image], **GREEDY)).prompt_token_ids,
                 model.chat(ASK, images=[image], **GREEDY)[0].response_text) for image in images]


@pytest.fixture(scope="module")
def vllm_vlm(idefics3_dir):
    settings = {**VLLM_TEST_SETTINGS, "model_name_or_path": str(idefics3_dir), "infer_dtype": "float32", **GREEDY}
    with ChatModel(settings) as model:  # greedy by default, as batch inference runs it
        yield model


def test_images_reach_vllm_and_answer_as_transformers(vllm_vlm, images, transformers_answers):
    capabilities = vllm_vlm.engine.capabilities
    assert (capabilities.images, capabilities.videos, capabilities.audios) == (True, False, False)
    answers = []
    for image, (expected_ids, expected_text) in zip(images, transformers_answers):
        prepared = vllm_vlm.run_sync(vllm_vlm.aprepare(ASK, images=[image], **GREEDY))
        assert prepared.prompt_token_ids == expected_ids  # vLLM's expansion is the model's processor's
        assert len(prepared.prompt_token_ids) > len(vllm_vlm.engine.tokenize(prepared.prompt))
        [response] = vllm_vlm.chat(ASK, images=[image], **GREEDY)
        assert response.prompt_length == len(expected_ids) and response.response_length == 8
        assert response.response_text == expected_text
        answers.append(response.response_text)
    assert answers[0] != answers[1]  # the image reached the model
    [text_only] = vllm_vlm.chat(ASK, **GREEDY)
    assert text_only.response_text not in answers
    # n answers of one call share the processed image
    two = vllm_vlm.chat(ASK, images=[images[0]], num_return_sequences=2, **GREEDY)
    assert [r.response_text for r in two] == [answers[0]] * 2


def test_a_kind_the_model_cannot_take_is_refused_by_name(vllm_vlm, images):
    with pytest.raises(UnsupportedError, match="does not accept videos") as failure:
        vllm_vlm.chat(ASK, videos=[[images[0], images[0]]])
    assert failure.value.param == "videos"


def test_image_url_through_the_server(vllm_vlm):
    import io

    from PIL import Image
    from test_vllm import _Borrowed

    png = png_bytes((64, 48), noise=True)
    [expected] = vllm_vlm.chat(ASK, images=[Image.open(io.BytesIO(png)).convert("RGB")], **GREEDY)
    content = [{"type": "image_url", "image_url": {"url": data_url("image/png", png)}},
               {"type": "text", "text": ASK[0]["content"]}]
    with ThreadServer({}, chat_model_class=lambda _: _Borrowed(vllm_vlm), served_model_names=("vlm",)) as server:
        with server.openai() as client:
            completion = client.chat.completions.create(model="vlm", messages=[{"role": "user", "content": content}],
                                                        max_tokens=8, temperature=0)
    assert completion.choices[0].message.content == expected.response_text
    assert completion.usage.prompt_tokens == expected.prompt_length


def test_batch_rows_with_images(vllm_vlm, images, tmp_path):
    paths = []
    for number, image in enumerate(images):
        paths.append(tmp_path / f"image{number}.png")
        image.save(paths[-1])
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"<image>{ASK[0]['content']}"}],
                                             "images": [str(path)]}) + "\n" for path in paths))
    output = tmp_path / "out.jsonl"
    summary = run_batch(load_rows(inputs=[str(rows_file)]), vllm_vlm,
                        BatchOptions(output=str(output), concurrency=2, progress=False))
    assert (summary["completed"], summary["failed"]) == (2, 0)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    expected = [vllm_vlm.chat(ASK, images=[image], **GREEDY)[0] for image in images]
    assert [line["predict"] for line in lines] == [r.response_text for r in expected]
    assert [line["prompt_tokens"] for line in lines] == [r.prompt_length for r in expected]


def test_a_request_vllm_fails_is_an_error_not_an_empty_answer(vllm_vlm, images):
    """vLLM ends a request it cannot run with finish reason 'error' (here: an image its sender-side cache says the
    engine core holds, which it never received; lmchat's own rendering bypasses that cache)."""
    import dataclasses

    from lmchat.engines.vllm.media import multi_modal_data

    engine = vllm_vlm.engine.engine
    prepared = vllm_vlm.run_sync(vllm_vlm.aprepare(ASK, images=[pattern_image((40, 40), seed=9)], **GREEDY))
    prompt = {"prompt_token_ids": vllm_vlm.engine.tokenize(prepared.prompt),
              "multi_modal_data": multi_modal_data(prepared.media)}
    vllm_vlm.run_sync(engine.renderer.render_cmpl_async([prompt]))  # cached by the sender, never sent
    (cached,) = vllm_vlm.run_sync(engine.renderer.render_cmpl_async([prompt]))
    with pytest.raises(EngineError, match="finish reason 'error'"):
        vllm_vlm.run_sync(vllm_vlm.agenerate(dataclasses.replace(prepared, media_inputs=cached)))
    assert vllm_vlm.chat(ASK, images=[images[0]], **GREEDY)[0].response_length == 8  # the engine serves on


@pytest.fixture(scope="module")
def qwen2_audio_dir(tmp_path_factory, tiny_tokenizer_dir):
    return tiny_vlms.qwen2_audio(tmp_path_factory.mktemp("qwen2-audio-vllm"), tiny_tokenizer_dir, head_dim=32,
                                 hub_layout=True)


def test_audio_reaches_vllm_and_answers_as_transformers(qwen2_audio_dir):
    import numpy as np

    times = np.arange(8000) / 16000
    clips = [(np.sin(2 * np.pi * pitch * times).astype("float32"), 16000) for pitch in (220, 880)]
    ask = [{"role": "user", "content": "What is this sound?"}]
    reference = {"model_name_or_path": str(qwen2_audio_dir), "infer_dtype": "float32"}
    with ChatModel({"infer_backend": "huggingface", "native_decode": "off", **reference}) as model:
        expected = [model.chat(ask, audios=[clip], **GREEDY)[0] for clip in clips]
    with ChatModel({**VLLM_TEST_SETTINGS, **reference}) as model:
        capabilities = model.engine.capabilities
        assert (capabilities.images, capabilities.audios) == (False, True)
        answers = [model.chat(ask, audios=[clip], **GREEDY)[0] for clip in clips]
        with pytest.raises(UnsupportedError, match="does not accept images"):
            model.chat(ask, images=[pattern_image((32, 32))])
    assert [(a.response_text, a.prompt_length) for a in answers] == [(e.response_text, e.prompt_length)
                                                                     for e in expected]
    assert answers[0].response_text != answers[1].response_text
