"""Tool calls and reasoning in OpenAI's shape (``message.tool_calls``, ``delta.tool_calls``, ``reasoning_content``,
``finish_reason: tool_calls``), streamed and not. Streamed calls come as OpenAI's do: a first piece with the id,
``type`` and ``function.name``, then pieces that carry only ``function.arguments`` fragments.

The qwen3 template names the think reasoning parser and the hermes tool parser; the facade parses the fake
engine's text with them, and the server maps the parsed chunk fields.
"""

from __future__ import annotations

import json

import pytest
from test_server_support import ThreadServer, assert_schema, stream_post, write_script


ANSWER = (
    '<think>Paris weather needed.</think><tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
)
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]


def fake_server(tmp_path_factory, folder: str, answer: str) -> ThreadServer:
    """A server over the fake engine that answers ``answer``, rendered with qwen3's template (hermes tool calls)."""
    script = write_script(tmp_path_factory.mktemp(folder), name="fake-model", replies=[answer])
    return ThreadServer({"infer_backend": "fake", "model_name_or_path": script, "template": "qwen3"})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with fake_server(tmp_path_factory, "tool-server", ANSWER) as live:
        yield live


def test_tool_calls_and_reasoning_in_one_piece(server):
    with server.http() as http:
        body = http.post("/v1/chat/completions", json={"messages": MESSAGES, "tools": TOOLS}).json()
    assert_schema("CreateChatCompletionResponse", body)
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["refusal"] is None
    assert message["reasoning_content"] == "Paris weather needed."
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_tool_calls_streamed_fold_into_the_same_call(server):
    with server.http() as http:
        _, events = stream_post(http, "/v1/chat/completions", {"messages": MESSAGES, "tools": TOOLS, "stream": True})
    assert events[-1] == "[DONE]"
    calls, reasoning, finish = {}, "", None
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
        choice = chunk["choices"][0]
        reasoning += choice["delta"].get("reasoning_content", "")
        finish = choice["finish_reason"] or finish
        for piece in choice["delta"].get("tool_calls", []):
            call = calls.setdefault(piece["index"], {"id": None, "name": "", "arguments": ""})
            call["id"] = piece.get("id") or call["id"]
            call["name"] += piece.get("function", {}).get("name") or ""
            call["arguments"] += piece.get("function", {}).get("arguments") or ""
    assert finish == "tool_calls" and reasoning == "Paris weather needed."
    assert list(calls) == [0] and calls[0]["name"] == "weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}


def test_openai_client_reads_the_tool_calls(server):
    completion = server.openai().chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS)
    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "weather" and completion.choices[0].finish_reason == "tool_calls"
    stream = server.openai().chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS, stream=True)
    calls = [call for chunk in stream for call in (chunk.choices[0].delta.tool_calls or [])]
    names = [call.function.name for call in calls if call.function.name]
    assert names == ["weather"]


EMAIL_ARGUMENTS = {"to": "team@example.com", "body": "The quarterly report is attached, please review it by Friday."}
EMAIL_ANSWER = (
    '<think>An email is needed.</think><tool_call>\n{"name": "send_email", "arguments": '
    + json.dumps(EMAIL_ARGUMENTS) + "}\n</tool_call>"
)
EMAIL_TOOLS = [{"type": "function", "function": {"name": "send_email", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def email_server(tmp_path_factory):
    # the fake engine sends the answer one whitespace-led word at a time, as separate stream events
    with fake_server(tmp_path_factory, "tool-stream", EMAIL_ANSWER) as live:
        yield live


def test_openai_client_receives_argument_fragments(email_server):
    stream = email_server.openai().chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "email the team"}], tools=EMAIL_TOOLS, stream=True
    )
    pieces, content, finish = [], "", None
    for chunk in stream:
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        pieces += choice.delta.tool_calls or []
        finish = choice.finish_reason or finish
    first, *later = pieces
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "send_email"
    assert len(later) >= 2  # the arguments arrive in fragments, not whole
    for piece in later:
        assert piece.index == 0 and piece.id is None and piece.type is None and piece.function.name is None
        assert piece.function.arguments
    arguments = first.function.arguments + "".join(piece.function.arguments for piece in later)
    assert json.loads(arguments) == EMAIL_ARGUMENTS and arguments == json.dumps(EMAIL_ARGUMENTS)
    assert finish == "tool_calls" and content == ""


def test_raw_stream_sends_argument_fragments_in_openai_shape(email_server):
    with email_server.http() as http:
        _, events = stream_post(http, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "email the team"}], "tools": EMAIL_TOOLS, "stream": True})
    pieces = []
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
        pieces += chunk["choices"][0]["delta"].get("tool_calls", [])
    assert set(pieces[0]) == {"index", "id", "type", "function"} and pieces[0]["function"]["name"] == "send_email"
    assert len(pieces) >= 3 and all(piece == {"index": 0, "function": {"arguments": piece["function"]["arguments"]}}
                                    for piece in pieces[1:])
