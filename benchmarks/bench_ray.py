"""What the Ray path costs against the local one, on this machine: batch inference (``--executor ray`` vs local)
and serving (``lmchat serve --replicas N`` behind Ray Serve's proxy vs uvicorn in one process).

    python benchmarks/bench_ray.py                        # 48 alpaca prompts, the default model, 200 pings
    python benchmarks/bench_ray.py --rows 16 --pings 50   # a quick look

Batch: the same rows, greedy, ``max_new_tokens`` 32, ``concurrency`` 16 rows in flight per model; local (one
ChatModel in this process), Ray with one replica of 2 CPUs (the same compute as local), Ray with two replicas of 1
CPU. Wall time from the call to the last row, model load included (on Ray also the actors' start; a replica loads
the same model), and the local model load on its own. The answers must be identical.

Serving: a one-word answer from the fake engine (no model time), requests one after another through the openai
client: the latency the Ray Serve HTTP proxy and its hop to the replica add; then the default model, 16 requests
4 at a time.

Ray runs as one local node started here (2 CPUs, 100 MB object store, no dashboard, no auth token written).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local node; Ray would write ~/.ray/auth_token
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from lmchat.batch import Sampler, load_rows  # noqa: E402
from lmchat.batch.ray_executor import RaySampler  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "datasets" / "llamafactory"


def timed(samples) -> tuple[list, float]:
    began = time.perf_counter()
    out = list(samples)
    return out, time.perf_counter() - began


def batch_line(label: str, samples: list, wall: float, local_wall: float | None) -> str:
    tokens = sum(s.completion_tokens for s in samples)
    versus = f"{wall / local_wall:.2f}x" if local_wall else "1.00x"
    return f"| {label} | {wall:.1f} | {versus} | {len(samples) / wall:.2f} | {tokens / wall:.1f} |"


def bench_batch(config: dict, rows, concurrency: int) -> list[str]:
    lines = ["| batch run | wall (s) | vs local | rows/s | tokens/s |", "|---|---|---|---|---|"]
    began = time.perf_counter()
    with Sampler(config, concurrency=concurrency) as sampler:
        load = time.perf_counter() - began
        local, answering = timed(sampler.stream_samples(rows))
    local_wall = load + answering
    lines.append(batch_line(f"local, this process (model load {load:.1f} s)", local, local_wall, None))
    expected = {s.id: s.predict for s in local}
    for replicas, cpus in ((1, 2.0), (2, 1.0)):
        sampler = RaySampler(config, replicas=replicas, cpus_per_replica=cpus, concurrency=concurrency)
        samples, wall = timed(sampler.stream_samples(rows))
        same = sum(expected[s.id] == s.predict for s in samples)
        lines.append(batch_line(f"Ray Data, {replicas} replica(s) x {cpus:g} CPU ({same}/{len(rows)} answers "
                                "identical)", samples, wall, local_wall))
    return lines


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(flags: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lmchat.server", "--port", str(port), "--log-level",
                                "warning", *flags], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 1800  # a loaded 2-core machine can take minutes to load a model
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server failed:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).is_success:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")


def latencies(base_url: str, count: int, content: str, max_tokens: int, parallel: int = 1) -> list[float]:
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=300)

    def one(_: int) -> float:
        began = time.perf_counter()
        client.chat.completions.create(model="m",
                                       messages=[{"role": "user", "content": content}], max_tokens=max_tokens)
        return time.perf_counter() - began

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(count)))


def serve_line(label: str, times: list[float], wall: float | None = None) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    extra = f" | {len(times) / wall:.2f}" if wall else " | "
    return f"| {label} | {statistics.median(times) * 1000:.1f} | {p95 * 1000:.1f}{extra} |"


def bench_serving(model_flags: list[str], address: str, pings: int, folder: Path) -> list[str]:
    script = folder / "fake.json"
    script.write_text(json.dumps({"name": "m", "replies": ["pong"]}))
    fake = ["--served-model-name", "m", "--infer_backend", "fake", "--model_name_or_path", str(script)]
    real = ["--served-model-name", "m", *model_flags]
    ray = ["--ray-address", address, "--replicas", "1", "--cpus-per-replica", "2"]
    lines = ["| serving | p50 (ms) | p95 (ms) | requests/s |", "|---|---|---|---|"]
    for label, flags, count, tokens, parallel in (
        ("fake engine, one at a time", fake, pings, 1, 1),
        ("default model, 16 x 16 tokens, 4 at a time", real, 16, 16, 4),
    ):
        for where, extra in (("uvicorn, one process", []), ("Ray Serve, 1 replica", ray)):
            process, url = start_server([*extra, *flags], folder / f"{where[:3]}-{count}.log")
            try:
                latencies(url, 3, "warm up", tokens)
                began = time.perf_counter()
                times = latencies(url, count, "Name a colour.", tokens, parallel)
                lines.append(serve_line(f"{label}: {where}", times, time.perf_counter() - began))
            finally:
                process.send_signal(2)
                process.wait(timeout=180)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, logging_level="ERROR")
    address = ray.get_runtime_context().gcs_address
    config = {"do_sample": False, "max_new_tokens": 32}
    model_flags = ["--do_sample", "false"]
    if args.model_name_or_path:
        config["model_name_or_path"] = args.model_name_or_path
        model_flags += ["--model_name_or_path", args.model_name_or_path]
    rows = load_rows(["alpaca_en_demo"], DATA, max_samples=args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder:
        print(f"{len(rows)} alpaca prompts, max_new_tokens 32, greedy, concurrency {args.concurrency}; "
              f"load average {os.getloadavg()[0]:.1f}")
        print("\n".join(bench_batch(config, rows, args.concurrency)))
        print()
        print("\n".join(bench_serving(model_flags, address, args.pings, Path(folder))))
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
