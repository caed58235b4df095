"""lmchat over vLLM against raw vLLM, side by side in one run: in the library and through the OpenAI server.

Same model, same engine arguments (lmchat's mapping of its config gives the raw engines' arguments too), same
prompts (64 distinct questions, rendered by the model's chat template), greedy, every request asking for exactly
``--new-tokens`` tokens (end of turn ignored or biased away), ``S`` requests arriving at once:

- library (one process, both engines loaded, the paths alternated within each repeat):
  ``vllm.LLM.generate`` (vLLM's offline API, all S prompts in one call), ``AsyncLLM.generate`` streamed
  (vLLM's async engine, driven directly: the same engine instance lmchat holds), and ``ChatModel`` streamed
  (``astream_chunks``: lmchat's facade, template, stop handling and parsing over that engine).
- server (both servers up at once, the load alternated between them): vLLM's own OpenAI server
  (``python -m vllm.entrypoints.openai.api_server``) and ``lmchat serve --infer_backend vllm``, each sent S
  concurrent streamed chat completions through httpx.

Tokens/s = completion tokens of the S requests / wall time from submitting them to the last token; the median over
``--repeats``. Needs vllm (``make setup-vllm``; run with .venv-vllm/bin/python). Example (docs/benchmarks.md)::

    .venv-vllm/bin/python benchmarks/bench_vllm.py --streams 1 16 64 --new-tokens 64 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_support import HOST, PROMPTS, wait_ready  # noqa: E402

NO_END = {2: -100.0, 0: -100.0}  # SmolLM2's <|im_end|> and <|endoftext|>: every path generates --new-tokens tokens


def settings(args: argparse.Namespace) -> dict:
    """lmchat's config for the benchmark; the raw engines get vLLM's arguments from lmchat's own mapping of it.

    The scheduler limits are pinned: vLLM's defaults differ by entry point (on CPU, ``LLM`` batches 4096 tokens
    and 256 sequences a step, its OpenAI server 2048 and 128), and the comparison is of the front ends, not of them.
    """
    engine = {"kv_cache_memory_bytes": args.kv_cache_mb << 20, "max_num_seqs": 128, "max_num_batched_tokens": 2048}
    return {"infer_backend": "vllm", "model_name_or_path": args.model, "infer_dtype": args.dtype, "vllm_maxlen": 2048,
            "vllm_enforce_eager": not args.compile, "vllm_config": engine, "do_sample": False,
            "max_new_tokens": args.new_tokens}


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


def median_rate(runs: list[tuple[int, float]]) -> dict:
    rates = [tokens / seconds for tokens, seconds in runs]
    return {"tokens_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "tokens": runs[0][0]}


# --- library -----------------------------------------------------------------------------------------------
def run_library(args: argparse.Namespace) -> list[dict]:
    from vllm import LLM, TokensPrompt
    from vllm import SamplingParams as VllmSamplingParams
    from vllm.sampling_params import RequestOutputKind

    from lmchat import ChatModel
    from lmchat.config.model_config import ModelConfig
    from lmchat.engines.vllm.sampling import to_vllm_engine_kwargs

    config = settings(args)
    model = ChatModel(config)
    llm = LLM(**to_vllm_engine_kwargs(ModelConfig.from_dict(config), 0))
    prepared = [model.prepare(messages(i), logit_bias=NO_END) for i in range(max(args.streams))]
    prompts = [TokensPrompt(prompt_token_ids=list(p.prompt_token_ids)) for p in prepared]

    def raw_params(kind=RequestOutputKind.CUMULATIVE):
        return VllmSamplingParams(max_tokens=args.new_tokens, temperature=0.0, logit_bias=NO_END, output_kind=kind)

    def offline(streams: int) -> int:
        outputs = llm.generate(prompts[:streams], raw_params(), use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    async def one_async(i: int) -> int:
        tokens = 0
        params = raw_params(RequestOutputKind.DELTA)
        async for output in model.engine.engine.generate(prompts[i], params, uuid.uuid4().hex):
            tokens += len(output.outputs[0].token_ids)
        return tokens

    async def one_lmchat(i: int) -> int:
        tokens = 0
        async for chunk in model.astream_chunks(prepared[i]):
            if chunk.finish_reason is not None:
                tokens = chunk.completion_tokens
        return tokens

    def concurrent(one):
        async def run(streams: int) -> int:
            return sum(await asyncio.gather(*(one(i) for i in range(streams))))
        return lambda streams: model.run_sync(run(streams))

    paths = {"vllm LLM.generate": offline, "vllm AsyncLLM.generate": concurrent(one_async),
             "lmchat ChatModel": concurrent(one_lmchat)}
    try:
        return measure("library", paths, args)
    finally:
        model.close()


def measure(kind: str, paths: dict, args: argparse.Namespace, cpu_of: dict | None = None) -> list[dict]:
    """Each path at each load, one warm-up and then ``repeats`` rounds with the paths alternated.

    ``cpu_of`` (server half): path -> a function giving the CPU seconds its front-end process has used, so the
    front ends' own cost per token is measured whatever else the machine runs.
    """
    rows = []
    for streams in args.streams:
        for run in paths.values():
            run(min(streams, 2))  # warm-up
        runs: dict[str, list[tuple[int, float]]] = {name: [] for name in paths}
        cpu = {name: 0.0 for name in paths}
        for _ in range(args.repeats):
            for name, run in paths.items():
                began, cpu_began = time.perf_counter(), cpu_of[name]() if cpu_of else 0.0
                tokens = run(streams)
                runs[name].append((tokens, time.perf_counter() - began))
                cpu[name] += (cpu_of[name]() - cpu_began) if cpu_of else 0.0
        for name in paths:
            tokens = sum(count for count, _ in runs[name])
            extra = {"front_end_cpu_ms_per_token": 1000 * cpu[name] / tokens} if cpu_of else {}
            rows.append({"kind": kind, "path": name, "streams": streams, **median_rate(runs[name]), **extra})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


# --- server ------------------------------------------------------------------------------------------------
def server_commands(args: argparse.Namespace, ports: tuple[int, int]) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    raw = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", HOST, "--port", str(ports[0]),
           "--model", args.model, "--served-model-name", "m", "--max-model-len", "2048", "--disable-log-stats",
           "--dtype", args.dtype,
           *([] if args.compile else ["--enforce-eager"])]
    config = settings(args)
    for key, value in config["vllm_config"].items():
        raw += [f"--{key.replace('_', '-')}", str(value)]
    ours = [str(bin_dir / "lmchat"), "serve", "--host", HOST, "--port", str(ports[1]), "--served-model-name", "m",
            "--max-concurrent", str(max(args.streams)), "--log-level", "warning"]
    for key, value in config.items():
        ours += [f"--{key}", json.dumps(value) if isinstance(value, (dict, bool)) else str(value)]
    return {"vllm api_server": raw, "lmchat serve": ours}


async def stream_one(client, i: int, new_tokens: int) -> int:
    body = {"model": "m", "messages": messages(i), "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": {str(k): v for k, v in NO_END.items()}}
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                tokens = usage["completion_tokens"] if usage else tokens
    return tokens


def run_server(args: argparse.Namespace) -> list[dict]:
    import httpx

    ports = (int(os.environ.get("BENCH_VLLM_PORT", "18431")), int(os.environ.get("BENCH_LMCHAT_PORT", "18432")))
    commands = server_commands(args, ports)
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for command in commands.values()]
    try:
        urls = [f"http://{HOST}:{port}" for port in ports]
        for url, process in zip(urls, processes):
            wait_ready(url, process)

        def load(url: str):
            async def run(streams: int) -> int:
                limits = httpx.Limits(max_connections=streams + 4)
                async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
                    return sum(await asyncio.gather(*(stream_one(client, i, args.new_tokens) for i in range(streams))))
            return lambda streams: asyncio.run(run(streams))

        import psutil

        def cpu_seconds(pid: int):
            process = psutil.Process(pid)
            return lambda: sum(process.cpu_times()[:2])  # user + system of the server process (not its engine)

        cpu_of = {name: cpu_seconds(process.pid) for name, process in zip(commands, processes)}
        return measure("server", {name: load(url) for name, url in zip(commands, urls)}, args, cpu_of)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


# --- report ------------------------------------------------------------------------------------------------
def report(rows: list[dict], args: argparse.Namespace, load_before: tuple[float, ...]) -> None:
    load = "/".join(f"{value:.1f}" for value in load_before), "/".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average (1/5/15 min) {load[0]} at the start, {load[1]} at the end; {os.cpu_count()} CPUs")
    print(f"model {Path(args.model).name}, {args.new_tokens} new tokens per request, greedy, repeats "
          f"{args.repeats} (median; min-max), {args.dtype}, {'compiled' if args.compile else 'enforce_eager'}")
    print("| kind | path | streams | tokens/s | min-max | vs raw vLLM | front-end CPU ms/token |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        raw = next(r for r in rows if r["kind"] == row["kind"] and r["streams"] == row["streams"]
                   and r["path"] in ("vllm AsyncLLM.generate", "vllm api_server"))
        print(f"| {row['kind']} | {row['path']} | {row['streams']} | {row['tokens_per_s']:.1f} | "
              f"{row['min']:.1f}-{row['max']:.1f} | {100 * row['tokens_per_s'] / raw['tokens_per_s']:.1f} % | "
              f"{row.get('front_end_cpu_ms_per_token', float('nan')):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: lmchat's converted SmolLM2-135M-Instruct)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kv-cache-mb", type=int, default=1024)
    parser.add_argument("--dtype", default="float32",
                        help="weights' dtype for every path (float32: CPUs without bfloat16 units emulate bf16 slowly)")
    parser.add_argument("--compile", action="store_true", help="let vLLM compile (no enforce_eager; ~2 min start)")
    parser.add_argument("--only", choices=("library", "server"), help="run one half")
    args = parser.parse_args()
    if args.model is None:
        from lmchat.models.default import default_model_dir

        args.model = str(default_model_dir())
    rows, load_before = [], os.getloadavg()
    if args.only in (None, "library"):
        rows += run_library(args)
    if args.only in (None, "server"):
        rows += run_server(args)
    report(rows, args, load_before)


if __name__ == "__main__":  # vLLM spawns its engine processes: the guard is required
    main()
