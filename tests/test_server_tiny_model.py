"""The server over a real (tiny, random-weight) transformers model, decoding greedily; its vocabulary and context
checks; 64 concurrent streams with no error, and 100 streams left mid-way that leave nothing running."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from test_server_support import ThreadServer, assert_error, assert_schema, httpx, stream_post, wait_for

pytest.importorskip("torch")
pytest.importorskip("transformers")

MESSAGES = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    config = {"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 6}
    with ThreadServer(config, served_model_names=("tiny",)) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


def test_greedy_chat_streamed_equals_non_streamed(server, client):
    completion = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5)
    [choice] = completion.choices
    assert choice.message.content  # random weights, but greedy: some text
    assert choice.finish_reason in ("stop", "length")
    if choice.finish_reason == "length":
        assert completion.usage.completion_tokens == 5
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens)

    with server.http() as http:
        body = http.post("/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES}).json()
        assert_schema("CreateChatCompletionResponse", body)
        prompt = http.post("/tokenize", json={"messages": MESSAGES}).json()
        assert body["usage"]["prompt_tokens"] == prompt["count"] == completion.usage.prompt_tokens


def test_logprobs_and_n(server, client):
    completion = client.chat.completions.create(
        model="tiny", messages=MESSAGES, logprobs=True, top_logprobs=2, n=2, max_tokens=4
    )
    first, second = completion.choices
    assert first.message.content == second.message.content  # greedy: every answer is the same
    tokens = first.logprobs.content
    if first.finish_reason == "length":
        assert len(tokens) == 4 and completion.usage.completion_tokens == 8
    for token in tokens:
        assert token.logprob <= 0 and 1 <= len(token.top_logprobs) <= 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
    with server.http() as http:
        response, events = stream_post(http, "/v1/chat/completions", {
            "model": "tiny", "messages": MESSAGES, "logprobs": True, "top_logprobs": 2, "stream": True,
        })
        for chunk in events[:-1]:
            assert_schema("CreateChatCompletionStreamResponse", chunk)


def test_completion_and_tokenizer_round_trip(server, client):
    completion = client.completions.create(model="tiny", prompt="The sky is", max_tokens=3)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens == len(server.chat_model.engine.tokenize("The sky is"))
    with server.http() as http:
        tokens = http.post("/tokenize", json={"prompt": "Hello world"}).json()
        assert tokens["tokens"] == server.chat_model.engine.tokenize("Hello world")
        assert tokens["max_model_len"] == 512
        assert http.post("/detokenize", json={"tokens": tokens["tokens"]}).json() == {
            "prompt": "Hello world", "content": "Hello world"}
        assert_schema("ListModelsResponse", http.get("/v1/models").json())


def test_reward_model_scores(tiny_reward_dir):
    with ThreadServer({"model_name_or_path": str(tiny_reward_dir)}, served_model_names=("reward",)) as live:
        with live.http() as http:
            conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
            by_server = http.post("/v1/score/conversations", json={"conversations": [conversation]}).json()
            text = live.chat_model.render(conversation, add_generation_prompt=False)
            by_client = http.post("/v1/score/evaluation", json={"model": "reward", "messages": [text]}).json()
    assert by_server["scores"] == pytest.approx(by_client["scores"])
    assert isinstance(by_client["scores"][0], float)


def test_logit_bias_ids_outside_the_vocabulary_and_a_prompt_far_past_the_context(server):
    vocab = server.chat_model.engine.info.vocab_size
    assert vocab
    with server.http() as http:
        for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/completions", {"prompt": "x"})):
            error = assert_error(http.post(path, json={**body, "logit_bias": {str(vocab): 5}}), 400,
                                 param="logit_bias")
            assert f"0 to {vocab - 1}" in error["message"]
            assert_error(http.post(path, json={**body, "logit_bias": {"-1": 5}}), 400)
        assert http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 1,
                                                        "logit_bias": {str(vocab - 1): 5}}).status_code == 200
        huge = [{"role": "user", "content": "sea " * 2_000_000}]  # 8 MB: refused by its length, never tokenized
        error = assert_error(http.post("/v1/chat/completions", json={"messages": huge}, timeout=60), 400,
                             code="context_length_exceeded")
        assert "at least" in error["message"]


async def _stream(client: httpx.AsyncClient, body: dict, stop_after: int | None = None) -> dict:
    """One streamed chat completion: its events (all, or the first ``stop_after`` before leaving)."""
    began, events, first = time.monotonic(), [], None
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            first = first or time.monotonic() - began
            events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
            if stop_after is not None and len(events) >= stop_after:
                break  # leaving the stream closes the connection mid-answer
    return {"events": events, "ttft": first, "total": time.monotonic() - began}


def test_64_concurrent_streams_all_finish_without_error(server):
    async def run() -> list[dict]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as client:
            bodies = [{"messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 8,
                       "temperature": 1, "seed": i} for i in range(64)]
            return await asyncio.gather(*(_stream(client, body) for body in bodies))

    began = time.monotonic()
    results = asyncio.run(run())
    wall = time.monotonic() - began
    for result in results:
        assert result["events"][-1] == "[DONE]"
        assert not any(isinstance(event, dict) and "error" in event for event in result["events"]), result
    ttfts = sorted(result["ttft"] for result in results)
    print(f"\n64 streams: 0 errors, TTFT p50 {ttfts[32]:.2f} s, max {ttfts[-1]:.2f} s, wall {wall:.2f} s")
    assert server.app.state.lmchat.admission.running == 0


def test_100_streams_left_mid_way_leave_no_request_running(server):
    state = server.app.state.lmchat

    async def run() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            body = {"messages": MESSAGES, "max_tokens": 200}  # far longer than the reading
            results, drains = [], []
            for _ in range(4):  # 4 waves of 25 clients that leave after their second event
                results += await asyncio.gather(*(_stream(client, body, stop_after=2) for _ in range(25)))
                left = time.monotonic()
                await asyncio.to_thread(wait_for, lambda: state.admission.running == 0, 10, 0.005)
                drains.append(time.monotonic() - left)
            print(f"\n100 disconnects: running back to 0 within {max(drains):.3f} s of each wave of 25")
            return results

    results = asyncio.run(run())
    assert len(results) == 100 and all(len(result["events"]) == 2 for result in results)
    assert state.admission.running == 0
    with server.http() as http:  # and the engine still answers
        assert http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}).status_code == 200
