"""ChatModel over the scripted fake engine (registered through the real registry): the facade's own behaviour."""

import asyncio
import copy
import json
import threading
import time

import pytest

from conftest import read_engine_log
from lmchat import ChatModel, Response
from lmchat.errors import ConfigError, InvalidRequestError, UnsupportedError

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def fake_model(fake_script):
    def make(**script):
        return ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(**script)})

    return make


def test_chat_returns_llamafactory_responses(fake_model):
    with fake_model(replies=["The answer is 42."]) as model:
        [response] = model.chat(MESSAGES)
    assert isinstance(response, Response)
    assert (response.response_text, response.finish_reason, response.response_length) == ("The answer is 42.", "stop", 5)
    assert response.prompt_length == model.engine.count_tokens(model.render(MESSAGES))


def test_streamed_equals_non_streamed_and_sync_equals_async(fake_model):
    with fake_model(replies=["one two three four five"]) as model:
        streamed = list(model.stream_chat(MESSAGES))
        [whole] = model.chat(MESSAGES)

        async def both():
            [answer] = await model.achat(MESSAGES)
            pieces = [piece async for piece in model.astream_chat(MESSAGES)]
            return answer, pieces

        answer, async_pieces = asyncio.run(both())
    assert streamed == async_pieces == ["one", " two", " three", " four", " five"]
    assert "".join(streamed) == whole.response_text == answer.response_text


def test_messages_are_never_modified(fake_model):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    before = copy.deepcopy(messages)
    with fake_model(replies=["ok"]) as model:
        model.chat(messages, tools=[{"name": "f"}])
    assert messages == before


def test_stop_strings_are_trimmed_and_end_with_stop(fake_model):
    with fake_model(replies=["alpha beta gamma delta"]) as model:
        [response] = model.chat(MESSAGES, stop=["gam"])
        streamed = "".join(model.stream_chat(MESSAGES, stop="delta"))
    assert (response.response_text, response.finish_reason, response.response_length) == ("alpha beta ", "stop", 3)
    assert streamed == "alpha beta gamma "


def test_n_answers_and_length_finish(fake_model):
    with fake_model(replies=["a b c d e f"]) as model:
        responses = model.chat(MESSAGES, num_return_sequences=3, max_new_tokens=2)
    assert [r.index for r in responses] == [0, 1, 2]
    assert {(r.response_text, r.finish_reason, r.response_length) for r in responses} == {("a b", "length", 2)}


def test_system_prompt_and_default_system(fake_model, fake_script):
    with fake_model(replies=["ok"]) as model:
        assert model.prepare(MESSAGES, system="Be terse.").conversation[0] == {"role": "system", "content": "Be terse."}
        with pytest.raises(InvalidRequestError, match="given twice"):
            model.prepare([{"role": "system", "content": "a"}, *MESSAGES], system="b")
    args = {"infer_backend": "fake", "model_name_or_path": fake_script(replies=["ok"]), "default_system": "Default."}
    with ChatModel(args) as model:
        assert model.prepare(MESSAGES).conversation[0]["content"] == "Default."
        assert model.prepare([{"role": "system", "content": "Mine."}, *MESSAGES]).conversation[0]["content"] == "Mine."


def test_llamafactory_tools_json_string_and_roles(fake_model):
    tools = json.dumps([{"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}])
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "function", "content": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
        {"role": "observation", "content": "sunny"},
    ]
    with fake_model(replies=["ok"]) as model:
        prepared = model.prepare(messages, tools=tools)
    assert prepared.tools == [{"type": "function", "function": json.loads(tools)[0]}]
    assert prepared.conversation[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert prepared.conversation[2]["role"] == "tool"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m.chat(MESSAGES, temprature=0.5), InvalidRequestError, "did you mean 'temperature'"),
        (lambda m: m.chat([{"role": "wizard", "content": "x"}]), InvalidRequestError, "has role 'wizard'"),
        (lambda m: m.chat("hello"), InvalidRequestError, "messages must be a list"),
        (lambda m: m.chat(MESSAGES, logit_bias={1: 5.0}), UnsupportedError, "cannot honour the option.*logit_bias"),
        (lambda m: m.chat(MESSAGES, images=["x.png"]), UnsupportedError, "does not accept images"),
        (lambda m: m.get_scores(["text"]), UnsupportedError, "cannot compute reward scores"),
        (lambda m: list(m.stream_chat(MESSAGES, n=2)), InvalidRequestError, "streams one answer"),
    ],
)
def test_bad_calls_fail_with_clear_errors(fake_model, call, error, message):
    with fake_model(replies=["ok"], unsupported=["logit_bias"]) as model:
        with pytest.raises(error, match=message):
            call(model)


def test_context_length_is_checked_before_generation(fake_model):
    with fake_model(replies=["ok"], context_length=8) as model:
        with pytest.raises(InvalidRequestError, match=r"The prompt has \d+ tokens.*context length \(8 tokens\)"):
            model.chat([{"role": "user", "content": "many words " * 10}])
        assert model.engine.requests == []


def test_unknown_backend_and_template_are_config_errors():
    with pytest.raises(ConfigError, match="Unknown infer_backend 'fak'; did you mean 'fake'"):
        ChatModel({"infer_backend": "fak"})
    with pytest.raises(ConfigError, match="Unknown template 'chatmll'"):
        ChatModel({"infer_backend": "fake", "template": "chatmll"})


def test_closing_a_stream_early_aborts_the_engine_request(fake_model, fake_script):
    script = fake_script(replies=["w " * 200], delay=0.01)
    with ChatModel({"infer_backend": "fake", "model_name_or_path": script}) as model:
        stream = model.stream_chat(MESSAGES)
        first = [next(stream) for _ in range(3)]
        stream.close()
        time.sleep(0.1)
    events = read_engine_log(script)
    assert first == ["w", " w", " w"]
    assert [e["event"] for e in events] == ["request", "abort"]
    assert events[1]["tokens"] < 20


def test_close_stops_the_background_thread(fake_model):
    model = fake_model(replies=["ok"])
    assert any(t.name == "lmchat-loop" for t in threading.enumerate())
    model.close()
    model.close()  # idempotent
    assert model._loop.loop.is_closed()
