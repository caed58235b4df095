"""The server over the scripted fake engine, driven by the official openai client and raw httpx: exact chunks,
finish reasons, usage, options, errors before and during a stream, and cancellation on disconnect."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re

import pytest
from test_server_support import (
    assert_error,
    assert_schema,
    engine_log,
    fake_server_fixtures,
    httpx,
    openai,
    stream_post,
    wait_for,
)

LONG_STORY = " ".join(f"w{i}" for i in range(300))
TEMPLATE = (
    "{% if tools %}<|tools|>{{ tools | map(attribute='function') | map(attribute='name') | join(',') }}<|end|>\n"
    "{% endif %}{% if enable_thinking is defined and not enable_thinking %}<|no-think|>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% for call in m.get('tool_calls') or [] %}[call {{ call.function.name }} {{ call.function.arguments | tojson }}]"
    "{% endfor %}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SCRIPT = {
    "name": "fake-model",
    "delay": 0.01,
    "context_length": 256,
    "unsupported": ["min_p"],
    "chat_template": TEMPLATE,
    "replies": [
        {"match": "greet", "text": "Hello there, friend!"},
        {"match": "explode", "text": "one two three four five six", "error_after": 2},
        {"match": "fail-at-once", "text": "never", "error_after": 0},
        {"match": "long story", "text": LONG_STORY},
        {"match": "stopper", "text": "Stop HERE please"},
    ],
}
GREET = [{"role": "user", "content": "greet me"}]
GREET_PROMPT = "<|user|>\ngreet me<|end|>\n<|assistant|>\n"


def fake_token_count(text: str) -> int:
    """The fake engine's tokens: whitespace-led words, and trailing whitespace on its own."""
    return len(re.findall(r"\s*\S+|\s+", text))


script, server, http, client = fake_server_fixtures("fake-server", SCRIPT)


def requests_matching(script: str, text: str) -> list[dict]:
    return [event for event in engine_log(script) if event["event"] == "request" and text in event["prompt"]]


# --- models, non-streamed and streamed chat ---------------------------------------------------------------
def test_models_list_the_served_name(client, http):
    assert [model.id for model in client.models.list()] == ["fake-model"]
    response = http.get("/v1/models")
    assert_schema("ListModelsResponse", response.json())
    assert_schema("Model", http.get("/v1/models/fake-model").json())
    assert_error(http.get("/v1/models/gpt-5"), 404, param="model", code="model_not_found")


def test_chat_answer_usage_and_refusal(client, http):
    response = http.post("/v1/chat/completions", json={"model": "fake-model", "messages": GREET})
    body = response.json()
    assert_schema("CreateChatCompletionResponse", body)
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello there, friend!", "refusal": None}
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    prompt_tokens = fake_token_count(GREET_PROMPT)
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 4, "total_tokens": prompt_tokens + 4,
                             "prompt_tokens_details": {"cached_tokens": 0}}
    assert body["model"] == "fake-model" and body["id"].startswith("chatcmpl-")

    completion = client.chat.completions.create(model="fake-model", messages=GREET)
    assert completion.choices[0].message.content == "Hello there, friend!"
    assert completion.usage.completion_tokens == 4


def test_stream_exact_chunks_usage_and_done(http):
    body = {"model": "fake-model", "messages": GREET, "stream": True, "stream_options": {"include_usage": True}}
    response, events = stream_post(http, "/v1/chat/completions", body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
    assert len({(chunk["id"], chunk["created"]) for chunk in chunks}) == 1
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": " there,"}, {"content": " friend!"}, {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert chunks[-1]["usage"]["total_tokens"] == chunks[-1]["usage"]["prompt_tokens"] + 4


def test_stream_equals_non_stream_sync_and_async(server, client):
    stream = client.chat.completions.create(model="fake-model", messages=GREET, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces) == "Hello there, friend!"

    async def run_async():
        async_client = server.async_openai()
        completion = await async_client.chat.completions.create(model="fake-model", messages=GREET)
        stream = await async_client.chat.completions.create(
            model="fake-model", messages=GREET, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        await async_client.close()
        return completion, chunks

    completion, chunks = asyncio.run(run_async())
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert completion.choices[0].message.content == streamed
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens == 4


def test_n_answers_streamed_and_not(client, http):
    completion = client.chat.completions.create(model="fake-model", messages=GREET, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert {c.message.content for c in completion.choices} == {"Hello there, friend!"}
    assert completion.usage.completion_tokens == 8

    _, events = stream_post(http, "/v1/chat/completions", {"messages": GREET, "n": 2, "stream": True})
    text, finish = {0: "", 1: ""}, {}
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)
        for choice in chunk["choices"]:
            text[choice["index"]] += choice["delta"].get("content", "")
            if choice["finish_reason"]:
                finish[choice["index"]] = choice["finish_reason"]
    assert text == {0: "Hello there, friend!", 1: "Hello there, friend!"} and finish == {0: "stop", 1: "stop"}


def test_max_tokens_ends_with_length(client, http):
    completion = client.chat.completions.create(model="fake-model", messages=GREET, max_tokens=2)
    assert completion.choices[0].message.content == "Hello there,"
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 2
    body = {"messages": GREET, "max_completion_tokens": 2, "stream": True, "stream_options": {"include_usage": True}}
    _, events = stream_post(http, "/v1/chat/completions", body)
    assert [c["choices"][0]["finish_reason"] for c in events[:-2]][-1] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 2


def test_stop_string_trims_the_answer(client):
    completion = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "stopper"}], stop=[" HERE"]
    )
    assert completion.choices[0].message.content == "Stop"
    assert completion.choices[0].finish_reason == "stop"


def test_options_reach_the_engine_with_openai_meaning(client, script):
    client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "greet options-1"}], presence_penalty=0.5,
        frequency_penalty=0.25, seed=7, logit_bias={"5": 10}, temperature=0.5, top_p=0.9, max_completion_tokens=9,
        user="alice", extra_body={"top_k": 3, "repetition_penalty": 1.1},
    )
    [request] = requests_matching(script, "options-1")
    params = request["params"]
    assert (params["presence_penalty"], params["frequency_penalty"], params["repetition_penalty"]) == (0.5, 0.25, 1.1)
    assert params["seed"] == 7 and params["logit_bias"] == {"5": 10.0} and params["max_new_tokens"] == 9
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.5, 0.9, 3)

    client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "greet options-2"}], presence_penalty=1.5
    )
    [request] = requests_matching(script, "options-2")
    assert request["params"]["presence_penalty"] == 1.5 and request["params"]["repetition_penalty"] == 1.0


def test_logprobs_in_openai_shape(client, http):
    completion = client.chat.completions.create(model="fake-model", messages=GREET, logprobs=True, top_logprobs=0)
    tokens = completion.choices[0].logprobs.content
    assert [t.token for t in tokens] == ["Hello", " there,", " friend!"]
    assert tokens[0].bytes == list(b"Hello") and tokens[0].top_logprobs == []
    response = http.post("/v1/chat/completions", json={"messages": GREET, "logprobs": True})
    assert_schema("CreateChatCompletionResponse", response.json())
    _, events = stream_post(http, "/v1/chat/completions", {"messages": GREET, "logprobs": True, "stream": True})
    streamed = [t["token"] for c in events[:-1] for t in (c["choices"][0]["logprobs"] or {}).get("content") or []]
    assert streamed == ["Hello", " there,", " friend!"]
    for chunk in events[:-1]:
        assert_schema("CreateChatCompletionStreamResponse", chunk)


def test_roles_in_any_order_with_tool_history(client, script):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "greet"}, {"type": "text", "text": "history-1"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "thanks"},
    ]
    completion = client.chat.completions.create(model="fake-model", messages=messages)
    assert completion.choices[0].message.content == "Hello there, friend!"
    [request] = requests_matching(script, "history-1")
    prompt = request["prompt"]
    assert prompt.index("<|developer|>") < prompt.index("<|tool|>\nsunny") < prompt.index("<|system|>")
    assert 'greet\nhistory-1' in prompt and '[call weather {"city": "Paris"}]' in prompt


def test_tools_reach_the_template_unless_tool_choice_none(client, http, script):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    for choice, marker in (("auto", "tools-auto"), (None, "tools-default"), ("none", "tools-none")):
        extra = {} if choice is None else {"tool_choice": choice}
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": f"greet {marker}"}], tools=tools, **extra
        )
        [request] = requests_matching(script, marker)
        assert ("<|tools|>weather" in request["prompt"]) == (choice != "none")
    for choice in ("required", {"type": "function", "function": {"name": "weather"}}):
        response = http.post("/v1/chat/completions", json={"messages": GREET, "tools": tools, "tool_choice": choice})
        assert "cannot constrain its output" in assert_error(response, 400, param="tool_choice")["message"]


def test_chat_template_kwargs_reach_the_template(http, script):
    body = {"messages": [{"role": "user", "content": "greet kwargs-1"}],
            "chat_template_kwargs": {"enable_thinking": False}}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    [request] = requests_matching(script, "kwargs-1")
    assert request["prompt"].startswith("<|no-think|>")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"foo": 1}, "foo"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"min_p": 0.1}, "min_p"),
        ({"parallel_tool_calls": "maybe"}, "parallel_tool_calls"),
        ({"guided_regex": "[a-z]+"}, "guided_regex"),
        ({"structured_outputs": {"choice": ["a"], "regex": "a"}}, "structured_outputs"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"n": 0}, "n"),
        ({"temperature": 3}, "temperature"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"stop": [""]}, "stop"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]},
         "messages"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(http, extra, param):
    body = {"model": "fake-model", "messages": GREET, **extra}
    assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)


def test_malformed_bodies(http):
    headers = {"Content-Type": "application/json"}
    assert "JSON" in assert_error(http.post("/v1/chat/completions", content=b"{nope", headers=headers), 400)["message"]
    assert_error(http.post("/v1/chat/completions", content=b"[1, 2]", headers=headers), 400)
    empty = http.post("/v1/chat/completions", content=b"", headers=headers)
    assert "JSON object" in assert_error(empty, 400)["message"]
    assert_error(http.post("/v1/chat/completions", content=b"messages=x"), 400)
    error = assert_error(http.post("/v1/chat/completions", json={"model": "fake-model"}), 400, param="messages")
    assert "Missing required parameter" in error["message"]
    assert_error(http.get("/v1/nowhere"), 404, code="not_found")
    assert_error(http.get("/v1/chat/completions"), 405)


def test_unknown_model_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5", messages=GREET)
    assert caught.value.code == "model_not_found" and "fake-model" in caught.value.message


def test_prompt_longer_than_the_context_is_a_400(http):
    body = {"messages": [{"role": "user", "content": " ".join(["word"] * 300)}]}
    error = assert_error(http.post("/v1/chat/completions", json=body), 400, code="context_length_exceeded")
    assert "256" in error["message"] and "tokens" in error["message"]


def test_engine_error_before_the_first_token_is_an_http_error(http):
    body = {"messages": [{"role": "user", "content": "fail-at-once"}]}
    assert_error(http.post("/v1/chat/completions", json=body), 500)
    response, _ = stream_post(http, "/v1/chat/completions", {**body, "stream": True})
    assert response.status_code == 500 and not response.headers["content-type"].startswith("text/event-stream")


def test_engine_error_mid_stream_is_an_event_then_done(client, http):
    body = {"messages": [{"role": "user", "content": "explode"}], "stream": True}
    response, events = stream_post(http, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert [c["choices"][0]["delta"].get("content") for c in events[1:3]] == ["one", " two"]
    assert "mid-answer" in events[-2]["error"]["message"] and events[-1] == "[DONE]"
    assert_schema("ErrorResponse", events[-2])
    assert "Traceback" not in json.dumps(events)

    stream = client.chat.completions.create(model="fake-model", messages=body["messages"], stream=True)
    with pytest.raises(openai.APIError, match="mid-answer"):
        for _ in stream:
            pass


def _aborted(script: str, marker: str) -> dict | None:
    [request] = requests_matching(script, marker)
    ends = [e for e in engine_log(script) if e["request_id"] == request["request_id"] and e["event"] != "request"]
    return ends[0] if ends else None


def test_disconnect_mid_stream_aborts_the_engine_request(server, script):
    body = {"messages": [{"role": "user", "content": "long story disconnect-1"}], "stream": True}
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]  # three events: the role, then "w0", " w1"
        assert '"content":" w1"' in received[4]
    end = wait_for(lambda: _aborted(script, "disconnect-1"))
    assert end["event"] == "abort" and end["tokens"] < 100
    count = len(engine_log(script))
    asyncio.run(asyncio.sleep(0.3))
    assert len(engine_log(script)) == count  # it stopped producing: nothing more was logged


def test_disconnect_before_a_non_streamed_answer_aborts_it(server, script):
    body = {"messages": [{"role": "user", "content": "long story disconnect-2"}]}
    with server.http(timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body)
    end = wait_for(lambda: _aborted(script, "disconnect-2"))
    assert end["event"] == "abort" and end["tokens"] < 100


def test_request_id_is_echoed_or_made(http):
    response = http.post("/v1/chat/completions", json={"messages": GREET}, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    made = http.get("/v1/models").headers["x-request-id"]
    assert len(made) == 32 and made != http.get("/v1/models").headers["x-request-id"]
    assert http.get("/v1/nowhere", headers={"x-request-id": "e-1"}).headers["x-request-id"] == "e-1"


# --- completions, tokenize, health, metrics ---------------------------------------------------------------
def test_completions_take_a_raw_prompt(client, http, script):
    completion = client.completions.create(model="fake-model", prompt="greet raw-1")
    assert completion.choices[0].text == "Hello there, friend!" and completion.choices[0].finish_reason == "stop"
    [request] = requests_matching(script, "raw-1")
    assert request["prompt"] == "greet raw-1"
    assert_schema("CreateCompletionResponse", http.post("/v1/completions", json={"prompt": "greet"}).json())

    body = {"prompt": "greet", "stream": True, "max_tokens": 2, "logprobs": 0,
            "stream_options": {"include_usage": True}}
    _, events = stream_post(http, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        assert_schema("CreateCompletionResponse", chunk, stream_completion=True)
    assert "".join(c["choices"][0]["text"] for c in events[:-2]) == "Hello there,"
    assert events[-3]["choices"][0]["finish_reason"] == "length" and events[-2]["usage"]["completion_tokens"] == 2
    assert events[1]["choices"][0]["logprobs"]["tokens"] == [" there,"]


def test_completions_reject_what_they_cannot_honour(http):
    assert_error(http.post("/v1/completions", json={"prompt": []}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={"prompt": "a", "suffix": "b"}), 400, param="suffix")
    assert_error(http.post("/v1/completions", json={"prompt": "a", "best_of": 3}), 400, param="best_of")
    assert_error(http.post("/v1/completions", json={"prompt": "a", "min_p": 0.5}), 400, param="min_p")
    long_prompt = {"prompt": " ".join(["word"] * 300)}
    assert_error(http.post("/v1/completions", json=long_prompt), 400, param="prompt", code="context_length_exceeded")


def test_tokenize_and_detokenize(http):
    tokens = http.post("/tokenize", json={"prompt": "hello wide world"}).json()
    assert tokens["count"] == 3 and tokens["max_model_len"] == 256
    assert http.post("/detokenize", json={"tokens": tokens["tokens"]}).json() == {
        "prompt": "hello wide world", "content": "hello wide world"}  # vLLM's name and llama.cpp's
    chat = http.post("/tokenize", json={"messages": GREET}).json()
    assert chat["count"] == fake_token_count(GREET_PROMPT)
    assert_error(http.post("/detokenize", json={"tokens": [10**9]}), 400, param="tokens")
    assert http.post("/tokenize", json={"prompt": "x", "add_special_tokens": True}).json()["count"] == 1  # no BOS
    assert_error(http.post("/tokenize", json={"prompt": "x", "continue_final_message": True}), 400,
                 param="continue_final_message")
    assert_error(http.post("/tokenize", json={}), 400, param="prompt")


def test_health_and_metrics(http):
    assert http.get("/health").json() == {"status": "ok"}
    http.post("/v1/chat/completions", json={"messages": GREET})
    text = http.get("/metrics").text
    assert 'lmchat_requests_total{route="/v1/chat/completions",status="200"}' in text
    for name in ("lmchat_time_to_first_token_seconds_count", "lmchat_generation_tokens_total",
                 "lmchat_prompt_tokens_total", "lmchat_requests_running", "lmchat_requests_waiting"):
        assert name in text


def test_scoring_a_chat_model_is_a_400(http):
    error = assert_error(http.post("/v1/score/evaluation", json={"messages": ["a b"]}), 400)
    assert "reward" in error["message"]


def test_prompts_stay_out_of_the_logs_unless_asked(server, http, caplog):
    caplog.set_level(logging.INFO, logger="lmchat")
    http.post("/v1/completions", json={"prompt": "greet secret-words-1"}, headers={"x-request-id": "log-1"})
    assert "secret-words-1" not in caplog.text and "completion: 2 prompt tokens" in caplog.text
    state = server.app.state.lmchat
    state.settings = dataclasses.replace(state.settings, log_prompts=True)
    try:
        media = "data:image/png;base64," + "A" * 400
        http.post("/v1/completions", json={"prompt": f"greet secret-words-2 {media}"})
    finally:
        state.settings = dataclasses.replace(state.settings, log_prompts=False)
    assert "secret-words-2" in caplog.text and "<data url, 422 chars>" in caplog.text and "AAAA" not in caplog.text


def test_unexpected_errors_are_500s_without_details(server, http, monkeypatch):
    def broken(body):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(server.app.state.serving_tokenize, "tokenize", broken)
    response = http.post("/tokenize", json={"prompt": "x"}, headers={"x-request-id": "boom-1"})
    error = assert_error(response, 500)
    assert "secret internals" not in response.text and "boom-1" in error["message"]
    assert response.headers["x-request-id"] == "boom-1"


@pytest.mark.parametrize("text", ["Hello", ' "quoted" \\ back', "naïve 東京 🚀", "\x00\x01\n\t\u2028", "\x00lmchat\x00",
                                  "</script>", "data: [DONE]\n\n"])
def test_a_content_delta_event_from_the_template_equals_the_models_own(text):
    """The streamed chat's fast path (responses.EventTemplate) writes the bytes the protocol models give."""
    from lmchat.server.protocol import ChatCompletionStreamChoice, ChatCompletionStreamResponse, DeltaMessage
    from lmchat.server.responses import EventTemplate, sse_event

    def event(value: str, index: int = 2) -> str:
        return sse_event(ChatCompletionStreamResponse(
            id="chatcmpl-1", created=7, model="m", system_fingerprint="fp",
            choices=[ChatCompletionStreamChoice(index=index, delta=DeltaMessage(content=value))]))

    template = EventTemplate(event)
    assert template(text) == event(text)
    assert json.loads(template(text)[len("data: "):])["choices"][0]["delta"] == {"content": text}
    with pytest.raises(ValueError, match="exactly once"):
        EventTemplate(lambda value: event(value) + event(value))
