"""Rows/s of batch inference vs. a plain loop of ``ChatModel.chat``, side by side on one loaded model.

    python benchmarks/bench_batch_infer.py                      # 200 alpaca prompts, the default model
    python benchmarks/bench_batch_infer.py --rows 50 --concurrency 8 --model_name_or_path PATH

Greedy decoding, ``max_new_tokens`` answer tokens at most; the two runs must give the same answers.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from lmchat import ChatModel
from lmchat.batch import Sampler, load_rows
from lmchat.config.sources import parse_flags

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "oracles" / "datasets" / "llamafactory"


def plain_loop(model: ChatModel, rows) -> tuple[list[str], int]:
    answers, tokens = [], 0
    for row in rows:
        [response] = model.chat(row.messages, row.system, row.tools)
        answers.append(response.response_text)
        tokens += response.response_length
    return answers, tokens


def batch_infer(model: ChatModel, rows, concurrency: int) -> tuple[list[str], int]:
    samples = Sampler(model, concurrency=concurrency).batch_infer(rows)
    failed = [s.failure for s in samples if s.failure]
    if failed:
        raise SystemExit(f"{len(failed)} rows failed, e.g. {failed[0]}")
    return [s.predict[0] for s in samples], sum(s.completion_tokens for s in samples)


def timed(run):
    start = time.perf_counter()
    answers, tokens = run()
    return answers, tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--dataset_dir", default=str(DATA))
    args, rest = parser.parse_known_args()
    config = {"do_sample": False, "max_new_tokens": 32, **parse_flags(rest)}
    rows = load_rows(["alpaca_en_demo"], args.dataset_dir, max_samples=args.rows)
    with ChatModel(config) as model:
        model.chat([{"role": "user", "content": "warm up"}])
        loop_answers, loop_tokens, loop_s = timed(lambda: plain_loop(model, rows))
        batch_answers, batch_tokens, batch_s = timed(lambda: batch_infer(model, rows, args.concurrency))
        name = model.engine.info.name
    same = sum(a == b for a, b in zip(loop_answers, batch_answers))
    print(f"model {name}, engine {model.config.infer_backend}, {len(rows)} alpaca prompts, "
          f"max_new_tokens {config['max_new_tokens']}, greedy; {platform.processor() or platform.machine()}")
    print("| mode | rows/s | tokens/s | time (s) |")
    print("|---|---|---|---|")
    print(f"| plain loop of ChatModel.chat | {len(rows) / loop_s:.2f} | {loop_tokens / loop_s:.1f} | {loop_s:.1f} |")
    print(f"| Sampler.batch_infer (concurrency {args.concurrency}) | {len(rows) / batch_s:.2f} | "
          f"{batch_tokens / batch_s:.1f} | {batch_s:.1f} |")
    print(f"speed-up {loop_s / batch_s:.2f}x; identical answers: {same}/{len(rows)}")


if __name__ == "__main__":
    main()
