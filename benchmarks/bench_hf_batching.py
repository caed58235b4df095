"""Continuous batching benchmark: lmchat's transformers engine against the LLaMA-Factory way, side by side.

Every configuration runs in a fresh subprocess (so peak memory is its own), on the same model and prompts, each
request asking for exactly ``--new-tokens`` tokens (end-of-sequence ignored), all requests arriving at once:

- ``generate``: plain ``model.generate`` for one request (no streamer): the single-stream reference.
- ``llamafactory``: LLaMA-Factory's HuggingfaceEngine: one ``model.generate`` at a time (a lock), each on its own
  thread with a ``TextIteratorStreamer`` that the client reads.
- ``lmchat``: lmchat's engine (continuous batching), streams driven concurrently through ``engine.generate``.
- ``lmchat-python`` (``--python-forward``): the same with ``native_decode: off`` (every step in the Python lean
  forward), to show what the native one-token step adds.
- ``transformers-cb`` (``--transformers-cb``): transformers' own ``generate_batch`` (paged continuous batching).

Example (the command behind docs/benchmarks.md)::

    python benchmarks/bench_hf_batching.py --streams 1 4 16 64 --baseline-streams 1 16 --python-forward 1 4 --transformers-cb 16
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_support import PROMPTS  # noqa: E402

DEVICE = "cpu"  # --device; "cuda" on a GPU machine (the native step is CPU-only: lmchat then runs the lean forward)


# --- measurements ----------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def summarise(name: str, streams: int, start: float, token_times: list[list[float]], extra: dict) -> dict:
    """token_times: per request, the wall-clock time of each generated token (all requests submitted at start)."""
    tokens = sum(len(times) for times in token_times)
    end = max(times[-1] for times in token_times)
    ttft = [times[0] - start for times in token_times]
    itl = [b - a for times in token_times for a, b in itertools.pairwise(times)]
    return {"engine": name, "streams": streams, "tokens": tokens, "tokens_per_s": tokens / (end - start),
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "itl_p50": percentile(itl, 50) if itl else None, "itl_p99": percentile(itl, 99) if itl else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def load_hf(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().to(DEVICE)
    return model, tokenizer


def prompt_ids(tokenizer, count: int) -> list[list[int]]:
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                              tokenize=False) for p in PROMPTS[:count]]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in rendered]


# --- engines ---------------------------------------------------------------------------------------------
def run_generate(model_dir: str, streams: int, new_tokens: int) -> dict:
    import torch

    model, tokenizer = load_hf(model_dir)
    [ids] = prompt_ids(tokenizer, 1)
    inputs = torch.tensor([ids], device=DEVICE)
    model.generate(inputs, max_new_tokens=4, do_sample=False)  # warm-up
    start = time.perf_counter()
    output = model.generate(inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    tokens = output.shape[1] - len(ids)
    return {"engine": "transformers generate", "streams": 1, "tokens": tokens, "tokens_per_s": tokens / elapsed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_llamafactory(model_dir: str, streams: int, new_tokens: int) -> dict:
    """LLaMA-Factory's HuggingfaceEngine.stream_chat: a lock around generate, a streamer thread per request."""
    import torch
    from transformers import TextIteratorStreamer

    model, tokenizer = load_hf(model_dir)
    all_ids = prompt_ids(tokenizer, streams)
    # Warm up on a thread of its own, like every request: torch work left on a long-lived thread would slow the
    # generate threads (libgomp stops spin-waiting when more OpenMP threads than cores exist; see the design note).
    warm_up = threading.Thread(target=model.generate, args=(torch.tensor([all_ids[0]], device=DEVICE),),
                               kwargs={"max_new_tokens": 4, "do_sample": False})
    warm_up.start()
    warm_up.join()
    lock = threading.Lock()  # LLaMA-Factory's semaphore with max_concurrent=1
    token_times: list[list[float]] = [[] for _ in all_ids]

    class TimedStreamer(TextIteratorStreamer):
        def __init__(self, times):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.times = times

        def put(self, value):
            if not self.next_tokens_are_prompt:
                self.times.append(time.perf_counter())
            super().put(value)

    def client(i: int) -> None:
        with lock:
            streamer = TimedStreamer(token_times[i])
            kwargs = {"inputs": torch.tensor([all_ids[i]], device=DEVICE), "streamer": streamer, "max_new_tokens": new_tokens,
                          "min_new_tokens": new_tokens, "do_sample": False}
            thread = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
            thread.start()
            "".join(streamer)  # the client reads the stream
            thread.join()

    start = time.perf_counter()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(streams)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    return summarise("LLaMA-Factory (generate + streamer, one at a time)", streams, start, token_times, {})


def run_lmchat(model_dir: str, streams: int, new_tokens: int, native_decode: str = "on") -> dict:
    from lmchat import ChatModel
    from lmchat.config.model_config import ModelConfig
    from lmchat.engines.events import TextDelta

    if DEVICE != "cpu" and native_decode == "on":
        native_decode = "auto"  # the native step is CPU-only
    args = {"model_name_or_path": model_dir, "do_sample": False, "infer_dtype": "float32", "device": DEVICE,
            "native_decode": native_decode}
    limits = {"max_batch_size": max(streams, 1), "kv_cache_tokens": 65536}
    args.update({k: v for k, v in limits.items() if k in ModelConfig.model_fields})
    with ChatModel(args) as chat:
        worker = chat.engine.worker
        worker.scheduler.max_batch_size = limits["max_batch_size"]  # until ModelConfig has the fields
        worker.scheduler.kv_cache_tokens = limits["kv_cache_tokens"]
        prepared = [chat.prepare([{"role": "user", "content": p}], max_new_tokens=new_tokens, ignore_eos=True)
                    for p in PROMPTS[:streams]]
        chat.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4)  # warm-up
        worker.batch_sizes.clear()
        token_times: list[list[float]] = [[] for _ in prepared]

        async def stream(i: int) -> None:
            [request] = prepared[i].requests(uuid.uuid4().hex)
            async for event in chat.engine.generate(request):
                if isinstance(event, TextDelta) and event.num_tokens:
                    token_times[i].extend([time.perf_counter()] * event.num_tokens)

        async def run_all() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(stream(i) for i in range(streams)))
            return start

        start = asyncio.run(run_all())
        extra = {"max_batch": max(worker.batch_sizes), "kv_cache_mb": worker.peak_cache_bytes / 2**20,
                 "forward": worker.runner.name}
    name = "lmchat (continuous batching)" if native_decode == "on" else "lmchat, native_decode: off"
    return summarise(name, streams, start, token_times, extra)


def run_lmchat_python(model_dir: str, streams: int, new_tokens: int) -> dict:
    return run_lmchat(model_dir, streams, new_tokens, native_decode="off")


def run_transformers_cb(model_dir: str, streams: int, new_tokens: int) -> dict:
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    model, tokenizer = load_hf(model_dir)
    all_ids = prompt_ids(tokenizer, streams)
    generation = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    batching = ContinuousBatchingConfig(page_size=64, num_blocks=max(16, streams * 4), max_batch_tokens=256,
                                        max_requests_per_batch=streams, use_cuda_graph=False)
    start = time.perf_counter()
    outputs = model.generate_batch(all_ids, generation_config=generation, continuous_batching_config=batching,
                                   warmup=False, record_timestamps=True)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return {"engine": "transformers generate_batch (paged CB)", "streams": streams, "tokens": tokens,
            "tokens_per_s": tokens / elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


RUNNERS = {"generate": run_generate, "llamafactory": run_llamafactory, "lmchat": run_lmchat,
           "lmchat-python": run_lmchat_python, "transformers-cb": run_transformers_cb}


# --- driver ----------------------------------------------------------------------------------------------
def in_subprocess(kind: str, model_dir: str, streams: int, new_tokens: int) -> dict:
    command = [sys.executable, __file__, "--one", kind, "--model", model_dir, "--device", DEVICE, "--streams", str(streams),
               "--new-tokens", str(new_tokens)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = ["| engine | streams | tokens/s | TTFT p50 (s) | TTFT p99 (s) | ITL p50 (ms) | ITL p99 (ms) | peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        itl50 = r.get("itl_p50") and r["itl_p50"] * 1000
        itl99 = r.get("itl_p99") and r["itl_p99"] * 1000
        lines.append(f"| {r['engine']} | {r['streams']} | {r['tokens_per_s']:.1f} | {fmt(r.get('ttft_p50'), '.2f')} "
                     f"| {fmt(r.get('ttft_p99'), '.2f')} | {fmt(itl50, '.0f')} | {fmt(itl99, '.0f')} "
                     f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def default_model() -> str:
    from lmchat.models.default import default_model_dir

    return str(default_model_dir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--baseline-streams", type=int, nargs="*", default=[1, 16],
                        help="concurrent streams for the LLaMA-Factory way (it serves one at a time)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--transformers-cb", type=int, nargs="*", default=[],
                        help="also run transformers' generate_batch at these stream counts")
    parser.add_argument("--python-forward", type=int, nargs="*", default=[],
                        help="also run lmchat with native_decode: off at these stream counts")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--one", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = args.model or default_model()
    global DEVICE
    DEVICE = args.device
    if args.one:
        streams = args.streams[0]
        print(json.dumps(RUNNERS[args.one](model_dir, streams, args.new_tokens)))
        return
    plan = [("generate", 1)] + [("llamafactory", n) for n in args.baseline_streams] + \
        [("lmchat", n) for n in args.streams] + [("lmchat-python", n) for n in args.python_forward] + \
        [("transformers-cb", n) for n in args.transformers_cb]
    rows = []
    for kind, streams in plan:
        rows.append(in_subprocess(kind, model_dir, streams, args.new_tokens))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
