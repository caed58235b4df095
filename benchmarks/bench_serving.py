"""Serving side by side: lmchat (library and server, each engine) against llama.cpp's own ``llama-server`` (and
vLLM's OpenAI server on CPU when given), at 1, 16 and 64 concurrent streams, in one run.

The table of issue 23 (one stream >= llama-server; 16 streams >= 2x the best peer; 64 streams >= 2x vLLM CPU and
>= 400 tok/s; the server within 5 % of the library at 1 and 16 streams; TTFT p50 at 16 streams <= 1 s) and of
issue 15 (the library vs the server vs the peer at 64 streams).

Every contender gets the same 64 distinct questions (rendered by the model's chat template), greedy, and must
generate exactly ``--new-tokens`` tokens per request (``ignore_eos``); all S requests arrive at once. Tokens/s =
completion tokens of the S requests / wall time from sending them to the last token; TTFT = time to the first
streamed token of each request (p50 over the S requests). Contenders run one at a time (a server is started,
warmed up, measured at every stream count, and stopped), so none competes with another for the cores; each figure
is the median of ``--repeats`` rounds. ``--interleave`` starts them all first and runs their rounds in turn instead:
on a VM whose speed drifts (other tenants), ratios such as server / library then compare rounds taken side by side.

Contenders (``--only`` picks some):
- ``lmchat library hf`` / ``lmchat library llamacpp``: ``ChatModel.astream_chunks`` on S prepared chats at once,
  in a subprocess of its own (the transformers engine on the converted checkpoint; the llama.cpp engine on the GGUF)
- ``lmchat serve hf`` / ``lmchat serve llamacpp``: ``lmchat serve`` on loopback, S streamed chat completions
- ``... hf-int8`` / ``... hf-int4``: the transformers engine with ``quantization_bit: 8`` / ``4`` (weight-only)
- ``llama-server``: llama.cpp's server built from the llama.cpp that llama-cpp-python vendors
  (``sh tools/llama-server-build.sh``), the same GGUF, ``--parallel`` slots for the largest S, flash attention
  and q8_0 K/V like lmchat's llama.cpp engine, the same thread count
- ``vllm serve`` (``--vllm-python .venv-vllm/bin/python``): vLLM's OpenAI server on the converted checkpoint

    python benchmarks/bench_serving.py --llama-server "$(sh tools/llama-server-build.sh)"   # all: on an AMX CPU
    python benchmarks/bench_serving.py --streams 1 16 --new-tokens 32 --repeats 1 --only "lmchat serve hf"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_support import HOST, PROMPTS, free_port, wait_ready  # noqa: E402

CONTENDERS = ("lmchat library hf", "lmchat serve hf", "lmchat library hf-int8", "lmchat serve hf-int8",
              "lmchat library hf-int4", "lmchat serve hf-int4", "lmchat library llamacpp", "lmchat serve llamacpp",
              "llama-server", "vllm serve")


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def summary(runs: list[tuple]) -> dict:
    """runs: (tokens, seconds, per-request TTFTs[, the client's CPU ms per token]) per round -> the medians."""
    rates = [run[0] / run[1] for run in runs]
    row = {"tokens_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "tokens": runs[0][0],
           "ttft_p50": statistics.median(statistics.median(run[2]) for run in runs)}
    if len(runs[0]) > 3:
        row["client_cpu_ms_per_token"] = statistics.median(run[3] for run in runs)
    return row


def measure(run_streams, args: argparse.Namespace) -> dict[int, dict]:
    """One warm-up, then ``repeats`` rounds at each stream count; run_streams(S) -> (tokens, seconds, ttfts)."""
    run_streams(2)
    return {streams: summary([run_streams(streams) for _ in range(args.repeats)]) for streams in args.streams}


# --- the library, in a subprocess of its own ---------------------------------------------------------------
LIBRARY = r"""
import asyncio, json, sys, time
from lmchat import ChatModel
args = json.loads(sys.argv[1])
model = ChatModel(args["config"])
prompts = [[{"role": "user", "content": p}] for p in args["prompts"]]
prepared = [model.prepare(m, ignore_eos=True) for m in prompts]

async def one(i, began):
    ttft, tokens = None, 0
    async for chunk in model.astream_chunks(prepared[i % len(prepared)]):
        if ttft is None and chunk.text:
            ttft = time.perf_counter() - began
        if chunk.finish_reason is not None:
            tokens = chunk.completion_tokens
    return tokens, ttft

async def round_(streams):
    began = time.perf_counter()
    done = await asyncio.gather(*(one(i, began) for i in range(streams)))
    return sum(t for t, _ in done), time.perf_counter() - began, [f for _, f in done]

for line in sys.stdin:
    print(json.dumps(model.run_sync(round_(int(line)))), flush=True)
model.close()
"""


class Library:
    """A ChatModel in a subprocess, driven one round at a time over its stdin/stdout."""

    def __init__(self, config: dict) -> None:
        payload = json.dumps({"config": config, "prompts": PROMPTS})
        self.process = subprocess.Popen([sys.executable, "-c", LIBRARY, payload], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def __call__(self, streams: int) -> tuple[int, float, list[float]]:
        self.process.stdin.write(f"{streams}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the library subprocess exited ({self.process.wait()})")
        return tuple(json.loads(line))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


# --- servers -----------------------------------------------------------------------------------------------
# The load generator runs on the same cores as the server, so its own CPU per token is taken from the contender:
# aiohttp's line reader (what vLLM's serving benchmark uses) costs a third of httpx's aiter_lines per streamed
# token (``--client httpx`` keeps the old one; each round reports the client's CPU ms per token).
def request_body(i: int, new_tokens: int) -> dict:
    return {"model": "m", "messages": messages(i), "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}


class StreamCount:
    """One streamed response's completion tokens (usage, else content chunks) and time to its first content."""

    def __init__(self, began: float) -> None:
        self.began, self.tokens, self.chunks, self.ttft = began, 0, 0, None

    def line(self, line: bytes | str) -> None:
        if not line.startswith(b"data: {" if isinstance(line, bytes) else "data: {"):
            return
        event = json.loads(line[6:])
        if event.get("usage"):
            self.tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                self.chunks += 1
                self.ttft = self.ttft if self.ttft is not None else time.perf_counter() - self.began

    def result(self) -> tuple[int, float | None]:
        return self.tokens or self.chunks, self.ttft


async def stream_httpx(client, url: str, i: int, new_tokens: int, began: float) -> tuple[int, float | None]:
    count = StreamCount(began)
    async with client.stream("POST", f"{url}/v1/chat/completions", json=request_body(i, new_tokens)) as response:
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code}: {(await response.aread()).decode()[:400]}")
        async for line in response.aiter_lines():
            count.line(line)
    return count.result()


async def stream_aiohttp(session, url: str, i: int, new_tokens: int, began: float) -> tuple[int, float | None]:
    count = StreamCount(began)
    async with session.post(f"{url}/v1/chat/completions", json=request_body(i, new_tokens)) as response:
        if response.status != 200:
            raise SystemExit(f"{response.status}: {(await response.read()).decode()[:400]}")
        async for line in response.content:
            count.line(line)
    return count.result()


def client_session(kind: str, streams: int):
    if kind == "httpx":
        import httpx

        return httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=streams + 4)), stream_httpx
    import aiohttp

    connector = aiohttp.TCPConnector(limit=streams + 4)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=900)), stream_aiohttp


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_load(url: str, new_tokens: int, kind: str = "aiohttp"):
    async def run(streams: int) -> tuple[int, float, list[float], float]:
        session, stream_one = client_session(kind, streams)
        async with session:
            cpu, began = client_cpu(), time.perf_counter()
            done = await asyncio.gather(*(stream_one(session, url, i, new_tokens, began) for i in range(streams)))
            seconds, tokens = time.perf_counter() - began, sum(t for t, _ in done)
            return tokens, seconds, [f for _, f in done], 1e3 * (client_cpu() - cpu) / max(tokens, 1)

    return lambda streams: asyncio.run(run(streams))


def server_command(name: str, args: argparse.Namespace, port: int) -> list[str]:
    most = max(args.streams)
    if name.startswith("lmchat serve"):
        engine = name.split()[-1]
        command = [str(Path(sys.executable).with_name("lmchat")), "serve", "--host", HOST, "--port", str(port),
                   "--served-model-name", "m", "--max-concurrent", str(most), "--log-level", "warning"]
        for key, value in engine_config(engine, args).items():
            command += [f"--{key}", str(value)]
        return command
    if name == "llama-server":
        # llama-server splits -c over its slots: each of the S slots gets the context lmchat's requests need
        return [args.llama_server, "-m", str(gguf_path()), "--host", HOST, "--port", str(port), "--parallel",
                str(most), "-c", str(most * 512), "-t", str(args.threads), "-tb", str(args.threads),
                "-fa", "on", "-ctk", "q8_0", "-ctv", "q8_0", "--no-webui", "-a", "m"]
    if name == "vllm serve":
        return [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--host", HOST, "--port", str(port),
                "--model", str(checkpoint_dir()), "--served-model-name", "m", "--max-model-len", "2048",
                "--dtype", "float32", "--enforce-eager", "--max-num-seqs", str(max(most, 16)),
                "--disable-log-stats"]
    raise ValueError(name)


class Server:
    """A server contender, started on a free loopback port; called with S, one round of S streams."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        if name == "vllm serve":
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        self.process = subprocess.Popen(server_command(name, args, port), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env=env)
        url = f"http://{HOST}:{port}"
        try:
            wait_ready(url, self.process)
        except BaseException:
            self.close()
            raise
        self.load = server_load(url, args.new_tokens, args.client)

    def __call__(self, streams: int) -> tuple:
        return self.load(streams)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def start(name: str, args: argparse.Namespace):
    if " library " in name:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        return Library(engine_config(name.split()[-1], args))
    return Server(name, args)


def run_each(chosen: list[str], args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    """One contender at a time: started, warmed up, every round at every stream count, stopped."""
    results = {}
    for name in chosen:
        contender = start(name, args)
        try:
            results[name] = measure(contender, args)
        finally:
            contender.close()
        for streams, row in results[name].items():
            print(json.dumps({"contender": name, "streams": streams, **row}), file=sys.stderr, flush=True)
    return results


def run_interleaved(chosen: list[str], args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    """All contenders started (and warmed up) at once, then each round runs every contender in turn, so that a
    change of the machine's speed during the run (other tenants of a VM) falls on all of them alike: for ratios such
    as server / library. The idle contenders hold their memory (and, for a polling server, some CPU)."""
    contenders: dict = {}
    try:
        for name in chosen:
            contenders[name] = start(name, args)
            contenders[name](2)
        runs: dict = {name: {streams: [] for streams in args.streams} for name in chosen}
        for _ in range(args.repeats):
            for streams in args.streams:
                for name, contender in contenders.items():
                    runs[name][streams].append(contender(streams))
        return {name: {streams: summary(rounds) for streams, rounds in by.items()} for name, by in runs.items()}
    finally:
        for contender in contenders.values():
            contender.close()


# --- models ------------------------------------------------------------------------------------------------
def gguf_path() -> Path:
    from lmchat.models.default import default_gguf_path

    return default_gguf_path()


def checkpoint_dir() -> Path:
    from lmchat.models.default import default_model_dir

    return default_model_dir()


def engine_config(contender: str, args: argparse.Namespace) -> dict:
    """The same sampling for every lmchat contender: greedy, exactly --new-tokens tokens (``hf``: the transformers
    engine in float32; ``hf-int8``: with quantization_bit 8)."""
    engine, _, bits = contender.partition("-int")
    config = {"infer_backend": engine, "do_sample": False, "max_new_tokens": args.new_tokens}
    if engine == "hf":
        config["max_batch_size"] = max(args.streams)
    if engine == "hf":  # plain "hf" is float32 (the default model alone would keep its GGUF's 4 bits)
        config["quantization_bit"] = int(bits) if bits else None
    return config


# --- report ------------------------------------------------------------------------------------------------
def report(results: dict[str, dict[int, dict]], args: argparse.Namespace, load_before: tuple[float, ...]) -> None:
    load = ["/".join(f"{value:.1f}" for value in values) for values in (load_before, os.getloadavg())]
    print(f"load average (1/5/15 min) {load[0]} at the start, {load[1]} at the end; {os.cpu_count()} CPUs, "
          f"{args.threads} threads per contender; {args.new_tokens} new tokens per request, greedy, ignore_eos; "
          f"median of {args.repeats}")
    print(f"load generator: {args.client} on the same cores (its CPU ms per streamed token in the last column)")
    print("| contender | streams | tokens/s | min-max | TTFT p50 s | vs llama-server | server / library "
          "| client ms/token |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, by_streams in results.items():
        for streams, row in by_streams.items():
            peer = results.get("llama-server", {}).get(streams)
            versus = f"{100 * row['tokens_per_s'] / peer['tokens_per_s']:.0f} %" if peer else ""
            library = results.get(name.replace("serve", "library"), {}).get(streams) if "serve" in name else None
            ratio = f"{100 * row['tokens_per_s'] / library['tokens_per_s']:.0f} %" if library else ""
            client = f"{row['client_cpu_ms_per_token']:.2f}" if "client_cpu_ms_per_token" in row else ""
            print(f"| {name} | {streams} | {row['tokens_per_s']:.1f} | {row['min']:.1f}-{row['max']:.1f} | "
                  f"{row['ttft_p50']:.2f} | {versus} | {ratio} | {client} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--llama-server", help="path of a llama-server binary (tools/llama-server-build.sh)")
    parser.add_argument("--vllm-python", help="a Python with vLLM (e.g. .venv-vllm/bin/python) for 'vllm serve'")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp",
                        help="the load generator's HTTP client (its CPU per token is reported)")
    parser.add_argument("--interleave", action="store_true",
                        help="start every contender first and run their rounds in turn (for ratios on a noisy VM)")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, help="run these contenders only")
    args = parser.parse_args()
    chosen = [name for name in args.only or CONTENDERS
              if (name != "llama-server" or args.llama_server) and (name != "vllm serve" or args.vllm_python)]
    load_before = os.getloadavg()
    results = (run_interleaved if args.interleave else run_each)(chosen, args)
    report(results, args, load_before)


if __name__ == "__main__":
    main()
