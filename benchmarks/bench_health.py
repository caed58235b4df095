"""How fast ``/health`` answers while the server works on something heavy (issue 15: < 100 ms while a 15 MiB
request is processed), beside the same server idle.

``lmchat serve`` runs in its own process on loopback. One client polls ``/health`` every 20 ms over a kept-open
connection while, in phases:

- ``idle``: nothing else;
- ``15 MiB request``: a chat completion whose message is 15 MiB of text is sent, over and over (the server reads,
  parses and validates the body, renders and tokenizes it off the event loop, and refuses it: longer than the
  context), ``--huge-requests`` times;
- ``16 streams`` (``--model default``): 16 streamed answers of the default model at once, the engine busy.

Prints the calls, p50, p99 and max latency of ``/health`` in each phase.

    python benchmarks/bench_health.py                    # the fake engine (the tokenizing is pure Python: seconds)
    python benchmarks/bench_health.py --model default    # the default model on the transformers engine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_support import HOST, free_port, wait_ready  # noqa: E402

MODEL = ""  # the served model's name, read from /v1/models once the server is up


def start_server(model: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [str(Path(sys.executable).with_name("lmchat")), "serve", "--host", HOST, "--port", str(port),
               "--log-level", "warning"]
    if model == "fake":
        script = folder / "script.json"
        script.write_text(json.dumps({"name": "fake-model", "context_length": 4096}))
        command += ["--infer_backend", "fake", "--model_name_or_path", str(script)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    wait_ready(url, process, timeout=600)
    global MODEL
    MODEL = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    return process, url


def poll_health(url: str, busy: threading.Event, done: threading.Event) -> list[float]:
    """/health latencies while ``busy`` is set, until ``done``."""
    latencies = []
    with httpx.Client(base_url=url, timeout=120) as http:
        http.get("/health")
        while not done.is_set():
            if busy.is_set():
                began = time.perf_counter()
                status = http.get("/health").status_code
                latencies.append(time.perf_counter() - began)
                if status != 200:
                    raise SystemExit(f"/health said {status}")
            time.sleep(0.02)
    return latencies


def phase(url: str, work) -> list[float]:
    busy, done, result = threading.Event(), threading.Event(), {}
    poller = threading.Thread(target=lambda: result.setdefault("latencies", poll_health(url, busy, done)))
    poller.start()
    busy.set()
    try:
        work()
    finally:
        busy.clear()
        done.set()
        poller.join()
    return result["latencies"]


def huge_requests(url: str, count: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "a " * (15 * 1024 * 1024 // 2)}],
            "max_tokens": 4}
    payload = json.dumps(body).encode()
    for _ in range(count):
        response = httpx.post(f"{url}/v1/chat/completions", content=payload, timeout=300,
                              headers={"Content-Type": "application/json"})
        if response.status_code != 400:
            raise SystemExit(f"the 15 MiB request got {response.status_code}, not 400: {response.text[:300]}")


def streams(url: str, count: int) -> None:
    def one(i: int) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Tell me a story about the number {i}."}],
                "max_tokens": 64, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
            for _ in response.iter_lines():
                pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def row(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"| {name} | {len(ordered)} | {1000 * statistics.median(ordered):.1f} | {1000 * p99:.1f} | "
            f"{1000 * ordered[-1]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("fake", "default"), default="fake")
    parser.add_argument("--huge-requests", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(args.model, Path(folder))
        try:
            phases = {"idle": phase(url, lambda: time.sleep(args.idle_seconds)),
                      "15 MiB request": phase(url, lambda: huge_requests(url, args.huge_requests))}
            if args.model == "default":
                phases["16 streams"] = phase(url, lambda: streams(url, 16))
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"model {args.model}; load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"{os.cpu_count()} CPUs")
    print("| phase | /health calls | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, latencies in phases.items():
        print(row(name, latencies))


if __name__ == "__main__":
    main()
