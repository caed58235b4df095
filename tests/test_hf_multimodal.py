"""Vision-language and audio models in the transformers engine, on tiny random-weight models built here from
configs with their real processor classes (tests/tiny_vlms.py): Qwen2-VL, Qwen2.5-VL, LLaVA, Idefics3, Gemma 3
and Qwen2-Audio.

Each answer is compared with ``model.generate`` on the same processor's inputs (greedy, token for token), alone,
chunked, and in the continuous batch next to other requests, and the media are shown to matter (another image
changes the answer's log-probabilities).
"""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
import tiny_vlms  # noqa: E402
from media_files import pattern_image  # noqa: E402

from lmchat import ChatModel  # noqa: E402
from lmchat.engines.hf.runner import SlotRunner  # noqa: E402
from lmchat.errors import InvalidRequestError, UnsupportedError  # noqa: E402

pytestmark = pytest.mark.models
NEW_TOKENS = 8
KIND = {"qwen2_vl": "image", "qwen2_5_vl": "image", "llava": "image", "idefics3": "image", "gemma3": "image",
        "qwen2_audio": "audio"}


def medium(kind: str, seed: int = 1):
    if kind == "image":
        return pattern_image((64, 48), seed)
    if kind == "video":
        return [pattern_image((56, 56), seed + i) for i in range(4)]
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(12000).astype(np.float32) * 0.3, 16000)


def question(kind: str, text: str = "What is this?") -> list[dict]:
    return [{"role": "user", "content": f"<{kind}>{text}"}]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_tokenizer_dir):
    cache: dict[str, str] = {}

    def build(family: str) -> str:
        if family not in cache:
            out = tmp_path_factory.mktemp(family)
            cache[family] = str(tiny_vlms.FAMILIES[family](out, tiny_tokenizer_dir))
        return cache[family]

    return build


@pytest.fixture(scope="module")
def models(built):
    opened: dict[str, ChatModel] = {}

    def get(family: str) -> ChatModel:
        if family not in opened:
            opened[family] = ChatModel({"model_name_or_path": built(family), "do_sample": False,
                                        "max_new_tokens": NEW_TOKENS})
        return opened[family]

    yield get
    for model in opened.values():
        model.close()


def generated(model: ChatModel, prepared) -> str:
    """``model.generate`` on the same processor outputs (the media prompt the engine got), decoded."""
    loaded = model.engine.loaded
    ids = torch.tensor([prepared.prompt_token_ids])
    features = prepared.media_inputs.features if prepared.media_inputs is not None else {}
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **features,
                                    max_new_tokens=NEW_TOKENS, do_sample=False)
    return loaded.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("family", list(KIND))
def test_answers_equal_generate_with_the_same_processor(models, family):
    model, kind = models(family), KIND[family]
    assert isinstance(model.engine.worker.runner, SlotRunner)  # the batched slot cache, not the fallback
    assert getattr(model.engine.capabilities, kind + "s")
    prepared = model.prepare(question(kind), **{kind + "s": [medium(kind)]})
    assert prepared.prompt_tokens > len(model.engine.tokenize(prepared.prompt))  # placeholders expanded
    [answer] = model.chat(question(kind), **{kind + "s": [medium(kind)]})
    assert answer.response_text == generated(model, prepared)
    assert answer.prompt_length == prepared.prompt_tokens


@pytest.mark.parametrize("family", list(KIND))
def test_the_medium_changes_the_answer(models, family):
    model, kind = models(family), KIND[family]
    first, second = (model.chat(question(kind), **{kind + "s": [medium(kind, seed)]}, logprobs=True)[0]
                     for seed in (1, 2))
    assert first.logprobs[0].logprob != second.logprobs[0].logprob


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_video_answers_equal_generate(models, family):
    model = models(family)
    video = medium("video")
    prepared = model.prepare(question("video"), videos=[video])
    # 4 frames of 56x56: 2 temporal patches of 2 frames, 4x4 patches of 14 pixels
    assert prepared.media_inputs.features["video_grid_thw"].tolist() == [[2, 4, 4]]
    [answer] = model.chat(question("video"), videos=[video])
    assert answer.response_text == generated(model, prepared)
    other = model.chat(question("video"), videos=[medium("video", 7)], logprobs=True)[0]
    assert other.logprobs[0].logprob != model.chat(question("video"), videos=[video], logprobs=True)[0].logprobs[0].logprob


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3", "qwen2_audio"])
def test_media_requests_batch_with_text_requests(models, family):
    """Media and text-only requests at once: each answer equals its answer alone, and decode steps ran several
    rows together (M-RoPE offsets, Gemma 3's windows and image spans, per row)."""
    model, kind = models(family), KIND[family]
    calls = [(question(kind), {kind + "s": [medium(kind, 1)]}),
             ([{"role": "user", "content": "Tell me a story about a boat."}], {}),
             (question(kind, "And this one, what is it?"), {kind + "s": [medium(kind, 2)]})]
    alone = [model.chat(messages, **media)[0].response_text for messages, media in calls]
    worker = model.engine.worker
    worker.batch_sizes.clear()

    async def together():
        return await asyncio.gather(*(model.achat(messages, **media) for messages, media in calls))

    answers = [answers[0].response_text for answers in asyncio.run(together())]
    assert answers == alone
    assert max(worker.batch_sizes) == 3


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3", "idefics3"])
def test_media_prompts_prefill_in_chunks(models, family):
    model, kind = models(family), KIND[family]
    worker = model.engine.worker
    prepared = model.prepare(question(kind), images=[medium(kind)])
    expected = generated(model, prepared)
    limit, worker.prefill_chunk_tokens = worker.prefill_chunk_tokens, 5
    try:
        [answer] = model.chat(question(kind), images=[medium(kind)])
    finally:
        worker.prefill_chunk_tokens = limit
    assert answer.response_text == expected


def test_answers_of_one_call_share_the_prompt_and_other_media_do_not(models):
    """n=2 shares one prompt's keys/values (same media); a prompt with the same text and another image does not
    reuse the first one's cache past the text."""
    model = models("qwen2_vl")
    one, two = medium("image", 1), medium("image", 2)
    expected = [generated(model, model.prepare(question("image"), images=[image])) for image in (one, two)]
    answers = model.chat(question("image"), images=[one], n=2)
    assert [answer.response_text for answer in answers] == [expected[0]] * 2

    async def both():
        return await asyncio.gather(model.achat(question("image"), images=[one]),
                                    model.achat(question("image"), images=[two]))

    assert [answers[0].response_text for answers in asyncio.run(both())] == expected


def test_text_only_chats_on_a_vision_model_equal_generate(models):
    model = models("qwen2_vl")
    messages = [{"role": "user", "content": "Hello there"}]
    prepared = model.prepare(messages)
    assert prepared.media_inputs is None
    assert model.chat(messages)[0].response_text == generated(model, prepared)


def test_media_a_model_does_not_take_are_refused_by_kind(models):
    with pytest.raises(UnsupportedError, match="does not accept videos"):
        models("llava").chat(question("video"), videos=[medium("video")])
    with pytest.raises(UnsupportedError, match="does not accept audios"):
        models("qwen2_vl").chat(question("audio"), audios=[medium("audio")])
    with pytest.raises(UnsupportedError, match="does not accept images"):
        models("qwen2_audio").chat(question("image"), images=[medium("image")])


def test_a_template_without_the_models_placeholder_is_a_clear_error(built):
    with ChatModel({"model_name_or_path": built("qwen2_vl"), "template": "chatml", "max_new_tokens": 2}) as model:
        with pytest.raises(InvalidRequestError, match="placeholder") as error:
            model.chat(question("image"), images=[medium("image")])
    assert error.value.param == "messages"


def test_gemma3_image_tokens_attend_both_ways_in_the_slot_cache(models):
    """Gemma 3's image tokens see each other both ways at prefill (as its own mask does); the slot cache's mask
    does too, even when the prompt is prefilled in chunks (a chunk never ends inside an image)."""
    model = models("gemma3")
    image = medium("image")
    prepared = model.prepare(question("image"), images=[image])
    loaded = model.engine.loaded
    ids = torch.tensor([prepared.prompt_token_ids])
    features = dict(prepared.media_inputs.features)
    with torch.inference_mode():
        both_ways = loaded.model(input_ids=ids, **features).logits[0, -1].log_softmax(-1)
        features.pop("token_type_ids")  # without it, Gemma 3 attends causally inside the image
        causal = loaded.model(input_ids=ids, **features).logits[0, -1].log_softmax(-1)
    worker = model.engine.worker
    for chunk in (256, 6):
        worker.prefill_chunk_tokens = chunk
        [answer] = model.chat(question("image"), images=[image], logprobs=True, max_new_tokens=1)
        token = answer.logprobs[0]
        assert abs(token.logprob - both_ways[token.token_id].item()) < 1e-5
        assert abs(token.logprob - causal[token.token_id].item()) > 1e-4
    worker.prefill_chunk_tokens = 256


@pytest.mark.parametrize(("family", "template"), [("qwen2_vl", "qwen2_vl"), ("gemma3", "gemma3"),
                                                  ("qwen2_audio", "qwen2_audio")])
def test_llamafactory_template_names_write_the_models_placeholders(models, built, family, template):
    """``template: qwen2_vl`` (a LLaMA-Factory inference YAML) renders each medium as its mm_plugin does, so the
    processor expands it; the answer equals generate on the same inputs (and for Qwen2-VL, the model's own
    template gives the same prompt)."""
    kind = KIND[family]
    with ChatModel({"model_name_or_path": built(family), "template": template, "do_sample": False,
                    "max_new_tokens": NEW_TOKENS}) as named:
        prepared = named.prepare(question(kind), **{kind + "s": [medium(kind)]})
        assert prepared.prompt_tokens > len(named.engine.tokenize(prepared.prompt))  # placeholders expanded
        [answer] = named.chat(question(kind), **{kind + "s": [medium(kind)]})
        assert answer.response_text == generated(named, prepared)
    if family == "qwen2_vl":
        own = models(family).prepare(question(kind), **{kind + "s": [medium(kind)]})
        assert own.prompt == prepared.prompt and own.prompt_token_ids == prepared.prompt_token_ids


def test_gemma3_pan_and_scan_adds_crops_and_answers_as_generate(built, models):
    """image_do_pan_and_scan (LLaMA-Factory's key): Gemma 3's processor adds crops of a long image beside the whole
    one, so the prompt holds more image tokens; the answer still equals generate on the same processor outputs."""
    wide = pattern_image((768, 256), 3)  # 3:1, crops of at least 256 pixels: pan and scan makes 3 of them
    plain = models("gemma3").prepare(question("image"), images=[wide])
    with ChatModel({"model_name_or_path": built("gemma3"), "do_sample": False, "max_new_tokens": NEW_TOKENS,
                    "image_do_pan_and_scan": True}) as model:
        prepared = model.prepare(question("image"), images=[wide])
        assert prepared.media_inputs.features["pixel_values"].shape[0] == 4  # the whole image and 3 crops
        assert plain.media_inputs.features["pixel_values"].shape[0] == 1
        assert prepared.prompt_tokens > plain.prompt_tokens
        [answer] = model.chat(question("image"), images=[wide])
        assert answer.response_text == generated(model, prepared)


def test_pan_and_scan_on_a_model_that_cannot_is_a_config_error(built):
    from lmchat.errors import ConfigError

    with pytest.raises(ConfigError, match="image_do_pan_and_scan applies to models whose image processor pans") \
            as error:
        ChatModel({"model_name_or_path": built("qwen2_vl"), "image_do_pan_and_scan": True})
    assert error.value.param == "image_do_pan_and_scan"
