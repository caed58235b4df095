"""API keys, CORS, body-size limits and back-pressure, over a real server with the fake engine."""

from __future__ import annotations

import argparse
import threading

import pytest
from test_server_support import ThreadServer, assert_error, assert_schema, httpx, openai, wait_for, write_script

from lmchat.errors import ConfigError
from lmchat.server.cli import add_arguments, settings_from_args
from lmchat.server.settings import ServerSettings

ALLOWED = "http://allowed.example"
GREET = [{"role": "user", "content": "greet"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    script = write_script(
        tmp_path_factory.mktemp("secure-server"), name="fake-model", delay=0.02,
        replies=[{"match": "greet", "text": "Hello!"}, {"match": "slow", "text": " ".join(["word"] * 200)}],
    )
    settings = {"api_keys": ("key-one", "key-two"), "cors_origins": (ALLOWED,), "max_body_bytes": 2000,
                "max_concurrent": 1, "max_queue": 1}
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, **settings) as live:
        yield live


def test_every_route_but_health_needs_a_key(server):
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert anonymous.get("/health").status_code == 200
        for path in ("/v1/models", "/metrics", "/docs"):
            response = anonymous.get(path)
            assert_error(response, 401, code="invalid_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
        response = anonymous.post("/v1/chat/completions", json={"messages": GREET},
                                  headers={"Authorization": "Bearer key-wrong"})
        assert "Incorrect API key" in assert_error(response, 401)["message"]
        assert response.headers["x-request-id"]
    for key in ("key-one", "key-two"):
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
            assert client.get("/v1/models").status_code == 200


def test_openai_client_with_a_wrong_key(server):
    with pytest.raises(openai.AuthenticationError):
        server.openai(api_key="nope").models.list()
    assert server.openai(api_key="key-two").chat.completions.create(model="fake-model", messages=GREET)


def test_cors_preflight_and_allow_list(server):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with httpx.Client(base_url=server.base_url) as browser:
        response = browser.options("/v1/chat/completions", headers={"Origin": ALLOWED, **preflight})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        denied = browser.options("/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight})
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
        simple = browser.get("/v1/models", headers={"Origin": ALLOWED, "Authorization": "Bearer key-one"})
        assert simple.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        unauthorised = browser.get("/v1/models", headers={"Origin": ALLOWED})
        assert unauthorised.status_code == 401 and unauthorised.headers["access-control-allow-origin"] == ALLOWED


def test_cors_is_off_by_default(tmp_path):
    script = write_script(tmp_path, name="fake-model")
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as live, live.http() as http:
        response = http.get("/v1/models", headers={"Origin": ALLOWED})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_request_body_over_the_limit_is_a_413(server):
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    with server.http() as http:
        assert "2000 bytes" in assert_error(http.post("/v1/chat/completions", json=big), 413)["message"]

        def chunked():  # no Content-Length: the limit is counted as the body arrives
            for _ in range(10):
                yield b" " * 500

        assert_error(http.post("/v1/chat/completions", content=chunked(),
                               headers={"Content-Type": "application/json"}), 413, code="request_too_large")


def test_full_queue_is_a_429_with_retry_after(server):
    slow = {"messages": [{"role": "user", "content": "slow"}], "stream": True}
    with server.http() as first, first.stream("POST", "/v1/chat/completions", json=slow) as running:
        assert running.status_code == 200
        waiting_result = {}

        def wait_in_queue():
            with server.http() as second:
                waiting_result["response"] = second.post("/v1/chat/completions", json={"messages": GREET})

        waiter = threading.Thread(target=wait_in_queue)
        waiter.start()
        state = server.app.state.lmchat
        wait_for(lambda: state.admission.waiting == 1)
        with server.http() as third:
            metrics = third.get("/metrics").text
            assert 'lmchat_requests_running{model_name="fake-model"} 1.0' in metrics
            assert 'lmchat_requests_waiting{model_name="fake-model"} 1.0' in metrics
            response = third.post("/v1/chat/completions", json={"messages": GREET})
            assert_error(response, 429, code="rate_limit_exceeded")
            assert response.headers["retry-after"] == "1"
    waiter.join(timeout=30)  # the first stream closed: its slot went to the waiting request
    assert waiting_result["response"].status_code == 200
    assert_schema("CreateChatCompletionResponse", waiting_result["response"].json())
    assert (state.admission.running, state.admission.waiting) == (0, 0)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_settings_from_flags_and_environment():
    assert settings_from_args(_parse([]), environ={}).host == "127.0.0.1"
    assert settings_from_args(_parse([]), environ={"LMCHAT_API_KEY": "env-key"}).api_keys == ("env-key",)
    flags = _parse(["--api-key", "flag-key", "--cors-origin", "http://a", "http://b", "--served-model-name", "m"])
    settings = settings_from_args(flags, environ={"LMCHAT_API_KEY": "env-key"})
    assert settings.api_keys == ("flag-key",) and settings.cors_origins == ("http://a", "http://b")
    assert settings.served_model_names == ("m",)
    with pytest.raises(ConfigError, match="max_concurrent"):
        settings_from_args(_parse(["--max-concurrent", "0"]), environ={})


def test_non_loopback_without_a_key_warns():
    assert ServerSettings().exposure_warning() is None
    assert ServerSettings(host="::1").exposure_warning() is None
    assert ServerSettings(host="0.0.0.0", api_keys=("k",)).exposure_warning() is None
    warning = ServerSettings(host="0.0.0.0").exposure_warning()
    assert "0.0.0.0" in warning and "--api-key" in warning and "LMCHAT_API_KEY" in warning
