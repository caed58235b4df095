"""Faults, deadlines, admission and shutdown over a real server with the fake engine: a dead engine makes /health
503 and requests fail at once (the process exits 1); a request past --request-timeout is stopped at the engine
with a timeout error; admission counts sequences, not HTTP requests, and Retry-After follows the throughput;
after the shutdown grace every open stream gets an error event and [DONE]."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest
from test_server_support import (
    ProcessServer,
    ThreadServer,
    assert_error,
    engine_log,
    httpx,
    sse_data,
    stream_post,
    wait_for,
    write_script,
)

from lmchat.errors import EngineClosedError, QueueFullError
from lmchat.server import admission as admission_module
from lmchat.server.admission import Admission

LONG = " ".join(["word"] * 1000)


def _chat(text: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": text}], **extra}


# --- a dead engine ---------------------------------------------------------------------------------------
def test_a_dead_engine_makes_health_503_and_requests_fail_at_once(tmp_path):
    script = write_script(tmp_path, name="fake-model", replies=[{"match": "kill-engine", "die": True}, "fine"])
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}) as server, server.http() as http:
        assert http.get("/health").status_code == 200
        assert_error(http.post("/v1/chat/completions", json=_chat("kill-engine")), 503, code="service_unavailable")
        error = assert_error(http.get("/health"), 503, code="service_unavailable")
        assert "restart lmchat" in error["message"]
        began = time.monotonic()
        for path, body in (("/v1/chat/completions", _chat("hello")), ("/v1/completions", {"prompt": "hi"})):
            assert_error(http.post(path, json=body), 503)
            response, _ = stream_post(http, path, {**body, "stream": True})
            assert response.status_code == 503
        assert time.monotonic() - began < 5
        assert server.app.state.lmchat.admission.running == 0


def test_the_server_process_exits_1_when_its_engine_dies(tmp_path):
    script = write_script(tmp_path, name="fake-model", replies=[{"match": "kill-engine", "die": True}, "fine"])
    server = ProcessServer("--infer_backend", "fake", "--model_name_or_path", script, "--shutdown-grace", "5")
    try:
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=_chat("kill-engine"), timeout=30)
        assert response.status_code == 503
        code, output = server.wait(timeout=30)
        assert code == 1, output
        assert "Exiting with status 1 so that a supervisor can restart lmchat" in output
        assert "Traceback" not in output
    finally:
        server.stop()


# --- deadlines -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    script = write_script(tmp_path_factory.mktemp("slow"), name="fake-model", delay=0.02, replies=[LONG])
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, request_timeout=0.6) as live:
        live.script = script
        yield live


def test_a_request_past_its_deadline_is_stopped_with_a_timeout_error(slow_server):
    with slow_server.http() as http:
        began = time.monotonic()
        error = assert_error(http.post("/v1/chat/completions", json=_chat("go")), 408, code="request_timeout")
        assert "--request-timeout" in error["message"] and time.monotonic() - began < 5
        response, events = stream_post(http, "/v1/chat/completions", _chat("go", stream=True))
        assert response.status_code == 200 and events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "request_timeout"
        assert 1 <= sum(1 for event in events if isinstance(event, dict) and "choices" in event) < 300
    log = engine_log(slow_server.script)
    assert [event["event"] for event in log] == ["request", "abort", "request", "abort"]
    assert all(event["tokens"] < 300 for event in log if event["event"] == "abort")
    assert slow_server.app.state.lmchat.admission.running == 0


def test_the_deadline_counts_the_time_spent_waiting(tmp_path):
    script = write_script(tmp_path, name="fake-model", delay=0.02, replies=[LONG])
    settings = {"request_timeout": 0.6, "max_concurrent": 1}
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, **settings) as server:
        with server.http() as first, first.stream("POST", "/v1/chat/completions", json=_chat("a", stream=True)):
            with server.http() as second:
                assert_error(second.post("/v1/chat/completions", json=_chat("b")), 408, code="request_timeout")
        assert server.app.state.lmchat.admission.waiting == 0


# --- admission -------------------------------------------------------------------------------------------
def test_admission_counts_sequences_so_n_128_is_128(tmp_path):
    script = write_script(tmp_path, name="fake-model", delay=0.02, replies=[LONG], capacity={"max_sequences": 8})
    with ThreadServer({"infer_backend": "fake", "model_name_or_path": script}, max_queue=8) as server:
        state = server.app.state.lmchat
        assert (state.admission.max_sequences, state.admission.max_waiting) == (8, 8)
        with server.http() as http, http.stream("POST", "/v1/chat/completions",
                                                 json=_chat("big", n=128, stream=True, max_tokens=200)) as big:
            assert big.status_code == 200 and state.admission.running_sequences == 128  # alone, larger than all
            result = {}
            thread = threading.Thread(target=lambda: result.setdefault(
                "small", server.http().post("/v1/chat/completions", json=_chat("small", max_tokens=2))))
            thread.start()
            wait_for(lambda: state.admission.waiting == 1)  # it waits for room; it is not refused
            refused = http.post("/v1/chat/completions", json=_chat("n8", n=8, max_tokens=2))
            assert_error(refused, 429, code="rate_limit_exceeded")
            assert "needs 8" in refused.json()["error"]["message"]
        thread.join(timeout=30)
        assert result["small"].status_code == 200
        assert (state.admission.running_sequences, state.admission.waiting_sequences) == (0, 0)


def _lease_times(monkeypatch, start: float = 1000.0):
    clock = {"now": start}
    monkeypatch.setattr(admission_module.time, "monotonic", lambda: clock["now"])
    return clock


def test_retry_after_follows_recent_throughput(monkeypatch):
    clock = _lease_times(monkeypatch)

    async def scenario():
        admission = Admission(max_sequences=4, max_waiting=4)
        assert admission.retry_after(8) == 2  # no history: one second per full batch
        for _ in range(10):  # 10 sequences finish over 5 seconds: 2 per second
            lease = await admission.acquire(1)
            clock["now"] += 0.5
            lease.release()
        assert admission.retry_after(1) == 1 and admission.retry_after(20) == 9  # 10 finished in 4.5 s
        running = [await admission.acquire(2), await admission.acquire(2)]
        waiting = [asyncio.ensure_future(admission.acquire(2)) for _ in range(2)]
        await asyncio.sleep(0)
        assert (admission.running_sequences, admission.waiting_sequences) == (4, 4)
        with pytest.raises(QueueFullError) as refused:
            await admission.acquire(4)
        assert refused.value.retry_after == admission.retry_after(4) == 2
        running[0].release()
        await asyncio.sleep(0)
        assert waiting[0].done() and not waiting[1].done()  # first come, first served
        waiting[1].cancel()
        admission.close(EngineClosedError("closing"))
        with pytest.raises(EngineClosedError):
            await admission.acquire(1)

    asyncio.run(scenario())


def test_admission_by_kv_tokens():
    async def scenario():
        admission = Admission(max_sequences=100, max_waiting=10, kv_cache_tokens=1000)
        first = await admission.acquire(1, 600)
        second = asyncio.ensure_future(admission.acquire(1, 600))
        await asyncio.sleep(0)
        assert not second.done() and admission.waiting == 1
        first.release()
        await asyncio.sleep(0)
        assert second.done() and admission.reserved_tokens == 600
        huge = asyncio.ensure_future(admission.acquire(4, 10**9))  # capped at the whole cache per sequence
        await asyncio.sleep(0)
        second.result().release()
        await asyncio.sleep(0)
        assert huge.done() and admission.reserved_tokens == 4000

    asyncio.run(scenario())


# --- shutdown --------------------------------------------------------------------------------------------
def test_after_the_grace_period_every_stream_gets_an_error_event_and_done(tmp_path):
    script = write_script(tmp_path, name="fake-model", delay=0.02, replies=[LONG])
    server = ProcessServer("--infer_backend", "fake", "--model_name_or_path", script, "--shutdown-grace", "0.5")
    results: list[dict] = [{"lines": []} for _ in range(4)]

    def read(result: dict) -> None:
        try:
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=_chat("go", stream=True),
                              timeout=30) as response:
                for line in response.iter_lines():
                    result["lines"].append(line)
        except httpx.HTTPError as exc:
            result["error"] = exc

    try:
        threads = [threading.Thread(target=read, args=(result,)) for result in results]
        for thread in threads:
            thread.start()
        wait_for(lambda: all(len(result["lines"]) >= 6 for result in results))
        server.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
        code, output = server.wait()
        assert code == 0, output
        for result in results:
            assert "error" not in result, result.get("error")
            events = sse_data(result["lines"])
            assert events[-1] == "[DONE]" and "shutting down" in events[-2]["error"]["message"]
        assert [e["event"] for e in engine_log(script)].count("abort") == 4
        assert "CancelledError" not in output and "Traceback" not in output and "Cancel " not in output
    finally:
        server.stop()


# --- the event loop ------------------------------------------------------------------------------------------
def test_health_answers_fast_while_a_15_mib_request_is_rendered_and_tokenized(tmp_path):
    """Rendering and tokenizing run off the event loop: the fake engine tokenizes the 15 MiB prompt in pure Python
    (seconds, no length shortcut), and /health keeps answering meanwhile; the request ends as a 400."""
    script = write_script(tmp_path, name="fake-model", context_length=4096)
    server = ProcessServer("--infer_backend", "fake", "--model_name_or_path", script)
    huge = _chat("a " * (15 * 1024 * 1024 // 2))
    result: dict = {}

    def send() -> None:
        result["response"] = httpx.post(f"{server.base_url}/v1/chat/completions", json=huge, timeout=120)

    try:
        thread = threading.Thread(target=send)
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            http.get("/health")  # the connection is open before the big request starts
            thread.start()
            latencies = []
            while thread.is_alive():
                began = time.monotonic()
                assert http.get("/health").status_code == 200
                latencies.append(time.monotonic() - began)
                time.sleep(0.02)
        thread.join()
        assert_error(result["response"], 400, code="context_length_exceeded")
        assert len(latencies) >= 10, latencies  # the request really was in work while /health was asked
        latencies.sort()
        print(f"/health during a 15 MiB request: {len(latencies)} calls, p50 {latencies[len(latencies) // 2]:.3f} s, "
              f"max {latencies[-1]:.3f} s")
        # the median is the 100 ms; single calls wait for the GIL on a loaded machine, but never for the
        # whole request (tokenizing on the loop would stall /health for all of its ~10-30 s)
        assert latencies[len(latencies) // 2] < 0.1 and latencies[-1] < 5.0, latencies[-5:]
    finally:
        server.stop()
