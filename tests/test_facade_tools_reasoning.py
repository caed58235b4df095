"""Tool calls and reasoning through ChatModel: parsed on the Response and in stream chunks, raw text kept."""

import json

import pytest

from lmchat import ChatModel
from lmchat.errors import ConfigError, InvalidRequestError, UnsupportedError
from lmchat.parsing import ToolCall

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "user", "content": "Weather in Paris and Rome?"}]
CALLS = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')


def model_with(fake_script, template, reply, **config):
    return ChatModel({"infer_backend": "fake", "model_name_or_path": fake_script(replies=[reply]),
                      "template": template, **config})


def test_parallel_tool_calls_are_parsed_and_raw_text_kept(fake_script):
    with model_with(fake_script, "qwen", CALLS) as model:
        [response] = model.chat(ASK, tools=TOOLS)
        chunks = list(model.stream_chunks(model.prepare(ASK, tools=TOOLS)))
    assert response.finish_reason == "tool_calls"
    assert response.response_text == CALLS
    assert response.content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert all(isinstance(call, ToolCall) and call.id.startswith("call_") for call in response.tool_calls)
    assert not any("<tool" in chunk.content or "tool_call>" in chunk.content for chunk in chunks)
    streamed_calls = [call for chunk in chunks for call in chunk.tool_calls]
    assert [call.index for call in streamed_calls if call.name] == [0, 1]
    assert chunks[-1].finish_reason == "tool_calls"


def test_tools_reach_the_prompt_and_tool_choice_none_removes_them(fake_script):
    with model_with(fake_script, "qwen", "Sunny.") as model:
        assert "get_weather" in model.prepare(ASK, tools=TOOLS).prompt
        prepared = model.prepare(ASK, tools=TOOLS, tool_choice="none")
        assert "get_weather" not in prepared.prompt and prepared.parsing.tool_parser is None
        [plain] = model.chat(ASK, tools=TOOLS)
    assert (plain.content, plain.tool_calls, plain.finish_reason) == ("Sunny.", [], "stop")


@pytest.mark.parametrize(
    ("tool_choice", "error", "message"),
    [
        ("required", UnsupportedError, "cannot constrain its output"),
        ({"type": "function", "function": {"name": "get_weather"}}, UnsupportedError, "cannot constrain its output"),
        ("sometimes", InvalidRequestError, "tool_choice must be"),
    ],
)
def test_tool_choice_that_cannot_be_guaranteed_is_rejected(fake_script, tool_choice, error, message):
    with model_with(fake_script, "qwen", "x") as model:
        with pytest.raises(error, match=message):
            model.chat(ASK, tools=TOOLS, tool_choice=tool_choice)


def test_malformed_tool_call_falls_back_to_content(fake_script):
    broken = '<tool_call>\n{"name": get_weather, "arguments": {"city": "Paris"}}</tool_call>'  # before its name
    with model_with(fake_script, "qwen", broken) as model:
        [response] = model.chat(ASK, tools=TOOLS)
    assert (response.tool_calls, response.finish_reason, response.content) == ([], "stop", broken)


def test_call_broken_after_its_name_stays_a_call(fake_script):
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'
    with model_with(fake_script, "qwen", broken) as model:
        [response] = model.chat(ASK, tools=TOOLS)
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_weather", "{}")]  # key without value
    # the text that could not be read is kept as content; the raw answer is kept whole
    assert (response.finish_reason, response.content, response.response_text) == ("tool_calls", '"city":', broken)


def test_call_cut_by_max_new_tokens_streams_valid_arguments(fake_script):
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris and its suburbs"}}\n</tool_call>'
    cut = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris and'  # the fake engine's first 7 tokens
    with model_with(fake_script, "qwen", reply) as model:
        [response] = model.chat(ASK, tools=TOOLS, max_new_tokens=7)
        chunks = list(model.stream_chunks(model.prepare(ASK, tools=TOOLS, max_new_tokens=7)))
    assert (response.finish_reason, response.response_text, response.content) == ("length", cut, None)
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("get_weather", '{"city": "Paris and"}')]
    pieces = [call for chunk in chunks for call in chunk.tool_calls]
    assert pieces[0].name == "get_weather" and all(piece.name is None for piece in pieces[1:])
    assert len(pieces) >= 3 and "".join(piece.arguments for piece in pieces) == '{"city": "Paris and"}'
    assert not any(chunk.content for chunk in chunks) and chunks[-1].finish_reason == "length"


def test_reasoning_is_split_from_the_answer(fake_script):
    reply = "<think>\nThe user wants a capital.\n</think>\n\nParis."
    with model_with(fake_script, "qwen3", reply) as model:
        [response] = model.chat([{"role": "user", "content": "Capital of France?"}])
        pieces = list(model.stream_chunks(model.prepare([{"role": "user", "content": "Capital of France?"}])))
    assert response.response_text == reply
    assert response.reasoning_text.strip() == "The user wants a capital."
    assert response.content.strip() == "Paris."
    assert "".join(p.reasoning for p in pieces) == response.reasoning_text
    assert "".join(p.content for p in pieces) == response.content
    assert not any("think>" in p.content for p in pieces)


def test_enable_thinking_reaches_the_template_per_call_and_in_config(fake_script):
    with model_with(fake_script, "qwen3", "ok") as model:
        assert "<think>" not in model.prepare(ASK).prompt
        assert model.prepare(ASK, enable_thinking=False).prompt.endswith("<think>\n\n</think>\n\n")
        assert model.prepare(ASK, chat_template_kwargs={"enable_thinking": False}).prompt.endswith("</think>\n\n")
    with model_with(fake_script, "qwen3", "ok", enable_thinking=False) as model:
        assert model.prepare(ASK).prompt.endswith("<think>\n\n</think>\n\n")


def test_tool_parser_can_be_named_and_unknown_names_are_config_errors(fake_script):
    reply = 'Action: get_weather\nAction Input: {"city": "Paris"}'
    with model_with(fake_script, "chatml", reply, tool_parser="default") as model:
        [response] = model.chat(ASK, tools=TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [("get_weather", {"city": "Paris"})]
    with pytest.raises(ConfigError, match="Unknown tool parser"):
        model_with(fake_script, "chatml", reply, tool_parser="hermez")
