"""Constrained vs unconstrained decoding in the transformers engine, side by side, at 1 and 16 streams.

One loaded model (the default SmolLM2-135M-Instruct, float32), the same prompts, every request generating exactly
``--new-tokens`` tokens (end of sequence ignored; the schema needs more tokens than that, so no constrained answer
ends early), greedy. The two modes alternate, ``--repeats`` times, and the median of each is compared. The
constrained requests carry a JSON schema (a list of at least 40 person objects, every one with a name, an age
and a city), so every token of theirs goes through the grammar library's mask. Also reported: the time the
worker spends on masks per decode step (filling them with llguidance and applying them to the logits).

    python benchmarks/bench_structured.py                    # --streams 1 16 --new-tokens 128 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

from lmchat import ChatModel
from lmchat.structured.masks import StepMasks

SCHEMA = {"type": "array", "minItems": 40, "items": {
    "type": "object", "additionalProperties": False, "required": ["name", "age", "city"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                   "city": {"type": "string"}}}}
TOPICS = ["friends", "scientists", "painters", "sailors", "cooks", "pilots", "poets", "farmers", "doctors",
          "teachers", "runners", "singers", "builders", "judges", "writers", "gardeners"]


class TimedMasks(StepMasks):
    """StepMasks that records how long each step's masks take."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def apply(self, *args):
        start = time.perf_counter()
        try:
            return super().apply(*args)
        finally:
            self.times.append(time.perf_counter() - start)


def run(model: ChatModel, streams: int, new_tokens: int, constrained: bool) -> tuple[float, int]:
    """Tokens/s of ``streams`` concurrent requests."""
    extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA}}}
    prepared = [model.prepare([{"role": "user", "content": f"List {TOPICS[i % len(TOPICS)]} as JSON."}],
                              max_new_tokens=new_tokens, ignore_eos=True, do_sample=False,
                              **(extra if constrained else {})) for i in range(streams)]

    async def all_streams() -> list:
        return await asyncio.gather(*(model.agenerate(p) for p in prepared))

    start = time.perf_counter()
    answers = model.run_sync(all_streams())
    elapsed = time.perf_counter() - start
    tokens = sum(r.response_length for answer in answers for r in answer)
    assert all(r.finish_reason == "length" for answer in answers for r in answer), "an answer ended early"
    return tokens / elapsed, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="checkpoint folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = {"infer_backend": "huggingface", "infer_dtype": "float32", "do_sample": False,
              **({"model_name_or_path": args.model} if args.model else {})}
    with ChatModel(config) as model:
        worker = model.engine.worker
        worker._masks = masks = TimedMasks()
        worker.scheduler.max_batch_size = max(max(args.streams), worker.scheduler.max_batch_size)
        model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4,
                   response_format={"type": "json_object"})  # warm-up; builds the tokenizer's grammars
        print(f"model {model.engine.info.name}, forward {worker.runner.name}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.new_tokens} new tokens per stream, "
              f"greedy, median of {args.repeats}\n")
        print("| streams | unconstrained tok/s | constrained tok/s | constrained vs unconstrained | "
              "mask ms per step (median / p90) |")
        print("|---:|---:|---:|---:|---:|")
        for streams in args.streams:
            plain, constrained = [], []
            masks.times.clear()
            for _ in range(args.repeats):
                plain.append(run(model, streams, args.new_tokens, constrained=False)[0])
                constrained.append(run(model, streams, args.new_tokens, constrained=True)[0])
            p, c = statistics.median(plain), statistics.median(constrained)
            ms = sorted(t * 1000 for t in masks.times) or [float("nan")]
            print(f"| {streams} | {p:.1f} | {c:.1f} | {c / p - 1:+.1%} | "
                  f"{statistics.median(ms):.2f} / {ms[int(len(ms) * 0.9)]:.2f} |")


if __name__ == "__main__":
    main()
