"""``lmchat serve --replicas 2`` on a real two-node Ray cluster (tests/ray_support.py) with the tiny model, driven by
the official openai client through the Ray Serve HTTP proxy on 127.0.0.1: answers equal one process's, streaming,
API keys, request ids, errors, and ``/metrics`` summed over both replicas."""

from __future__ import annotations

import concurrent.futures
import re
import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from ray_support import ServeProcess  # noqa: E402

from lmchat import ChatModel  # noqa: E402

KEY = "test-key-1"
PROMPTS = ["Name a colour.", "Count to three.", "Say hello.", "What is two plus two?"]


def tiny_flags(model_dir) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--do_sample", "false", "--max_new_tokens", "12"]


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_model_dir):
    serve = ServeProcess(ray_cluster, "--replicas", "2", "--api-key", KEY, "--served-model-name", "tiny",
                         *tiny_flags(tiny_model_dir)).start()
    yield serve
    assert serve.stop() == 0, serve.log()[-3000:]
    assert "Deleting app" in serve.log()


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    """The same model in this process: what one process answers."""
    with ChatModel({"model_name_or_path": str(tiny_model_dir), "do_sample": False, "max_new_tokens": 12}) as model:
        yield model


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=KEY, timeout=120)


def ask(client, prompt, **options):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], **options)


def test_answers_equal_one_process(client, local):
    for prompt in PROMPTS:
        answer = ask(client, prompt)
        [expected] = local.chat([{"role": "user", "content": prompt}])
        assert answer.choices[0].message.content == expected.response_text
        assert answer.choices[0].finish_reason == expected.finish_reason
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (expected.prompt_length,
                                                                               expected.response_length)
        assert answer.model == "tiny"


def test_streaming_through_ray_serve(client):
    whole = ask(client, PROMPTS[1])
    chunks = list(ask(client, PROMPTS[1], stream=True, stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 1  # pieces
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_requests_spread_over_both_replicas_and_metrics_sum_them(server, client):
    import ray

    before = settled_chat_requests(server)  # the board lags the replicas by up to a second: earlier tests' too
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: ask(client, PROMPTS[i % 4], max_tokens=12), range(16)))
    assert len(answers) == 16
    deadline = time.monotonic() + 30  # replicas report to the board every second
    while chat_requests(scrape(server)) < before + 16 and time.monotonic() < deadline:
        time.sleep(0.5)
    text = scrape(server)
    assert chat_requests(text) == before + 16  # one process's count: every request once
    assert re.search(r'^lmchat_requests_running\{model_name="tiny"\} 0\.0$', text, re.M)
    board = ray.get_actor("lmchat-metrics:lmchat", namespace="lmchat")
    per_replica = ray.get(board.by_replica.remote())
    answered = {("route", "/v1/chat/completions"), ("status", "200")}
    counts = [sum(value for name, labels, value in samples if name == "lmchat_requests_total"
                  and answered <= set(labels))
              for families in per_replica.values() for fname, _, _, samples in families if fname == "lmchat_requests"]
    assert len(counts) == 2 and all(count > 0 for count in counts), counts  # both replicas answered
    assert sum(counts) == chat_requests(text)


def test_api_keys_and_health(server):
    unauthorised = openai.OpenAI(base_url=server.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        ask(unauthorised, "hi")
    response = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": []})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}  # no key needed


def test_errors_and_request_ids_are_the_apps(server, client):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hi", extra_body={"no_such_option": 1})
    assert caught.value.status_code == 400 and "no_such_option" in str(caught.value)
    response = httpx.post(server.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}",
                                                                             "x-request-id": "my-id-1"},
                          json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=60)
    assert response.status_code == 200
    assert response.headers.get_list("x-request-id") == ["my-id-1"]  # once: the proxy's copy is the client's id
    models = client.models.list().data
    assert [model.id for model in models] == ["tiny"] and models[0].max_model_len == 512


def scrape(server) -> str:
    response = httpx.get(server.base_url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200
    return response.text


def settled_chat_requests(server) -> float:
    """The answered chat requests once the summed count stops changing (the replicas report every second)."""
    value = chat_requests(scrape(server))
    for _ in range(20):
        time.sleep(1.5)
        value, previous = chat_requests(scrape(server)), value
        if value == previous:
            break
    return value


def chat_requests(text: str) -> float:
    match = re.search(r'^lmchat_requests_total\{route="/v1/chat/completions",status="200"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0
