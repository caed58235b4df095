"""Reward scoring over the fake engine's reward mode (a text scores its number of tokens)."""

from __future__ import annotations

import re

import pytest
from test_server_support import ThreadServer, assert_error, write_script


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    script = write_script(tmp_path_factory.mktemp("reward-server"), name="fake-reward", reward=True)
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as live:
        yield live


@pytest.fixture
def http(server):
    with server.http() as client:
        yield client


def test_score_evaluation_is_llama_factory_compatible(http):
    body = {"model": "fake-reward", "messages": ["one two three", "one"], "max_length": 128}
    response = http.post("/v1/score/evaluation", json=body).json()
    assert response["object"] == "score.evaluation" and response["model"] == "fake-reward"
    assert response["scores"] == [3.0, 1.0] and response["id"]


def test_score_conversations_renders_the_template_on_the_server(http):
    conversations = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
        [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "go away"}],
    ]
    response = http.post("/v1/score/conversations", json={"conversations": conversations}).json()
    assert response["object"] == "score.conversations"
    rendered = "<|user|>\nhi<|end|>\n<|assistant|>\nhello there<|end|>\n"
    assert response["scores"][0] == float(len(re.findall(r"\s*\S+|\s+", rendered)))
    assert len(response["scores"]) == 2


def test_scoring_errors(http):
    assert_error(http.post("/v1/score/evaluation", json={"messages": []}), 400, param="messages")
    assert_error(http.post("/v1/score/evaluation", json={"model": "other", "messages": ["a"]}), 404, param="model")
    bad = {"conversations": [[{"role": "user", "content": "ok"}], [{"role": "wizard", "content": "x"}]]}
    error = assert_error(http.post("/v1/score/conversations", json=bad), 400, param="conversations[1][0].role")
    assert "wizard" in error["message"]
    bad = {"conversations": [[{"role": "user", "content": "ok"}], [{"role": "function", "content": "not json"}]]}
    error = assert_error(http.post("/v1/score/conversations", json=bad), 400, param="conversations")
    assert error["message"].startswith("conversations[1]:")
    chat = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert "reward model" in assert_error(chat, 400)["message"]
