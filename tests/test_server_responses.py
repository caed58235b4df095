"""OpenAI's Responses API (stateless) through the official client's ``client.responses.create``, streamed and not,
over the fake engine rendered with qwen3's template (think reasoning, hermes tool calls): reasoning, message and
function_call output items, a tool-call round trip (function_call and function_call_output input items back into
the prompt), the stream's event order, and the 400s of what a stateless server cannot do."""

from __future__ import annotations

import json

import pytest
from test_server_support import ThreadServer, assert_error, engine_log, stream_post, write_script

CALL = '<think>Paris weather needed.</think><tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
FINAL = "<think>The tool said 21 C.</think>It is 21 C in Paris."
TOOLS = [{"type": "function", "name": "weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    replies = [{"text": FINAL, "match": "<tool_response>"}, {"text": "Hello there.", "match": "Say hello"},
               {"text": "one two three four five six", "match": "Count"}, {"text": CALL}]
    return write_script(tmp_path_factory.mktemp("responses"), name="fake-model", replies=replies)


@pytest.fixture(scope="module")
def server(script):
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script, "template": "qwen3"}) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


def test_plain_text_response(client, script):
    response = client.responses.create(model="fake-model", input="Say hello", instructions="Be brief.", store=False)
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello there."
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert response.instructions == "Be brief." and response.store is False
    prompt = engine_log(script)[-2]["prompt"]
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hello<|im_end|>")
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_function_call_round_trip(client, script):
    first = client.responses.create(model="fake-model", input="Weather in Paris?", tools=TOOLS)
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "Paris weather needed."
    assert call.type == "function_call" and call.name == "weather" and call.status == "completed"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id and call.id != call.call_id
    assert first.tools[0].name == "weather"

    history = [{"role": "user", "content": "Weather in Paris?"}, *first.output,  # the client sends its items back
               {"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}]
    second = client.responses.create(model="fake-model", input=history, tools=TOOLS)
    assert second.output_text == "It is 21 C in Paris."
    assert [item.type for item in second.output] == ["reasoning", "message"]
    prompt = engine_log(script)[-2]["prompt"]
    assert '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"celsius": 21}\n</tool_response>' in prompt


def test_streamed_events_come_in_order_and_fold_into_the_response(client):
    events = list(client.responses.create(model="fake-model", input="Weather in Paris?", tools=TOOLS, stream=True))
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", *["response.reasoning_text.delta"] * kinds.count(
            "response.reasoning_text.delta"), "response.reasoning_text.done", "response.output_item.done",
        "response.output_item.added", *["response.function_call_arguments.delta"] * kinds.count(
            "response.function_call_arguments.delta"), "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    arguments = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Paris"}
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "function_call"]
    assert final.output[1].arguments == arguments and final.output[1].name == "weather"
    assert final.output[0].id == events[2].item.id and final.output[1].id == events[-2].item.id
    unstreamed = client.responses.create(model="fake-model", input="Weather in Paris?", tools=TOOLS)
    assert unstreamed.output[1].arguments == arguments
    assert final.usage.output_tokens == unstreamed.usage.output_tokens


def test_streamed_text_with_the_stream_helper(client):
    with client.responses.stream(model="fake-model", input="Say hello") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello there."


def test_max_output_tokens_makes_an_incomplete_response(client):
    response = client.responses.create(model="fake-model", input="Count", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two three" and response.usage.output_tokens == 3


def test_what_a_stateless_server_refuses(server):
    with server.http() as http:
        for body, param in (({"input": "hi", "store": True}, "store"),
                            ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
                            ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
                            ({"input": "hi", "background": True}, "background"),
                            ({"input": "hi", "tools": [{"type": "web_search"}]}, None),
                            ({"input": []}, "input"),
                            ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
                            ({"input": "hi", "include": ["reasoning.encrypted_content"]}, "include")):
            error = assert_error(http.post("/v1/responses", json=body), 400)
            if param is not None:
                assert error["param"] == param, (body, error)
        error = assert_error(http.post("/v1/responses", json={"input": "hi", "text": {"format": {
            "type": "json_schema", "name": "x", "schema": {"type": "object"}}}}), 400, param="text.format")
        assert "cannot constrain" in error["message"]
        response, events = stream_post(http, "/v1/responses", {"input": "Say hello", "stream": True})
        assert response.headers["content-type"].startswith("text/event-stream")
        assert events[-1]["type"] == "response.completed" and "[DONE]" not in events


# --- the event stream's items, unit by unit (assertions ported from vLLM's responses/test_streaming_events.py) -----
def _events(*chunks):
    from lmchat.server.protocol_responses import ResponsesRequest
    from lmchat.server.serving.responses_api import ResponseEvents

    stream = ResponseEvents("m", ResponsesRequest(input="x"), "resp-1")
    texts = [event for chunk in chunks for event in stream.add(chunk)] + stream.finish()
    return [json.loads(text.split("data: ", 1)[1]) for text in texts], stream


def _chunk(reasoning="", content="", calls=()):
    from lmchat.chat.response import ChatChunk

    return ChatChunk(index=0, reasoning=reasoning, content=content, tool_calls=tuple(calls))


def _call(index, name=None, arguments=""):
    from lmchat.parsing.types import ToolCallDelta

    return ToolCallDelta(index=index, id=f"call_{index}" if name else None, name=name, arguments=arguments)


def test_one_chunk_with_reasoning_content_and_a_call_keeps_that_order():
    events, stream = _events(_chunk("r", "c", [_call(0, "f", "{}")]))
    kinds = [event["type"] for event in events]
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta") \
        < kinds.index("response.function_call_arguments.delta")
    assert [item.type for item in stream.items] == ["reasoning", "message", "function_call"]
    assert [event["output_index"] for event in events if event["type"] == "response.output_item.added"] == [0, 1, 2]


def test_parallel_calls_and_a_name_before_its_arguments():
    events, stream = _events(_chunk(calls=[_call(0, "f1", '{"a":1}'), _call(1, "f2", '{"b":2}')]))
    assert sum(event["type"] == "response.output_item.added" for event in events) == 2
    assert [event["delta"] for event in events if event["type"].endswith("arguments.delta")] == ['{"a":1}', '{"b":2}']
    events, stream = _events(_chunk(calls=[_call(0, "get_weather"), _call(0, arguments='{"city":"SF"}')]))
    assert [event["delta"] for event in events if event["type"].endswith("arguments.delta")] == ['{"city":"SF"}']
    assert stream.items[0].arguments == '{"city":"SF"}' and stream.items[0].call_id == "call_0"


def test_a_call_without_arguments_and_reasoning_then_content():
    events, _ = _events(_chunk(calls=[_call(0, "noop")]))
    assert [event["type"] for event in events] == [
        "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done"]
    events, stream = _events(_chunk("think"), _chunk("more", "answer"))
    kinds = [event["type"] for event in events]
    assert kinds.count("response.reasoning_text.delta") == 2 and "response.output_text.delta" in kinds
    assert stream.items[0].content[0].text == "thinkmore" and stream.items[1].content[0].text == "answer"


def test_input_items_map_to_chat_messages():
    from lmchat.errors import UnsupportedError
    from lmchat.server.protocol_responses import ResponsesRequest

    request = ResponsesRequest.model_validate({"instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is "},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": '{"x": 1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "one"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "t"}, {"type": "input_text", "text": "wo"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"}, "text": {"format": {"type": "json_object"}},
        "max_output_tokens": 7, "reasoning": {"effort": "low"}})
    assert request.chat_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "What is "},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "Let me look.", "reasoning_content": "hm", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"}]
    assert request.chat_tools() == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert request.chat_tool_choice() == {"type": "function", "function": {"name": "f"}}
    assert request.sampling_options() == {"max_new_tokens": 7, "response_format": {"type": "json_object"},
                                          "reasoning_effort": "low"}
    system_image = ResponsesRequest.model_validate({"input": [{"role": "system", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]})
    with pytest.raises(UnsupportedError) as error:
        system_image.chat_messages()
    assert error.value.param == "input[0].content[0]"
