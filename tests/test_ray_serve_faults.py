"""Serving on Ray when clients leave and replicas die, over the scripted fake engine (its log shows every request,
finish and abort): a client that disconnects aborts its generation on the replica, and a replica process killed
mid-request leaves no request hanging (an answer, or a clear error), then Ray Serve brings it back. The deployment
autoscales between two and three replicas."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from ray_support import ServeProcess  # noqa: E402

LONG = " ".join(f"w{i}" for i in range(60))  # echoed back at 0.05 s a word: three seconds an answer
REPLICA_TITLE = "ServeReplica:lmchat:LmchatReplica"


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fake-ray-serve")
    path = folder / "script.json"
    path.write_text(json.dumps({"delay": 0.05, "log": str(folder / "engine-log.jsonl")}))
    return path


@pytest.fixture(scope="module")
def server(ray_cluster, script):
    serve = ServeProcess(ray_cluster, "--min-replicas", "2", "--max-replicas", "3", "--replicas", "2",
                         "--infer_backend", "fake", "--model_name_or_path", str(script)).start()
    yield serve
    assert serve.stop() == 0, serve.log()[-3000:]


def engine_events(script: Path, kind: str) -> list[dict]:
    log = Path(json.loads(script.read_text())["log"])
    lines = log.read_text().splitlines() if log.exists() else []
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def running_replicas() -> int:
    from ray import serve

    status = serve.status().applications["lmchat"].deployments["LmchatReplica"]
    return status.replica_states.get("RUNNING", 0)


def test_autoscaling_keeps_the_lower_bound_and_knows_the_upper(server):
    from ray.serve.context import _get_global_client

    assert running_replicas() == 2
    details = _get_global_client().get_serve_details()["applications"]["lmchat"]["deployments"]["LmchatReplica"]
    autoscaling = details["deployment_config"]["autoscaling_config"]  # what the Serve controller scales by
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"], autoscaling["initial_replicas"]) == (2, 3, 2)


def test_a_client_that_disconnects_mid_stream_aborts_its_generation(server, script):
    body = {"messages": [{"role": "user", "content": LONG}], "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        request_id = json.loads(first[len("data: "):])["id"]
    assert wait_for(lambda: any(event["request_id"].startswith(request_id)
                                for event in engine_events(script, "abort")))
    assert not any(event["request_id"].startswith(request_id) for event in engine_events(script, "finish"))


def test_a_client_that_gives_up_on_a_whole_answer_aborts_it(server, script):
    aborted_before = len(engine_events(script, "abort"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": LONG}]},
                   timeout=httpx.Timeout(60, read=1.0))
    assert wait_for(lambda: len(engine_events(script, "abort")) > aborted_before)


def test_a_killed_replica_leaves_no_request_hanging(server, script, ray_cluster):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="none", timeout=60)  # retries 5xx twice
    outcomes: dict[int, tuple] = {}

    def chat(i: int) -> None:
        began = time.monotonic()
        try:
            if i % 2:
                answer = client.chat.completions.create(model="fake-echo",
                                                        messages=[{"role": "user", "content": LONG}])
                outcomes[i] = ("answer", answer.choices[0].message.content, time.monotonic() - began)
            else:
                stream = client.chat.completions.create(model="fake-echo", stream=True,
                                                        messages=[{"role": "user", "content": LONG}])
                text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
                outcomes[i] = ("answer", text, time.monotonic() - began)
        except openai.APIError as exc:
            outcomes[i] = ("error", f"{type(exc).__name__}: {exc}", time.monotonic() - began)

    requested_before = len(engine_events(script, "request"))
    threads = [threading.Thread(target=chat, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: len(engine_events(script, "request")) >= requested_before + 6)
    time.sleep(0.5)  # every request is generating
    victim = ray_cluster.worker_pids(REPLICA_TITLE)[0]
    os.kill(victim, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=90)
    assert not [thread for thread in threads if thread.is_alive()], outcomes  # nothing hangs
    assert len(outcomes) == 6
    for kind, detail, seconds in outcomes.values():
        assert seconds < 60
        if kind == "answer":
            assert detail == f"You said: {LONG}"
        else:  # a stream cut by the dead replica: the client says so
            assert "Connection error" in detail or "500" in detail or "incomplete" in detail.lower(), detail
    non_streamed = [outcomes[i] for i in range(1, 6, 2)]
    assert all(kind == "answer" for kind, _, _ in non_streamed), outcomes  # retried on the other replica
    hit = [o for o in outcomes.values() if o[0] == "error"]
    retried = len(engine_events(script, "request")) - requested_before - 6
    assert hit or retried, "the killed replica had no request in flight"
    # Ray Serve replaces the replica; the service answers meanwhile and afterwards.
    answer = client.chat.completions.create(model="fake-echo", messages=[{"role": "user", "content": "after"}])
    assert answer.choices[0].message.content == "You said: after"
    assert wait_for(lambda: running_replicas() == 2, timeout=240)
    assert victim not in ray_cluster.worker_pids(REPLICA_TITLE)
