"""Bad input is a 400 naming the parameter, on every route (real server, fake engine): typed messages, content
parts and tools, OpenAI's strict typing and ranges, text no tokenizer takes, nesting, seeds, logit_bias ids,
chat_template_kwargs; API keys compared as bytes; the published OpenAPI document."""

from __future__ import annotations

import json

import pytest
from test_server_support import ThreadServer, assert_error, httpx, stream_post, write_script

TEMPLATE = (
    "{% if tools %}<|tools|>{{ tools | tojson }}<|end|>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
USER = [{"role": "user", "content": "hi"}]


def _deep(levels: int) -> dict:
    value: dict = {"type": "string"}
    for _ in range(levels):
        value = {"type": "object", "properties": {"x": value}}
    return value


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    script = write_script(tmp_path_factory.mktemp("validation"), name="fake-model", chat_template=TEMPLATE)
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, api_keys=("ключ-😀", "plain")) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with server.http(headers={"Authorization": "Bearer plain"}) as client:
        yield client


def _raw(http: httpx.Client, path: str, body: str) -> httpx.Response:
    """``body`` sent as it is (JSON text with escapes such as \\ud800 or Infinity that json.dumps would not write)."""
    return http.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": {"a": 1}}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": ["text"]}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]},
     "messages[0].content[0].x"),
    ({"messages": [{"role": {}, "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "sunny", "tool_call_id": 5}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[0].tool_calls[0].id"),
    ({"messages": USER, "seed": 2**64}, "seed"),
    ({"messages": USER, "seed": -(2**63) - 1}, "seed"),
    ({"messages": USER, "seed": 2**63 - 2, "n": 3}, "seed"),
    ({"messages": USER, "logit_bias": {"-1": 100}}, "logit_bias"),
    ({"messages": USER, "logit_bias": {"5": 101}}, "logit_bias.5"),
    ({"messages": USER, "chat_template_kwargs": {"tools": []}}, "chat_template_kwargs"),
    ({"messages": USER, "chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
    ({"messages": USER, "chat_template_kwargs": {"special_tokens": {}}}, "chat_template_kwargs"),
    ({"messages": USER, "chat_template_kwargs": {"add_generation_prompt": False}}, "chat_template_kwargs"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": _deep(300)}}]},
     "tools[0].function.parameters"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"messages": USER, "max_tokens": "8"}, "max_tokens"),
    ({"messages": USER, "max_tokens": 8.0}, "max_tokens"),
    ({"messages": USER, "temperature": True}, "temperature"),
    ({"messages": USER, "temperature": "0.5"}, "temperature"),
    ({"messages": USER, "stream": "yes"}, "stream"),
    ({"messages": USER, "n": "2"}, "n"),
    ({"messages": USER, "stop": 5}, "stop"),
    ({"messages": USER, "repetition_penalty": 9e-38}, "repetition_penalty"),
    ({"messages": USER, "top_p": 0}, "top_p"),
    ({"messages": USER, "stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
])
def test_each_bad_chat_request_is_a_400_naming_its_parameter(http, body, param):
    error = assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)
    assert param.split(".")[0].split("[")[0] in error["message"] or "chat_template_kwargs" in error["message"]
    if param != "stream":
        response, _ = stream_post(http, "/v1/chat/completions", {**body, "stream": True})
        assert response.status_code == 400  # refused before the stream starts


def test_json_nested_past_the_parser_is_a_400(http):
    body = '{"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"a": ' + "[" * 5000 + \
        "]" * 5000 + "}}"
    assert_error(_raw(http, "/v1/chat/completions", body), 400)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a\\ud800"}]}', "messages[0].content"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
     "messages[0].content[0].text"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "stop": ["\\ud800"]}', "stop[0]"),
    ("/v1/completions", '{"prompt": "a\\ud800"}', "prompt"),
    ("/tokenize", '{"prompt": "a\\ud800"}', "prompt"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "repetition_penalty": Infinity}',
     "repetition_penalty"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "temperature"),
    ("/v1/completions", '{"prompt": "x", "top_p": -Infinity}', "top_p"),
])
def test_text_that_is_not_unicode_and_numbers_that_are_not_finite(http, path, body, param):
    assert_error(_raw(http, path, body), 400, param=param)


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/tokenize", {"messages": [{"role": {}, "content": "x"}]}, "messages[0].role"),
    ("/tokenize", {"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ("/tokenize", {"messages": USER, "chat_template_kwargs": {"tools": 1}}, "chat_template_kwargs"),
    ("/tokenize", {"messages": [{"role": "user", "content": [{"type": []}]}]}, "messages[0].content[0].type"),
    ("/v1/score/conversations", {"conversations": [[{"role": {}, "content": "x"}]]}, "conversations[0][0].role"),
    ("/v1/score/conversations", {"conversations": [[{"role": ["user"], "content": "x"}]]},
     "conversations[0][0].role"),
    ("/v1/completions", {"prompt": "x", "seed": 2**64}, "seed"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "8"}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "logprobs": True}, "logprobs"),
    ("/detokenize", {"tokens": ["1"]}, "tokens[0]"),
])
def test_the_other_routes_check_the_same_way(http, path, body, param):
    assert_error(http.post(path, json=body), 400, param=param)


def test_typed_messages_still_take_every_form_lmchat_reads(http):
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"role": "assistant", "content": None, "reasoning_content": "r",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "done"}]},
        {"role": "function", "content": json.dumps([{"name": "g", "arguments": {}}])},
        {"role": "user", "content": "go on", "name": "ann"},
    ]
    response = http.post("/v1/chat/completions", json={"messages": messages, "seed": 2**63 - 1, "temperature": 1,
                                                        "logit_bias": {"3": 5}})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "You said: go on"


def test_a_non_ascii_api_key_matches_as_utf8_and_latin1_bytes(server):
    key = "ключ-😀"
    with httpx.Client(base_url=server.base_url) as client:
        ok = client.get("/v1/models", headers={"Authorization": f"Bearer {key}".encode()})
        assert ok.status_code == 200
        assert_error(client.get("/v1/models", headers={"Authorization": "Bearer ключ-😁".encode()}), 401)
        assert_error(client.get("/v1/models", headers={"Authorization": b"Bearer \xff\xfe"}), 401)
    from lmchat.server.auth import is_valid_key

    assert is_valid_key("Bearer café".encode("latin-1"), ["café"]) and is_valid_key(b"bearer  k ", ["k"])
    assert not is_valid_key(b"Basic k", ["k"]) and not is_valid_key(b"Bearer ", ["k"])


def test_the_openapi_document_lists_the_real_responses(http):
    document = http.get("/openapi.json").json()
    assert "422" not in json.dumps(document["paths"]) and "HTTPValidationError" not in json.dumps(document)
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "401", "404", "408", "413", "429", "500", "503"} <= set(chat["responses"])
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "Retry-After" in chat["responses"]["429"]["headers"]
    assert chat["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    schemas = document["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]["properties"]
    assert request["messages"]["items"]["discriminator"]["propertyName"] == "role"
    assert request["tools"]["anyOf"][0]["items"]["$ref"].endswith("/ChatCompletionTool")
    assert schemas["UserMessage"]["properties"]["content"]["anyOf"][1]["items"]["discriminator"]["propertyName"] \
        == "type"
    assert "ChatCompletionStreamResponse" in schemas
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert "422" not in operation["responses"], path
