"""llama.cpp's and vLLM's own routes over the scripted fake engine, with a real server on loopback: OpenAI routes
without /v1 (the official openai client), X-Api-Key, llama.cpp's /tokenize, /props, native /completion with
n_predict and timings (streamed too), vLLM's /version, /ping, /invocations. Ports of the assertions of llama.cpp's
tools/server/tests/unit (test_completion, test_tokenize, test_security) and vLLM's tests/entrypoints/openai
(test_sagemaker, test_tokenization)."""

from __future__ import annotations

import re

import pytest
from test_server_support import ThreadServer, assert_error, assert_schema, stream_post, write_script

from lmchat.server.settings import DEFAULT_RUNNING_SEQUENCES

SCRIPT = {
    "name": "fake-model",
    "context_length": 256,
    "replies": [
        {"match": "long", "text": " ".join(f"w{i}" for i in range(40))},
        {"match": "stopper", "text": "one two STOP three"},
        {"match": "lines", "text": "first\nsecond"},
        {"text": "a short answer"},
    ],
}


def fake_tokens(text: str) -> int:
    return len(re.findall(r"\s*\S+|\s+", text))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    script = write_script(tmp_path_factory.mktemp("compat"), **SCRIPT)
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as live:
        yield live


@pytest.fixture
def http(server):
    with server.http() as client:
        yield client


# --- OpenAI's routes without /v1 (llama.cpp serves both) -------------------------------------------------------
def test_openai_client_without_v1_prefix(server):
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)
    assert [model.id for model in client.models.list().data] == ["fake-model"]
    assert client.models.retrieve("fake-model").id == "fake-model"
    chat = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "a short answer"
    text = client.completions.create(model="fake-model", prompt="long story", max_tokens=3)
    assert (text.choices[0].text, text.choices[0].finish_reason) == ("w0 w1 w2", "length")
    chunks = list(client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a short answer"


# --- llama.cpp: /tokenize, /detokenize, /props, /health ---------------------------------------------------------
def test_llamacpp_tokenize_and_detokenize(server, http):
    engine = server.chat_model.engine
    tokens = http.post("/tokenize", json={"content": "What is the capital"}).json()
    assert tokens == {"tokens": engine.tokenize("What is the capital")}
    assert len(tokens["tokens"]) == 4
    pieces = http.post("/tokenize", json={"content": "What is", "with_pieces": True}).json()["tokens"]
    assert [piece["id"] for piece in pieces] == engine.tokenize("What is")
    assert "".join(piece["piece"] for piece in pieces) == "What is"
    text = http.post("/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert text["content"] == text["prompt"] == "What is the capital"  # llama.cpp's name and vLLM's
    assert_error(http.post("/tokenize", json={"content": "x", "parse_special": False}), 400, "parse_special")
    assert_error(http.post("/tokenize", json={"content": "x", "with_piece": True}), 400, "with_piece")
    assert_error(http.post("/tokenize", content=b"not json", headers={"content-type": "application/json"}), 400)


def test_props_and_health(server, http):
    props = http.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 256
    assert props["total_slots"] == DEFAULT_RUNNING_SEQUENCES  # the fake engine reports no capacity of its own
    assert props["model_alias"] == "fake-model"
    assert "{% for m in messages %}" in props["chat_template"]
    assert props["modalities"] == {"vision": False, "audio": False}
    assert props["build_info"].startswith("lmchat ")
    assert http.get("/health").json() == {"status": "ok"}


# --- llama.cpp: native /completion ----------------------------------------------------------------------------
def test_completion_n_predict_and_timings(http):
    body = http.post("/completion", json={"prompt": "a long prompt", "n_predict": 8, "return_tokens": True}).json()
    assert body["content"] == " ".join(f"w{i}" for i in range(8))
    timings = body["timings"]
    assert timings["prompt_n"] == body["tokens_evaluated"] == fake_tokens("a long prompt")
    assert timings["predicted_n"] == body["tokens_predicted"] == 8
    assert timings["prompt_ms"] >= 0 and timings["predicted_ms"] > 0 and timings["predicted_per_second"] > 0
    assert body["stop"] is True and body["stop_type"] == "limit" and body["truncated"] is False
    assert type(body["has_new_line"]) is bool and body["has_new_line"] is False
    assert len(body["tokens"]) == 8 and all(type(token) is int for token in body["tokens"])
    assert body["generation_settings"]["n_predict"] == 8
    plain = http.post("/completion", json={"prompt": "a long prompt", "n_predict": 2}).json()
    assert plain["tokens"] == []  # only with return_tokens, as llama.cpp


def test_completion_stop_types(http):
    eos = http.post("/completion", json={"prompt": "print lines"}).json()
    assert (eos["content"], eos["stop_type"], eos["has_new_line"]) == ("first\nsecond", "eos", True)
    word = http.post("/completion", json={"prompt": "stopper", "stop": ["STOP"]}).json()
    assert (word["content"], word["stop_type"], word["stopping_word"]) == ("one two ", "word", "STOP")


def test_completion_stream_equals_non_stream(http):
    request = {"prompt": "a long prompt", "n_predict": 5}
    whole = http.post("/completion", json=request).json()
    response, events = stream_post(http, "/completion", {**request, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in events  # llama.cpp's native stream has no [DONE]
    content = ""
    for event in events:
        assert type(event["stop"]) is bool
        if event["stop"]:
            assert event["timings"]["prompt_n"] == fake_tokens("a long prompt")
            assert event["timings"]["predicted_n"] == 5
            assert event["stop_type"] == "limit" and event["truncated"] is False
            assert event["generation_settings"]["n_predict"] == 5
        else:
            assert len(event["tokens"]) > 0 and all(type(token) is int for token in event["tokens"])
            content += event["content"]
    assert events[-1]["stop"] is True
    assert content == whole["content"]


def test_completion_token_prompts_and_batches(server, http):
    tokens = http.post("/tokenize", json={"content": "a long prompt", "add_special": True}).json()["tokens"]
    single = http.post("/completion", json={"prompt": tokens, "n_predict": 3}).json()
    assert single["content"] == "w0 w1 w2" and single["tokens_evaluated"] == len(tokens)
    batch = http.post("/completion", json={"prompt": [tokens, tokens], "n_predict": 3}).json()
    assert type(batch) is list and len(batch) == 2 and batch[0]["content"] == batch[1]["content"] == "w0 w1 w2"
    mixed = http.post("/completion", json={"prompt": [tokens, "a long prompt"], "n_predict": 3}).json()
    assert [one["content"] for one in mixed] == ["w0 w1 w2", "w0 w1 w2"]
    assert_error(http.post("/completion", json={"prompt": [tokens, tokens], "stream": True}), 400, "prompt")
    assert_error(http.post("/completion", json={"prompt": [10**9]}), 400, "prompt")
    assert_error(http.post("/completion", json={"prompt": "x", "n_predict": -2}), 400, "n_predict")
    assert_error(http.post("/completion", json={"prompt": "x", "id_slot": 1}), 400, "id_slot")
    assert_error(http.post("/completion", json={"prompt": "x", "n_prdict": 1}), 400, "n_prdict")


# --- X-Api-Key (llama.cpp's test_security) -------------------------------------------------------------------
def test_x_api_key_header(tmp_path):
    script = write_script(tmp_path, **SCRIPT)
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, api_keys=("sekrit",)) as live:
        import httpx

        with httpx.Client(base_url=live.base_url, timeout=30) as http:
            assert http.get("/props", headers={"X-Api-Key": "sekrit"}).status_code == 200
            assert http.get("/v1/models", headers={"x-api-key": "sekrit"}).status_code == 200
            assert_error(http.get("/props", headers={"X-Api-Key": "wrong"}), 401, code="invalid_api_key")
            missing = assert_error(http.get("/props"), 401)
            assert "X-Api-Key" in missing["message"]
            assert http.get("/health").status_code == 200 and http.get("/ping").status_code == 200  # open routes
            body = {"prompt": "hi", "n_predict": 2}
            assert http.post("/completion", json=body, headers={"X-Api-Key": "sekrit"}).status_code == 200
            assert http.post("/completion", json=body).status_code == 401


# --- vLLM: /version, /ping, /invocations -----------------------------------------------------------------------
def test_version_and_ping(http):
    from lmchat import __version__

    assert http.get("/version").json() == {"version": __version__}
    assert http.get("/ping").status_code == 200 and http.post("/ping").status_code == 200


def test_invocations_dispatch_on_the_body(http):
    chat_body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    chat = http.post("/invocations", json=chat_body).json()
    assert chat == {**chat, "object": "chat.completion"}
    assert_schema("CreateChatCompletionResponse", chat)
    assert chat["choices"][0]["message"]["content"] == http.post("/v1/chat/completions", json=chat_body).json()[
        "choices"][0]["message"]["content"]
    completion = http.post("/invocations", json={"prompt": "long story", "max_tokens": 2}).json()
    assert completion["object"] == "text_completion" and completion["choices"][0]["text"] == "w0 w1"
    _, events = stream_post(http, "/invocations", {**chat_body, "stream": True})
    assert events[-1] == "[DONE]"
    assert_error(http.post("/invocations", json={"nothing": "hello"}), 400, "messages")
    refused = http.post("/invocations", json={"input": "hello"})  # an embedding body: this chat model cannot embed
    assert refused.status_code == 400 and "embed" in refused.json()["error"]["message"]
    assert_error(http.post("/invocations", json={"messages": []}), 400, "messages")
