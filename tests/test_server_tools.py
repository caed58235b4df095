"""Tool calls and reasoning in OpenAI's shape (``message.tool_calls``, ``delta.tool_calls``, ``reasoning_content``,
``finish_reason: tool_calls``), streamed and not.

The facade does not parse answers yet, so this ChatModel parses the fake engine's text with lmchat's own
parsers (think + hermes) into the ChatChunk fields the server maps, as the integrated facade will.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_server_support import ThreadServer, assert_schema, stream_post, write_script

from lmchat import ChatModel

parsing = pytest.importorskip("lmchat.parsing")

ANSWER = (
    '<think>Paris weather needed.</think><tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
)
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]


class ParsingChatModel(ChatModel):
    async def astream_chunks(self, prepared, request_id=None):
        parsers = {}
        async for chunk in super().astream_chunks(prepared, request_id):
            parser = parsers.setdefault(chunk.index, parsing.OutputParser("think", "hermes", prepared.tools))
            deltas = parser.feed(chunk.text) + (parser.finish() if chunk.finish_reason else [])
            yield dataclasses.replace(
                chunk, content="".join(d.content for d in deltas), reasoning="".join(d.reasoning for d in deltas),
                tool_calls=tuple(call for d in deltas for call in d.tool_calls),
            )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    script = write_script(tmp_path_factory.mktemp("tool-server"), name="fake-model", replies=[ANSWER])
    config = {"infer_backend": "fake", "model_name_or_path": script}
    with ThreadServer(config, chat_model_class=ParsingChatModel) as live:
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
