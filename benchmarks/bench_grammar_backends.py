"""xgrammar vs llguidance on CPU: JSON-Schema coverage, compile time, and token-mask time at 1 and 16 streams.

How lmchat chose its grammar library (docs/benchmarks.md, "Structured output"). For every schema, each library
compiles it (coverage: how many compile, and how many of the outputs it then allows are valid under the schema);
then both walk the same token sequences: at each step each library fills its token mask (timed), a token allowed
by BOTH masks is drawn (seeded, biased towards closing quotes and brackets so walks end), and both accept it. The
walk ends when the grammar allows only the end token, or after ``--walk-tokens``. With ``--streams 16``, 16 walks
(16 schemas) go in lockstep and each library fills the 16 masks in one batched, multi-threaded call, as a decode
step of 16 constrained rows would.

    python benchmarks/bench_grammar_backends.py                      # the 80-schema sample in tests/data
    python benchmarks/bench_grammar_backends.py --data /tmp/jsonschemabench/data --per-category 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import jsonschema
import llguidance
import llguidance.hf
import llguidance.torch as llg_torch
import numpy as np
import torch
import xgrammar as xgr
from transformers import AutoTokenizer

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "jsonschemabench" / "schemas.jsonl"


def load_schemas(path: Path, per_category: int, seed: int) -> list[tuple[str, dict]]:
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(row["id"], row["schema"]) for row in rows]
    rng, schemas = random.Random(seed), []
    for category in sorted(p for p in path.iterdir() if p.is_dir()):
        files = sorted(category.glob("*.json"))
        for file in sorted(rng.sample(files, min(per_category, len(files)))):
            schemas.append((f"{category.name}/{file.stem}", json.loads(file.read_text(encoding="utf-8"))))
    return schemas


class Xgr:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int, threads: int) -> None:
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=threads, cache_enabled=False)
        self.batch = xgr.BatchGrammarMatcher(max_threads=threads)

    def compile(self, schema: dict):
        return self.compiler.compile_json_schema(json.dumps(schema))

    def matcher(self, compiled):
        return xgr.GrammarMatcher(compiled)

    def fill(self, matchers: list, bitmask: torch.Tensor) -> None:
        if len(matchers) == 1:
            matchers[0].fill_next_token_bitmask(bitmask, 0)
        else:
            self.batch.batch_fill_next_token_bitmask(matchers, bitmask)

    def accept(self, matcher, token: int) -> bool:
        return matcher.accept_token(token)


class Llg:
    name = "llguidance"

    def __init__(self, tokenizer, vocab_size: int, threads: int) -> None:
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self.executor = llguidance.LLExecutor(num_threads=threads)

    def compile(self, schema: dict):
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
        error = llguidance.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise ValueError(error)
        return grammar

    def matcher(self, compiled):
        return llguidance.LLMatcher(self.tokenizer, compiled, log_level=0)

    def fill(self, matchers: list, bitmask: torch.Tensor) -> None:
        if len(matchers) == 1:
            llg_torch.fill_next_token_bitmask(matchers[0], bitmask, 0)
        else:
            llg_torch.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(matchers)], bitmask)

    def accept(self, matcher, token: int) -> bool:
        return matcher.consume_token(token)


def allowed(bitmask_row: torch.Tensor, vocab_size: int) -> np.ndarray:
    """The mask row as booleans, one per token."""
    return np.unpackbits(bitmask_row.numpy().view(np.uint8), bitorder="little")[:vocab_size].astype(bool)


def choose(ids: np.ndarray, closers: np.ndarray, eos: int, rng: random.Random) -> int:
    """The end token when allowed; else half the time a closing token (a quote, brace or bracket), so strings,
    objects and arrays end and most walks finish; else any allowed token."""
    if eos in ids:
        return eos
    closing = ids[closers[ids]]
    pool = closing if len(closing) and rng.random() < 0.5 else ids
    return int(pool[rng.randrange(len(pool))])


def walk(libs, compiled, streams: int, args, short, eos, rng, times, texts, decode) -> int:
    """Walk ``streams`` schemas in lockstep; returns the number of steps where both masks disagreed to empty."""
    matchers = {lib.name: [lib.matcher(c[lib.name]) for c in compiled] for lib in libs}
    masks = {lib.name: xgr.allocate_token_bitmask(streams, args.vocab) for lib in libs}
    active = list(range(streams))
    tokens: list[list[int]] = [[] for _ in range(streams)]
    disagreements = 0
    for _ in range(args.walk_tokens):
        if not active:
            break
        for lib in libs:
            rows = [matchers[lib.name][i] for i in active]
            mask = masks[lib.name][: len(active)]
            start = time.perf_counter()
            lib.fill(rows, mask)
            times[lib.name][streams].append(time.perf_counter() - start)
        still = []
        for row, i in enumerate(active):
            both = np.logical_and.reduce([allowed(masks[lib.name][row], args.vocab) for lib in libs])
            ids = np.flatnonzero(both)
            if not len(ids):
                disagreements += 1
                continue
            token = choose(ids, short, eos, rng)
            if token == eos:
                texts[i] = decode(tokens[i])
                continue
            for lib in libs:
                lib.accept(matchers[lib.name][i], token)
            tokens[i].append(token)
            still.append(i)
        active = still
    return disagreements


def validity(lib, schemas, compiled, args, short, eos, decode) -> tuple[int, int]:
    """Walk each compiled schema with this library alone; (finished walks, walks whose JSON was valid)."""
    finished = valid = 0
    for (sid, schema), grammar in zip(schemas, compiled):
        texts: dict[int, str] = {}
        walk([lib], [{lib.name: grammar}], 1, args, short, eos, random.Random(sid), {lib.name: {1: []}}, texts, decode)
        if 0 in texts:
            finished += 1
            try:
                jsonschema.validators.validator_for(schema)(schema).validate(json.loads(texts[0]))
                valid += 1
            except (jsonschema.ValidationError, json.JSONDecodeError, jsonschema.SchemaError, RecursionError):
                pass
    return finished, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE, help="schemas.jsonl, or JSONSchemaBench's data/ folder")
    parser.add_argument("--per-category", type=int, default=50, help="schemas per category from a data/ folder")
    parser.add_argument("--tokenizer", default="", help="HF tokenizer dir (default: SmolLM2-135M-Instruct's)")
    parser.add_argument("--walk-tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.tokenizer:
        from lmchat.models.default import default_model_dir

        args.tokenizer = str(default_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    args.vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    libs = [Xgr(tokenizer, args.vocab, args.threads), Llg(tokenizer, args.vocab, args.threads)]
    short = np.array([bool(b) and not b.strip(b'"}] ') for b in libs[0].info.decoded_vocab], dtype=bool)

    def decode(ids):
        return tokenizer.decode(ids)

    schemas = load_schemas(args.data, args.per_category, args.seed)
    compiled: dict[str, list] = {lib.name: [] for lib in libs}
    compile_times: dict[str, list[float]] = {lib.name: [] for lib in libs}
    errors: dict[str, list[str]] = {lib.name: [] for lib in libs}
    for sid, schema in schemas:
        for lib in libs:
            start = time.perf_counter()
            try:
                compiled[lib.name].append(lib.compile(schema))
            except Exception as exc:  # noqa: BLE001 - a schema the library cannot compile counts against it
                compiled[lib.name].append(None)
                errors[lib.name].append(f"{sid}: {str(exc).splitlines()[0][:100]}")
            compile_times[lib.name].append(time.perf_counter() - start)

    print(f"{len(schemas)} schemas from {args.data}; tokenizer {Path(args.tokenizer).name} ({args.vocab} tokens); "
          f"{args.threads} threads; {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"xgrammar {version('xgrammar')}, llguidance {version('llguidance')}, torch {torch.__version__}")
    print("\n| library | compiled | finished walks | valid of finished | compile ms (median / p90) |")
    print("|---|---:|---:|---:|---:|")
    for lib in libs:
        ok = [(s, c) for s, c in zip(schemas, compiled[lib.name]) if c is not None]
        finished, valid = validity(lib, [s for s, _ in ok], [c for _, c in ok], args, short, eos, decode)
        ms = sorted(t * 1000 for t in compile_times[lib.name])
        print(f"| {lib.name} | {len(ok)}/{len(schemas)} | {finished} | {valid}/{finished} | "
              f"{statistics.median(ms):.1f} / {ms[int(len(ms) * 0.9)]:.1f} |")

    both = [i for i in range(len(schemas)) if all(compiled[lib.name][i] is not None for lib in libs)]
    rng = random.Random(args.seed)
    times = {lib.name: {s: [] for s in args.streams} for lib in libs}
    disagreements = 0
    for streams in args.streams:
        for start in range(0, len(both) - streams + 1, streams):
            group = both[start : start + streams]
            per = [{lib.name: compiled[lib.name][i] for lib in libs} for i in group]
            disagreements += walk(libs, per, streams, args, short, eos, rng, times, {}, decode)
    print(f"\nMask fill per decode step ({len(both)} schemas both compile; masks disagreeing to empty: "
          f"{disagreements}):\n")
    print("| library | streams | steps | ms per step (median / p90 / max) | us per token (mean) |")
    print("|---|---:|---:|---:|---:|")
    for lib in libs:
        for streams in args.streams:
            ms = sorted(t * 1000 for t in times[lib.name][streams])
            if not ms:
                continue
            per_token = statistics.mean(ms) * 1000 / streams
            print(f"| {lib.name} | {streams} | {len(ms)} | {statistics.median(ms):.3f} / {ms[int(len(ms) * 0.9)]:.3f}"
                  f" / {ms[-1]:.1f} | {per_token:.0f} |")
    for lib in libs:
        if errors[lib.name]:
            print(f"\n{lib.name} could not compile {len(errors[lib.name])}:")
            for line in errors[lib.name][:40]:
                print("  ", line)


if __name__ == "__main__":
    main()
