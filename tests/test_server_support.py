"""Helpers for the server tests (no tests here): a real uvicorn server on a loopback port, in a thread or a
subprocess; the OpenAI schema as JSON Schema; server-sent-event parsing; the fake engine's log."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_path

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
jsonschema = pytest.importorskip("jsonschema")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = shared_path("oracles", "openai", "openai_chat_subset.openapi.json")  # missing: the tests fail
HOST = "127.0.0.1"


# --- the OpenAI schema ------------------------------------------------------------------------------------
def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (which the spec still uses in places) as JSON Schema 2020-12."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def _components() -> dict[str, Any]:
    return _nullable(json.loads(SCHEMA_PATH.read_text())["components"])


def assert_schema(name: str, body: Any, *, stream_completion: bool = False) -> None:
    """Validate ``body`` against ``components.schemas[name]`` of the OpenAI spec.

    ``stream_completion``: a streamed ``text_completion`` chunk carries ``finish_reason: null`` until its last
    chunk (as OpenAI's own server sends), which the spec's shared completion schema does not spell out.
    """
    components = _components()
    if stream_completion:
        components = json.loads(json.dumps(components))
        choice = components["schemas"][name]["properties"]["choices"]["items"]["properties"]
        choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
    schema = {"$ref": f"#/components/schemas/{name}", "components": components}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert_schema("ErrorResponse", body)
    if param is not None:
        assert body["error"]["param"] == param, body
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body["error"]


# --- server-sent events -----------------------------------------------------------------------------------
def sse_data(lines: list[str]) -> list[Any]:
    """The ``data:`` payloads of an event stream: parsed JSON, or the literal ``"[DONE]"``."""
    payloads = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def stream_post(client: httpx.Client, path: str, body: dict, **kwargs: Any) -> tuple[httpx.Response, list[Any]]:
    with client.stream("POST", path, json=body, **kwargs) as response:
        lines = list(response.iter_lines())
    return response, sse_data(lines)


# --- the fake engine ------------------------------------------------------------------------------------
def write_script(directory: Path, **script: Any) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    script.setdefault("log", str(directory / "engine-log.jsonl"))
    path = directory / "script.json"
    path.write_text(json.dumps(script), encoding="utf-8")
    return str(path)


def engine_log(script_path: str) -> list[dict]:
    log = Path(json.loads(Path(script_path).read_text())["log"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def last_request(script_path: str) -> dict:
    """The last request the fake engine of ``script_path`` logged."""
    return [event for event in engine_log(script_path) if event["event"] == "request"][-1]


def fake_server_fixtures(folder: str, script: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The fixtures a module testing one fake-engine server needs, by name: ``script`` (the engine's script file,
    one per module), ``server`` (a ThreadServer on it), ``http`` (an httpx client per test) and ``client`` (the
    official openai client). Assign them in the module: ``script, server, http, client = fake_server_fixtures(...)``."""

    @pytest.fixture(scope="module", name="script")
    def script_fixture(tmp_path_factory) -> str:
        return write_script(tmp_path_factory.mktemp(folder), **script)

    @pytest.fixture(scope="module", name="server")
    def server_fixture(script):
        with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as live:
            yield live

    @pytest.fixture(name="http")
    def http_fixture(server):
        with server.http() as client:
            yield client

    @pytest.fixture(scope="module", name="client")
    def client_fixture(server):
        return server.openai()

    return script_fixture, server_fixture, http_fixture, client_fixture


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


# --- servers ------------------------------------------------------------------------------------------------
class ThreadServer:
    """``create_app`` under a real uvicorn server on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, model_config: dict[str, Any], chat_model_class: type | None = None, **settings: Any) -> None:
        self.model_config = model_config
        self.chat_model_class = chat_model_class
        self.settings = settings
        self.api_key = (settings.get("api_keys") or ("unused",))[0]

    def __enter__(self) -> ThreadServer:
        import uvicorn

        from lmchat import ChatModel
        from lmchat.server import ServerSettings, create_app

        self.chat_model = (self.chat_model_class or ChatModel)(self.model_config)
        try:
            self.app = create_app(self.chat_model, ServerSettings(host=HOST, port=0, **self.settings))
            config = uvicorn.Config(self.app, host=HOST, port=0, log_level="warning", access_log=False,
                                    lifespan="off", timeout_graceful_shutdown=2)
            self.server = uvicorn.Server(config)
            self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
            self.thread.start()
            wait_for(lambda: self.server.started or not self.thread.is_alive(), timeout=30)
            assert self.server.started, "uvicorn did not start"
        except BaseException:
            self.chat_model.close()
            raise
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://{HOST}:{self.port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.chat_model.close()

    def http(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", self.api_key)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", max_retries=0, timeout=30, **kwargs)

    def async_openai(self, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("api_key", self.api_key)
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", max_retries=0, timeout=30, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class ProcessServer:
    """``python -m lmchat.server ARGS --port N`` on 127.0.0.1, ready once ``/health`` answers."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        command = [sys.executable, "-m", "lmchat.server", "--host", HOST, "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})}, cwd=REPO,
        )
        try:
            wait_for(self._ready, timeout=60, interval=0.1)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.process.stdout.read()}")
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)
