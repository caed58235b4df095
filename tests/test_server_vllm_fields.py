"""vLLM's extra request fields, OpenAI's bookkeeping fields, batched and token-id completion prompts, echo, and
--accept-any-model, over the scripted fake engine on a real loopback server (the official openai client where it
applies). Ports of assertions of vLLM's tests/entrypoints/openai (test_completion, test_chat, test_chat_echo,
test_tokenization, test_return_tokens_as_ids' neighbours) against lmchat's server."""

from __future__ import annotations

import re

from test_server_support import (
    ThreadServer,
    assert_error,
    assert_schema,
    fake_server_fixtures,
    last_request,
    stream_post,
)

SCRIPT = {
    "name": "fake-model",
    "context_length": 256,
    "replies": [
        {"match": "stopper", "text": "one two STOP three"},
        {"match": "long", "text": " ".join(f"w{i}" for i in range(40))},
    ],
}
USER = [{"role": "user", "content": "hello"}]


script, server, http, client = fake_server_fixtures("vllm-fields", SCRIPT)



# --- sampling extras reach the engine -------------------------------------------------------------------------
def test_sampling_extras_reach_the_engine(script, client):
    client.chat.completions.create(model="fake-model", messages=USER, extra_body={
        "ignore_eos": True, "stop_token_ids": [7, 9], "skip_special_tokens": False,
        "spaces_between_special_tokens": True, "priority": 0,
    })
    params = last_request(script)["params"]
    assert params["ignore_eos"] is True and params["skip_special_tokens"] is False
    assert {7, 9} <= set(params["stop_token_ids"])
    client.completions.create(model="fake-model", prompt="long", max_tokens=2, extra_body={"ignore_eos": True})
    assert last_request(script)["params"]["ignore_eos"] is True


def test_include_stop_str_in_output(client):
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "stopper"}], "stop": ["STOP"]}
    plain = client.chat.completions.create(**body)
    assert plain.choices[0].message.content == "one two "
    kept = client.chat.completions.create(**body, extra_body={"include_stop_str_in_output": True})
    assert (kept.choices[0].message.content, kept.choices[0].finish_reason) == ("one two STOP", "stop")
    stream = client.chat.completions.create(**body, stream=True, extra_body={"include_stop_str_in_output": True})
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "one two STOP"
    text = client.completions.create(model="fake-model", prompt="stopper", stop=["STOP"],
                                     extra_body={"include_stop_str_in_output": True})
    assert text.choices[0].text == "one two STOP"


def test_fields_an_engine_or_lmchat_cannot_honour_are_400_with_a_reason(http):
    def post(**extra):
        return http.post("/v1/chat/completions", json={"messages": USER, **extra})

    # the scripted engine cannot change which tokens come (the real engines do: test_server_api_fields_models.py)
    for name, value in (("min_tokens", 5), ("bad_words", ["x"]), ("allowed_token_ids", [1])):
        assert "fake engine" in assert_error(post(**{name: value}), 400, param=name)["message"]
    assert "first come" in assert_error(post(priority=1), 400, param="priority")["message"]
    error = assert_error(post(spaces_between_special_tokens=False), 400, param="spaces_between_special_tokens")
    assert "not supported" in error["message"]
    assert "ignores documents" in assert_error(post(documents=[{"text": "d"}]), 400, param="documents")["message"]
    assert_error(post(stop_token_ids=[-1]), 400, param="stop_token_ids")
    assert_error(post(request_id="bad id with spaces"), 400, param="request_id")
    assert_error(post(top_logprobs=-2, logprobs=True), 400, param="top_logprobs")
    assert_error(post(min_tokenz=1), 400, param="min_tokenz")  # unknown fields stay rejected


# --- chat-template fields -----------------------------------------------------------------------------------
def test_add_generation_prompt_and_continue_final_message(script, http):
    answer = [{"role": "user", "content": "Tell a story"}, {"role": "assistant", "content": "Once upon"}]
    ok = http.post("/v1/chat/completions", json={"messages": answer, "continue_final_message": True,
                                                 "add_generation_prompt": False})
    assert ok.status_code == 200, ok.text
    assert last_request(script)["prompt"] == "<|user|>\nTell a story<|end|>\n<|assistant|>\nOnce upon"
    http.post("/v1/chat/completions", json={"messages": answer, "continue_final_message": True})
    assert last_request(script)["prompt"].endswith("Once upon")  # the generation prompt goes off by itself
    http.post("/v1/chat/completions", json={"messages": USER, "add_generation_prompt": False})
    assert last_request(script)["prompt"] == "<|user|>\nhello<|end|>\n"
    both = {"messages": answer, "continue_final_message": True, "add_generation_prompt": True}
    assert_error(http.post("/v1/chat/completions", json=both), 400, param="continue_final_message")
    assert_error(http.post("/v1/chat/completions", json={"messages": USER, "continue_final_message": True}), 400,
                 param="messages")
    tokens = http.post("/tokenize", json={"messages": answer, "continue_final_message": True,
                                          "add_generation_prompt": False, "return_token_strs": True}).json()
    assert tokens["count"] == len(re.findall(r"\s*\S+|\s+", "<|user|>\nTell a story<|end|>\n<|assistant|>\nOnce upon"))
    assert "".join(tokens["token_strs"]) == "<|user|>\nTell a story<|end|>\n<|assistant|>\nOnce upon"


def test_request_chat_template_and_kwargs(script, http):
    template = ("{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
                "{% if greeting %}{{ greeting }}{% endif %}")
    response = http.post("/v1/chat/completions", json={
        "messages": USER, "chat_template": template, "chat_template_kwargs": {"greeting": "!"}})
    assert response.status_code == 200, response.text
    assert last_request(script)["prompt"] == "[user:hello]!"
    broken = http.post("/v1/chat/completions", json={"messages": USER, "chat_template": "{% for %}"})
    assert broken.status_code == 400 and "Traceback" not in broken.text


# --- ids, usage, fingerprints, OpenAI's bookkeeping fields ------------------------------------------------------
def test_request_id_system_fingerprint_and_openai_fields(client, http):
    chat = client.chat.completions.create(model="fake-model", messages=USER, service_tier="default",
                                          metadata={"job": "eval-7"}, store=False,
                                          extra_body={"request_id": "job-7.a"})
    assert chat.id == "chatcmpl-job-7.a"
    assert chat.system_fingerprint == "lmchat-0.1.0-fake" and chat.service_tier == "default"
    text = client.completions.create(model="fake-model", prompt="long", max_tokens=1,
                                     extra_body={"request_id": "r1"})
    assert text.id == "cmpl-r1" and text.system_fingerprint == "lmchat-0.1.0-fake"
    assert "keeps no completions" in assert_error(
        http.post("/v1/chat/completions", json={"messages": USER, "store": True}), 400, param="store")["message"]
    assert_error(http.post("/v1/chat/completions", json={"messages": USER, "service_tier": "flex"}), 400,
                 param="service_tier")


def test_continuous_usage_stats(client):
    whole = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "long"}],
                                           max_tokens=5)
    chunks = list(client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "long"}], max_tokens=5, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}))
    counted = [chunk.usage.completion_tokens for chunk in chunks if chunk.choices and chunk.usage]
    assert counted == sorted(counted) and counted[-1] == 5
    assert all(chunk.usage.prompt_tokens == whole.usage.prompt_tokens for chunk in chunks if chunk.usage)
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    plain = list(client.chat.completions.create(model="fake-model", messages=USER, stream=True,
                                                stream_options={"include_usage": True}))
    assert all(chunk.usage is None for chunk in plain[:-1])
    completion = list(client.completions.create(model="fake-model", prompt="long", max_tokens=3, stream=True,
                                                stream_options={"include_usage": True,
                                                                "continuous_usage_stats": True}))
    assert [chunk.usage.completion_tokens for chunk in completion if chunk.choices] == [1, 2, 3, 3]  # + finish


# --- /v1/completions: batches, token ids, echo ----------------------------------------------------------------
def test_completion_batches_and_token_prompts(server, client, http):
    batch = client.completions.create(model="fake-model", prompt=["long a", "long b"], max_tokens=2, n=2)
    assert [choice.index for choice in batch.choices] == [0, 1, 2, 3]
    assert all(choice.text == "w0 w1" for choice in batch.choices)
    engine = server.chat_model.engine
    assert batch.usage.prompt_tokens == len(engine.tokenize("long a")) + len(engine.tokenize("long b"))
    assert batch.usage.completion_tokens == 8
    ids = engine.tokenize("long story")
    from_ids = client.completions.create(model="fake-model", prompt=ids, max_tokens=3)
    assert from_ids.choices[0].text == "w0 w1 w2" and from_ids.usage.prompt_tokens == len(ids)
    two = client.completions.create(model="fake-model", prompt=[ids, ids[:1]], max_tokens=1)
    assert [choice.text for choice in two.choices] == ["w0", "w0"]
    assert two.usage.prompt_tokens == len(ids) + 1
    response, events = stream_post(http, "/v1/completions", {"prompt": ["long a", "long b"], "max_tokens": 2,
                                                             "stream": True, "stream_options": {"include_usage": True}})
    texts: dict[int, str] = {}
    for event in events[:-2]:
        assert_schema("CreateCompletionResponse", event, stream_completion=True)
        for choice in event["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "w0 w1", 1: "w0 w1"} and events[-2]["usage"]["completion_tokens"] == 4
    assert_error(http.post("/v1/completions", json={"prompt": [[1, 2], []]}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={"prompt": [10**9]}), 400, param="prompt")


def test_completion_echo(client):
    echoed = client.completions.create(model="fake-model", prompt="long tale", max_tokens=2, echo=True)
    assert echoed.choices[0].text == "long tale" + "w0 w1"
    stream = client.completions.create(model="fake-model", prompt="long tale", max_tokens=2, echo=True, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == "long tale" + "w0 w1"


def test_completion_echo_with_logprobs(client):
    """OpenAI's (and vLLM's) shape: the prompt's tokens first, the first with null log-probabilities."""
    echoed = client.completions.create(model="fake-model", prompt="long tale", max_tokens=2, echo=True, logprobs=1)
    logprobs = echoed.choices[0].logprobs
    assert logprobs.tokens == ["long", " tale", "w0", " w1"]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.token_logprobs[1] == -1.0 and logprobs.top_logprobs[1] == {" tale": -1.0}
    assert logprobs.text_offset == [0, 4, 9, 11]
    batch = client.completions.create(model="fake-model", prompt=[[0, 1], [1, 0]], max_tokens=1, echo=True,
                                      logprobs=0)
    assert [len(choice.logprobs.tokens) for choice in batch.choices] == [3, 3]
    chunks = list(client.completions.create(model="fake-model", prompt="long tale", max_tokens=2, echo=True,
                                            logprobs=1, stream=True))
    streamed = [token for chunk in chunks for token in chunk.choices[0].logprobs.tokens]
    assert streamed == logprobs.tokens


# --- model names ---------------------------------------------------------------------------------------------
def test_accept_any_model(script, http):
    assert_error(http.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": USER}), 404,
                 code="model_not_found")
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, accept_any_model=True) as live:
        client = live.openai()
        answer = client.chat.completions.create(model="gpt-4o", messages=USER)
        assert answer.model == "fake-model" and answer.choices[0].message.content
        assert client.completions.create(model="davinci-002", prompt="long", max_tokens=1).choices[0].text == "w0"
        assert client.models.retrieve("anything").id == "anything"
