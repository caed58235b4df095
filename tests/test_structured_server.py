"""Structured output through a real ``lmchat serve`` (subprocess, loopback) on the tiny random-weight model: the
official ``openai`` client (response_format, parse, tool_choice required/named, streamed and not), vLLM's and
llama.cpp's fields, the 400s, and LangChain's ``with_structured_output`` with all three methods."""

from __future__ import annotations

import json
import re

import pytest
from test_server_support import ProcessServer, assert_error, assert_schema, stream_post

pytest.importorskip("torch")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")

ASK = [{"role": "user", "content": "Fill in the form."}]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150}},
          "required": ["name", "age"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["C", "F"]}},
        "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}}, "required": ["zone"],
        "additionalProperties": False}}},
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


class Person(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=150)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    live = ProcessServer("--model_name_or_path", str(tiny_model_dir), "--served-model-name", "tiny",
                         "--max_new_tokens", "160")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(server):
    httpx = pytest.importorskip("httpx")
    with httpx.Client(base_url=server.base_url, timeout=300) as http:
        yield http


def test_response_format_json_schema_strict_streamed_and_not(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    completion = client.chat.completions.create(model="tiny", messages=ASK, response_format=response_format,
                                                temperature=1.0, seed=11)
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), PERSON)
    stream = client.chat.completions.create(model="tiny", messages=ASK, response_format=response_format,
                                            temperature=1.0, seed=11, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == choice.message.content


def test_openai_parse_gives_the_pydantic_object(client):
    completion = client.chat.completions.parse(model="tiny", messages=ASK, response_format=Person, temperature=0)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and 0 <= person.age <= 150


def test_json_object_and_the_vllm_and_llamacpp_fields(client, http, tiny_model_dir):
    # (inside an unbounded string the random model never picks the closing quote: nudged towards '"' and '}', it
    # ends its object; the bias changes which valid answer comes out, never whether it is valid)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bias = {str(tokenizer.convert_tokens_to_ids(text)): weight for text, weight in (('"', 10), ("}", 4))}
    loose = client.chat.completions.create(model="tiny", messages=ASK, response_format={"type": "json_object"},
                                           temperature=0, logit_bias=bias).choices[0]
    assert loose.finish_reason == "stop" and isinstance(json.loads(loose.message.content), dict), loose
    extras = [
        ({"structured_outputs": {"choice": ["red", "green", "blue"]}}, lambda t: t in ("red", "green", "blue")),
        ({"guided_regex": r"\d{4}-\d{2}", "guided_decoding_backend": "auto"}, lambda t: re.fullmatch(r"\d{4}-\d{2}", t)),
        ({"guided_json": PERSON}, lambda t: jsonschema.validate(json.loads(t), PERSON) is None),
        ({"guided_grammar": 'root ::= pair pair pair\npair ::= "ab" | "cd"'},
         lambda t: re.fullmatch("(ab|cd){3}", t)),
        ({"grammar": 'root ::= "x" [0-9] [0-9]'}, lambda t: re.fullmatch(r"x\d\d", t)),
        ({"json_schema": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
         lambda t: len(json.loads(t)) <= 3),
    ]
    for extra, matches in extras:
        body = {"model": "tiny", "messages": ASK, "temperature": 0, **extra}
        answer = http.post("/v1/chat/completions", json=body).json()
        assert_schema("CreateChatCompletionResponse", answer)
        text = answer["choices"][0]["message"]["content"]
        assert answer["choices"][0]["finish_reason"] == "stop" and matches(text), (extra, text)
    completion = client.completions.create(model="tiny", prompt="Code:", max_tokens=20,
                                           extra_body={"guided_regex": "[A-Z]{3}"})
    assert re.fullmatch("[A-Z]{3}", completion.choices[0].text)


def test_tool_choice_required_and_named_through_the_openai_client(client):
    required = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                              temperature=1.0, seed=4)
    [choice] = required.choices
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    one = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                         parallel_tool_calls=False, temperature=0)
    assert len(one.choices[0].message.tool_calls) == 1
    named = {"type": "function", "function": {"name": "get_weather"}}
    whole = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=named, temperature=0)
    [call] = whole.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_weather"])
    stream = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice=named,
                                            temperature=0, stream=True)
    names, arguments, finish = [], "", None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or ():
            names += [delta.function.name] if delta.function.name else []
            arguments += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (names, arguments, finish) == (["get_weather"], call.function.arguments, "tool_calls")


def test_what_cannot_be_enforced_is_a_400_naming_it(http):
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}}}},
         "response_format", "uniqueItems"),
        ({"guided_regex": "(?=x)y"}, "guided_regex", "look-around"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
        ({"guided_choice": ["a"], "response_format": {"type": "json_object"}}, "guided_choice", "two"),
        ({"guided_regex": "a+", "stop": ["b"]}, "stop", "stop strings"),
    ]
    for extra, param, part in cases:
        error = assert_error(http.post("/v1/chat/completions", json={"messages": ASK, **extra}), 400, param=param)
        assert part in error["message"], error
    response, events = stream_post(http, "/v1/chat/completions", {"messages": ASK, "stream": True,
                                                                   "guided_json": {"type": "object", "not": {}}})
    assert response.status_code == 400  # refused before the stream starts


def test_langchain_with_structured_output_all_three_methods(server, tiny_model_dir):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(model="tiny", base_url=f"{server.base_url}/v1", api_key="unused",
                                      temperature=0, max_retries=0)
    for method in ("json_schema", "function_calling"):
        person = llm.with_structured_output(Person, method=method).invoke("Describe someone.")
        assert isinstance(person, Person), method
    raw = llm.with_structured_output(Person, method="function_calling", include_raw=True).invoke("Describe someone.")
    assert raw["parsing_error"] is None and raw["raw"].tool_calls[0]["name"] == "Person"
    loose = {"title": "Anything", "description": "Any JSON object.", "type": "object"}
    # (any JSON object: the random model is nudged to close its strings and the object, as in the test above)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bias = {tokenizer.convert_tokens_to_ids(text): weight for text, weight in (('"', 10), ("}", 4))}
    nudged = langchain_openai.ChatOpenAI(model="tiny", base_url=f"{server.base_url}/v1", api_key="unused",
                                         temperature=0, max_retries=0, logit_bias=bias)
    value = nudged.with_structured_output(loose, method="json_mode").invoke("Reply in JSON.")
    assert isinstance(value, dict)
    streamed = list(llm.with_structured_output(Person, method="json_schema").stream("Describe someone."))
    assert isinstance(streamed[-1], Person)
