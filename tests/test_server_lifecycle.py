"""``python -m lmchat.server`` as a process: start-up, and SIGTERM letting in-flight answers finish within the
grace period, then aborting them."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from test_server_support import REPO, ProcessServer, engine_log, httpx, sse_data, wait_for, write_script


def test_help_lists_the_server_flags():
    result = subprocess.run([sys.executable, "-m", "lmchat.server", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--api-key", "--served-model-name", "--cors-origin", "--max-body-bytes",
                 "--max-concurrent", "--max-queue", "--shutdown-grace", "--log-prompts"):
        assert flag in result.stdout


def test_the_server_runs_on_uvloop_and_httptools():
    """The serve extra brings uvicorn's C event loop and HTTP parser, and lmchat's server picks them (uvicorn's
    pure-Python h11 parser and asyncio's loop cost more per streamed token)."""
    from lmchat.server.lifecycle import LmchatServer
    from lmchat.server.settings import ServerSettings

    async def app(scope, receive, send):  # pragma: no cover - never called
        raise AssertionError

    server = LmchatServer(app, ServerSettings())
    server.config.load()
    assert server.config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
    assert server.config.get_loop_factory().__module__ == "uvloop"


def _stream_in_background(server: ProcessServer, text: str) -> tuple[threading.Thread, dict]:
    result: dict = {"lines": []}
    body = {"messages": [{"role": "user", "content": text}], "stream": True}

    def read():
        try:
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=30,
                              headers={"x-request-id": "life-1"}) as response:
                result["status"] = response.status_code
                for line in response.iter_lines():
                    result["lines"].append(line)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=read)
    thread.start()
    wait_for(lambda: len(result["lines"]) >= 4)  # the stream is under way
    return thread, result


def test_sigterm_lets_running_answers_finish(tmp_path):
    script = write_script(tmp_path, name="fake-model", delay=0.02, replies=[" ".join(["word"] * 40)])
    server = ProcessServer("--infer_backend", "fake", "--model_name_or_path", script, "--shutdown-grace", "20",
                           "--served-model-name", "served-name")
    try:
        thread, result = _stream_in_background(server, "my secret prompt")
        server.signal(signal.SIGTERM)
        thread.join(timeout=30)
        events = sse_data(result["lines"])
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
        assert events[-2]["model"] == "served-name"
        code, output = server.wait()
        assert code == 0, output
        assert [e["event"] for e in engine_log(script)] == ["request", "finish"]
        assert "Serving fake-model as served-name" in output and "Traceback" not in output
        assert "[life-1] lmchat.server.access: POST /v1/chat/completions 200" in output  # logs carry the id
        assert "secret" not in output  # and no prompt
    finally:
        server.stop()


def test_sigterm_aborts_answers_still_running_after_the_grace_period(tmp_path):
    script = write_script(tmp_path, name="fake-model", delay=0.02, replies=[" ".join(["word"] * 1000)])
    server = ProcessServer("--infer_backend", "fake", "--model_name_or_path", script, "--shutdown-grace", "0.5")
    try:
        thread, result = _stream_in_background(server, "hello")
        server.signal(signal.SIGTERM)
        thread.join(timeout=30)
        code, output = server.wait()
        assert code == 0, output
        events = [e["event"] for e in engine_log(script)]
        assert events == ["request", "abort"]
        assert engine_log(script)[-1]["tokens"] < 500
        payloads = sse_data(result["lines"])  # the stream was stopped, and says so before its end
        assert payloads[-1] == "[DONE]" and payloads[-2]["error"]["code"] == "service_unavailable"
        assert "CancelledError" not in output and "Traceback" not in output
    finally:
        server.stop()


def test_startup_errors_are_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lmchat.server", "--infer_backend", "fake", "--model_name_or_path",
         str(tmp_path / "missing.json"), "--port", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert result.returncode == 2
    assert "error: Fake engine script not found" in result.stderr and "Traceback" not in result.stderr
