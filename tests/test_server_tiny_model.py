"""The server over a real (tiny, random-weight) transformers model, decoding greedily."""

from __future__ import annotations

import pytest
from test_server_support import ThreadServer, assert_schema, stream_post

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
