"""vLLM's and llama.cpp's request fields that lmchat itself honours for every engine, over the scripted fake engine
on a real loopback server (the official openai client where it applies), and the engine-independent token rules.

Ports of assertions of vLLM's tests/entrypoints/openai (test_chat_echo: echo with continue_final_message;
test_truncation: the prompt cut to its last k tokens, a k past the context refused; test_return_tokens_as_ids:
``token_id:N`` names; test_completion/test_prompt_logprobs' shape: ``None`` first, then ``{token_id: {logprob,
rank, decoded_token}}``) and llama.cpp's tools/server/tests (test_basic: /health while loading and after).
The sampling rules' real runs are in tests/test_server_api_fields_models.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from test_server_support import (
    HOST,
    REPO,
    assert_error,
    assert_schema,
    fake_server_fixtures,
    free_port,
    httpx,
    last_request,
    write_script,
)

from lmchat.generation.sampling import SamplingParams
from lmchat.generation.token_rules import TokenRules, bad_words_token_ids

SCRIPT = {"name": "fake-model", "context_length": 64, "replies": [{"match": "long", "text": "w0 w1 w2 w3 w4 w5"}]}
USER = [{"role": "user", "content": "hello"}]
DOCS_TEMPLATE = ("{% for d in documents or [] %}[doc {{ d.title }}: {{ d.text }}]{% endfor %}"
                 "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>")


script, server, http, client = fake_server_fixtures("api-fields", SCRIPT)



# --- the token rules, engine-independent ------------------------------------------------------------------
def test_min_tokens_bans_the_end_tokens_until_reached():
    rules = TokenRules.of(SamplingParams(min_tokens=2), frozenset({2, 7}), ())
    assert rules.banned([]) == [2, 7] and rules.banned([5]) == [2, 7] and rules.banned([5, 6]) == []
    assert TokenRules.of(SamplingParams(), frozenset({2}), ()) is None  # nothing to do: no per-step work


def test_bad_words_ban_a_words_last_token_after_its_others():
    rules = TokenRules.of(SamplingParams(bad_words=("x",)), frozenset(), ((9,), (4, 5, 6)))
    assert rules.banned([]) == [9]  # a one-token word: always banned
    assert rules.banned([4]) == [9] and rules.banned([1, 4, 5]) == [9, 6] and rules.banned([4, 5, 1]) == [9]


def test_bad_words_are_tokenized_with_and_without_a_leading_space_as_vllm_does():
    vocab = {"hello": [1], " hello": [2], "big cat": [3, 4], " big cat": [5, 4], "a b": [6, 7], " a b": [6, 8]}
    ids = bad_words_token_ids(["hello", " big cat", "a b"], lambda text: vocab[text])
    # " a b" keeps the same first token: vLLM adds it only when the leading space changes the first token
    assert ids == ((1,), (2,), (3, 4), (5, 4), (6, 7))


def test_sampling_params_check_the_new_fields():
    assert SamplingParams(bad_words=["a"], allowed_token_ids=[3, 1]).allowed_token_ids == (3, 1)
    assert SamplingParams(logprobs=True, top_logprobs=-1).top_logprobs == -1
    for bad in ({"bad_words": "a"}, {"bad_words": [" "]}, {"allowed_token_ids": []}, {"allowed_token_ids": [-1]},
                {"truncate_prompt_tokens": 0}, {"truncate_prompt_tokens": -2}, {"top_logprobs": -2, "logprobs": True}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


# --- unknown fields name the closest known one ------------------------------------------------------------
def test_an_unknown_field_a_typo_away_names_the_known_one(http):
    error = assert_error(http.post("/v1/chat/completions", json={"messages": USER, "min_tokenz": 1}), 400,
                         param="min_tokenz")
    assert "did you mean 'min_tokens'" in error["message"]
    error = assert_error(http.post("/v1/completions", json={"prompt": "a", "max_tokns": 1}), 400, param="max_tokns")
    assert "did you mean 'max_tokens'" in error["message"]
    far = assert_error(http.post("/v1/chat/completions", json={"messages": USER, "zebra_mode": 1}), 400,
                       param="zebra_mode")
    assert far["message"] == "Unrecognized request argument supplied: zebra_mode"


# --- truncate_prompt_tokens (vLLM's test_truncation) --------------------------------------------------------
def test_truncate_prompt_tokens_keeps_the_prompts_last_tokens(script, client, http):
    completion = client.completions.create(model="fake-model", prompt="long one two three four", max_tokens=2,
                                           extra_body={"truncate_prompt_tokens": 3})
    assert completion.usage.prompt_tokens == 3
    assert last_request(script)["prompt"] == " two three four"
    chat = client.chat.completions.create(model="fake-model", messages=USER, max_tokens=1,
                                          extra_body={"truncate_prompt_tokens": 2})
    assert chat.usage.prompt_tokens == 2 and last_request(script)["prompt"] == "\n<|assistant|>\n"
    whole = client.completions.create(model="fake-model", prompt="a b", max_tokens=1,
                                      extra_body={"truncate_prompt_tokens": -1})  # -1: the context length
    assert whole.usage.prompt_tokens == 2
    error = assert_error(http.post("/v1/completions", json={"prompt": "a", "truncate_prompt_tokens": 65}), 400,
                         param="truncate_prompt_tokens")
    assert "context length (64)" in error["message"]
    assert_error(http.post("/v1/completions", json={"prompt": "a", "truncate_prompt_tokens": 0}), 400,
                 param="truncate_prompt_tokens")


# --- chat echo (vLLM's test_chat_echo) ----------------------------------------------------------------------
@pytest.mark.parametrize("echo", [True, False])
def test_chat_echo_with_continue_final_message(client, echo):
    saying = "Here is a common saying about apple. An apple a day, keeps"
    messages = [{"role": "user", "content": "tell me a common saying"}, {"role": "assistant", "content": saying}]
    chat = client.chat.completions.create(model="fake-model", messages=messages, extra_body={
        "echo": echo, "continue_final_message": True, "add_generation_prompt": False})
    [choice] = chat.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert (saying in choice.message.content) is echo
    if echo:
        assert choice.message.content.startswith(saying)
        stream = client.chat.completions.create(model="fake-model", messages=messages, stream=True, extra_body={
            "echo": True, "continue_final_message": True, "add_generation_prompt": False})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == choice.message.content


def test_chat_echo_leaves_a_user_turn_out(client):
    chat = client.chat.completions.create(model="fake-model", messages=USER, extra_body={"echo": True})
    assert chat.choices[0].message.content == "You said: hello"  # the last message is not the assistant's


# --- documents ----------------------------------------------------------------------------------------------
def test_documents_reach_the_chat_template(script, http):
    body = {"messages": USER, "chat_template": DOCS_TEMPLATE,
            "documents": [{"title": "T", "text": "the sky is green"}, {"title": "U", "text": "grass is blue"}]}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert last_request(script)["prompt"] == ("[doc T: the sky is green][doc U: grass is blue]<|user|>hello"
                                              "<|assistant|>")
    error = assert_error(http.post("/v1/chat/completions", json={"messages": USER, "documents": [{"text": "d"}]}),
                         400, param="documents")
    assert "ignores documents" in error["message"]  # the fake model's template has no documents section
    assert_error(http.post("/v1/chat/completions", json={"messages": USER, "documents": ["d"]}), 400,
                 param="documents[0]")


# --- logprobs: token ids as names, prompt_logprobs in vLLM's shape ----------------------------------------------
def test_return_tokens_as_token_ids(server, client):
    engine = server.chat_model.engine
    chat = client.chat.completions.create(model="fake-model", messages=USER, logprobs=True, top_logprobs=1,
                                          extra_body={"return_tokens_as_token_ids": True})
    tokens = chat.choices[0].logprobs.content
    assert all(token.token.startswith("token_id:") for token in tokens)
    ids = [int(token.token.removeprefix("token_id:")) for token in tokens]
    assert engine.detokenize(ids) == chat.choices[0].message.content
    assert all(top.token == token.token for token in tokens for top in token.top_logprobs)
    text = client.completions.create(model="fake-model", prompt="long tale", max_tokens=2, echo=True, logprobs=1,
                                     extra_body={"return_tokens_as_token_ids": True})
    logprobs = text.choices[0].logprobs
    names = [int(name.removeprefix("token_id:")) for name in logprobs.tokens]
    assert engine.detokenize(names) == text.choices[0].text == "long tale" + "w0 w1"
    assert set(logprobs.top_logprobs[1]) == {logprobs.tokens[1]}  # a prompt token's own alternative, by id


def test_prompt_logprobs_in_vllms_shape(server, client, http):
    engine = server.chat_model.engine
    completion = client.completions.create(model="fake-model", prompt="long tale told", max_tokens=1,
                                           extra_body={"prompt_logprobs": 1})
    [choice] = completion.choices
    prompt_ids = engine.tokenize("long tale told")
    entries = choice.prompt_logprobs
    assert len(entries) == len(prompt_ids) and entries[0] is None
    for token_id, entry in zip(prompt_ids[1:], entries[1:]):
        assert entry[str(token_id)] == {"logprob": -1.0, "rank": 1, "decoded_token": engine.detokenize([token_id])}
    chat = http.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 1, "prompt_logprobs": 0}).json()
    assert chat["prompt_logprobs"][0] is None and all(len(entry) == 1 for entry in chat["prompt_logprobs"][1:])
    assert_schema("CreateChatCompletionResponse", chat)
    plain = http.post("/v1/completions", json={"prompt": "a b", "max_tokens": 1}).json()
    assert "prompt_logprobs" not in plain["choices"][0]  # only when asked for
    for path, body in (("/v1/completions", {"prompt": "a b"}), ("/v1/chat/completions", {"messages": USER})):
        assert_error(http.post(path, json={**body, "stream": True, "prompt_logprobs": 1}), 400,
                     param="prompt_logprobs")
        assert_error(http.post(path, json={**body, "prompt_logprobs": 21}), 400, param="prompt_logprobs")


def test_usage_reports_cached_prompt_tokens(client):
    chat = client.chat.completions.create(model="fake-model", messages=USER)
    assert chat.usage.prompt_tokens_details.cached_tokens == 0  # the scripted engine reuses nothing
    text = client.completions.create(model="fake-model", prompt="a b", max_tokens=1)
    assert text.usage.prompt_tokens_details.cached_tokens == 0


# --- suffix: fill in the middle ------------------------------------------------------------------------------
def test_suffix_needs_a_model_with_fill_in_the_middle_tokens(http):
    error = assert_error(http.post("/v1/completions", json={"prompt": "def f(", "suffix": "return x"}), 400,
                         param="suffix")
    assert "no fill-in-the-middle tokens" in error["message"] and "<fim_prefix>" in error["message"]
    assert_error(http.post("/v1/completions", json={"prompt": [1, 2], "suffix": "x"}), 400, param="suffix")


# --- /health while the model loads (llama.cpp's shape) ----------------------------------------------------------
def test_health_answers_loading_until_the_model_is_ready(tmp_path):
    script = write_script(tmp_path, name="slow-model", start_delay=4)
    port = free_port()
    command = [sys.executable, "-m", "lmchat.server", "--host", HOST, "--port", str(port),
               "--infer-backend", "fake", "--model-name-or-path", script]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    base = f"http://{HOST}:{port}"
    try:
        first = _first_answer(process, base + "/health")
        assert first.status_code == 503, first.text
        assert first.json() == {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        chat = httpx.post(base + "/v1/chat/completions", json={"messages": USER}, timeout=5)
        assert chat.status_code == 503 and chat.json()["error"]["message"] == "Loading model"
        deadline = time.monotonic() + 60
        while (ready := httpx.get(base + "/health", timeout=5)).status_code == 503:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.1)
        assert ready.status_code == 200 and ready.json() == {"status": "ok"}
        assert httpx.post(base + "/v1/chat/completions", json={"messages": USER}, timeout=5).status_code == 200
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output


def _first_answer(process: subprocess.Popen, url: str) -> httpx.Response:
    """The server's first answer at ``url`` (it binds its port before the model loads)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stdout.read()}")
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the server never answered")
