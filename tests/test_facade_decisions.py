"""Each decision the facade makes once, for every front end and engine: the media of content parts (every
OpenAI/vLLM/LLaMA-Factory/transformers vocabulary), the conversation copy and tool arguments, the call's options,
the answer's token budget and prompt ids in the engine request, the answer assembled from its chunks, and the
capabilities checked before any work."""

from __future__ import annotations

import json

import pytest

from lmchat import ChatModel
from lmchat.chat.assemble import AnswerAssembler, collect_responses
from lmchat.chat.messages import Media, build_conversation, media_of, part_media
from lmchat.chat.response import ChatChunk
from lmchat.engines.base import Capabilities
from lmchat.engines.fake import ScriptedEngine
from lmchat.engines.registry import register_engine
from lmchat.errors import ConfigError, ContextLengthError, InvalidRequestError, UnsupportedError
from lmchat.parsing.types import ToolCall, ToolCallDelta

PNG = "data:image/png;base64,iVBORw0KGgo="


class MediaEngine(ScriptedEngine):
    """The scripted engine, declaring that it accepts images, videos and audios (registered for real below)."""

    name = "fake-media"

    async def start(self) -> None:
        await super().start()
        self.capabilities = Capabilities(images=True, videos=True, audios=True)


register_engine("fake-media", MediaEngine)


@pytest.fixture
def model(fake_script):
    with ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(replies=["one two three four"])}) as m:
        yield m


@pytest.fixture
def media_model(fake_script):
    with ChatModel({"infer_backend": "fake-media", "model_name_or_path": fake_script(replies=["seen"])}) as m:
        yield m


# --- media in content parts -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("part", "kind", "source"),
    [
        ({"type": "image_url", "image_url": {"url": "a.png", "detail": "low"}}, "image", "a.png"),
        ({"type": "image_url", "image_url": PNG}, "image", PNG),
        ({"type": "input_image", "image_url": "https://x/b.jpg"}, "image", "https://x/b.jpg"),
        ({"type": "image", "image": "c.png"}, "image", "c.png"),
        ({"type": "image", "url": "https://x/d.png"}, "image", "https://x/d.png"),
        ({"type": "image", "path": "e.png"}, "image", "e.png"),
        ({"type": "image"}, "image", None),  # a placeholder for the next of images=
        ({"type": "video_url", "video_url": {"url": "v.mp4"}}, "video", "v.mp4"),
        ({"type": "video", "video": "w.mp4"}, "video", "w.mp4"),
        ({"type": "audio_url", "audio_url": {"url": "s.wav"}}, "audio", "s.wav"),
        ({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}, "audio",
         "data:audio/wav;base64,UklGRg=="),
        ({"type": "audio", "path": "t.mp3"}, "audio", "t.mp3"),
    ],
)
def test_every_media_part_vocabulary_is_read(part, kind, source):
    assert part_media(part) == (kind, source)


def test_image_pil_parts_keep_the_object():
    image = object()
    assert part_media({"type": "image_pil", "image_pil": image}) == ("image", image)


@pytest.mark.parametrize("kind", ["text", "input_text", "output_text"])
def test_text_parts_are_not_media(kind):
    assert part_media({"type": kind, "text": "hi"}) is None


def test_unknown_or_empty_parts_are_clear_errors():
    with pytest.raises(UnsupportedError, match=r"messages\[0\].content has a content part of type 'file'") as error:
        build_conversation([{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}])
    assert error.value.param == "messages[0].content"
    with pytest.raises(InvalidRequestError, match="image_url part without its image"):
        build_conversation([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(InvalidRequestError, match="input_audio part without its audio"):
        build_conversation([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}])


def test_conversation_parts_become_the_templates_form_and_their_media_in_order():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "1.png"}},
                                     {"type": "input_audio", "input_audio": {"data": "QQ==", "format": "mp3"}}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "v.mp4"}},
                                     {"type": "image", "image": "2.png"}]},
    ]
    conversation = build_conversation(messages)
    assert conversation[0]["content"] == [{"type": "text", "text": "look"}, {"type": "image", "image": "1.png"},
                                          {"type": "audio", "audio": "data:audio/mp3;base64,QQ=="}]
    assert conversation[1]["content"] == "a\nb"  # text-only parts: one string, as templates expect
    assert media_of(conversation) == media_of(messages) == Media(("1.png", "2.png"), ("v.mp4",),
                                                                  ("data:audio/mp3;base64,QQ==",))


def test_prepare_takes_openai_media_parts_after_the_explicit_media(media_model, tmp_path):
    from media_files import png_bytes, wav_bytes, write

    part, explicit = write(tmp_path, "part.png", png_bytes((40, 30))), write(tmp_path, "e.png", png_bytes((50, 40)))
    sound = write(tmp_path, "part.wav", wav_bytes(0.25, 16000))
    messages = [{"role": "user", "content": [{"type": "text", "text": "compare"},
                                             {"type": "image_url", "image_url": {"url": str(part)}},
                                             {"type": "audio_url", "audio_url": {"url": str(sound)}}]}]
    prepared = media_model.prepare(messages, images=[str(explicit)])  # decoded once, here
    assert [image.size for image in prepared.media.images] == [(50, 40), (40, 30)]
    [request] = prepared.requests("r")
    assert request.images is prepared.media.images and len(request.audios[0].waveform) == 4000
    [answer] = media_model.chat(messages)
    assert answer.response_text == "seen"
    assert [image.size for image in media_model.engine.requests[-1].images] == [(40, 30)]


def test_media_parts_are_refused_by_an_engine_without_media(model):
    parts = [{"type": "text", "text": "hi"}, {"type": "video_url", "video_url": {"url": "v.mp4"}}]
    with pytest.raises(UnsupportedError, match="does not accept videos") as error:
        model.prepare([{"role": "user", "content": parts}])
    assert error.value.param == "videos"
    assert model.engine.requests == []


# --- messages and options, once ---------------------------------------------------------------------------
def test_the_callers_messages_are_copied_once_and_tool_arguments_decoded_once(model):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": [1, 2]}'}}
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    before = json.dumps(messages)
    prepared = model.prepare(messages)
    assert json.dumps(messages) == before  # nothing the caller gave was touched
    assert prepared.conversation[1]["tool_calls"][0]["function"]["arguments"] == {"x": [1, 2]}
    assert prepared.conversation[1]["tool_calls"][0] is not call


def test_call_options_are_split_and_validated_in_one_place(model):
    options = model.resolve_options(temperature=0.2, enable_thinking=False, tool_choice="none",
                                    chat_template_kwargs={"custom": 1})
    assert options.params.temperature == 0.2 and options.tool_choice == "none"
    assert options.template_kwargs == {"custom": 1, "enable_thinking": False}
    assert model.resolve_options().template_kwargs == {"enable_thinking": True}  # the config's default
    with pytest.raises(InvalidRequestError, match="'enable_thinking': use true or false"):
        model.resolve_options(enable_thinking="yes")
    with pytest.raises(InvalidRequestError, match="temperature"):
        model.resolve_options(temprature=0.2)


# --- the budget and the token ids travel in the request ----------------------------------------------------
def test_the_facade_decides_the_answer_budget_and_the_engine_honours_it(model):
    prepared = model.prepare([{"role": "user", "content": "hi"}], max_new_tokens=3)
    [request] = prepared.requests()
    assert request.prompt_token_ids == prepared.prompt_token_ids and request.max_tokens == prepared.max_tokens == 3
    [answer] = model.chat([{"role": "user", "content": "hi"}], max_new_tokens=3)
    assert (answer.response_length, answer.finish_reason) == (3, "length")
    prompt = prepared.prompt_tokens
    assert model.prepare([{"role": "user", "content": "hi"}], max_length=prompt + 2).max_tokens == 2
    with pytest.raises(ContextLengthError, match="max_length"):
        model.prepare([{"role": "user", "content": "hi"}], max_length=prompt)


# --- one answer assembler ----------------------------------------------------------------------------------
CHUNKS = [
    ChatChunk(0, text="<think>x</think>", reasoning="x"),
    ChatChunk(1, text="plain", content="plain"),
    ChatChunk(0, text='<tool_call>{"name": "f"', tool_calls=(ToolCallDelta(0, "call_1", "f", '{"a": '),)),
    ChatChunk(0, text=', "arguments": {"a": 1}}</tool_call>', tool_calls=(ToolCallDelta(0, arguments="1}"),),
              finish_reason="tool_calls", prompt_tokens=7, completion_tokens=9),
    ChatChunk(1, finish_reason="stop", prompt_tokens=7, completion_tokens=2),
]


def test_the_assembler_folds_chunks_into_responses():
    first, second = collect_responses(CHUNKS, 2, prompt_tokens=5)
    assert first.tool_calls == [ToolCall("call_1", "f", '{"a": 1}')] and first.reasoning_text == "x"
    assert (first.content, first.finish_reason, first.response_length, first.prompt_length) == (
        None, "tool_calls", 9, 7)
    assert first.response_text == '<think>x</think><tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
    assert (second.content, second.finish_reason, second.index) == ("plain", "stop", 1)


def test_an_unfinished_answer_needs_the_reason_its_reader_stopped_it():
    answer = AnswerAssembler(0, prompt_tokens=4)
    answer.add(ChatChunk(0, text="half", content="half"))
    with pytest.raises(ValueError, match="has not finished"):
        answer.response()
    stopped = answer.response("abort", completion_tokens=1)
    assert (stopped.response_text, stopped.finish_reason, stopped.response_length, stopped.prompt_length) == (
        "half", "abort", 1, 4)


def test_streamed_and_collected_answers_agree_for_tools_and_reasoning(fake_script):
    reply = "<think>hmm</think>Calling.<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": \"é\"}}\n</tool_call>"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    args = {"infer_backend": "fake", "model_name_or_path": fake_script(replies=[reply]), "template": "qwen3"}
    with ChatModel(args) as model:
        prepared = model.prepare([{"role": "user", "content": "go"}], tools=tools)
        answer = AnswerAssembler(0, prepared.prompt_tokens)
        for chunk in model.stream_chunks(prepared):
            answer.add(chunk)
        [whole] = model.chat([{"role": "user", "content": "go"}], tools=tools)
    streamed = answer.response()
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in whole.tool_calls]
    assert (streamed.content, streamed.reasoning_text) == (whole.content, whole.reasoning_text) == ("Calling.", "hmm")


# --- capabilities, checked centrally ------------------------------------------------------------------------
def test_adapters_with_an_engine_that_cannot_apply_them_fail_before_loading():
    args = {"infer_backend": "fake", "model_name_or_path": "no-such-script.json", "adapter_name_or_path": "lora"}
    with pytest.raises(ConfigError, match="fake engine does not apply LoRA adapters") as error:
        ChatModel(args)  # the script does not exist: loading it would fail with another error
    assert error.value.param == "adapter_name_or_path"


def test_scores_need_a_reward_model_whatever_the_engine(model):
    with pytest.raises(UnsupportedError, match="fake engine cannot compute reward scores with 'fake-echo'"):
        model.get_scores(["text"])
