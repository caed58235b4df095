"""Named LoRA adapters side by side: 16 streams spread over 4 adapters against 16 streams of the base model, on
one transformers engine (continuous batching, batched unmerged LoRA; docs/architecture-hf-engine.md).

The adapters are made here with PEFT on the model (random A and B, every attention and MLP projection, ranks 8
and 16: LLaMA-Factory's ``lora_target: all``) and loaded as ``lora_modules``. Every request asks for exactly
``--new-tokens`` tokens (end-of-sequence ignored), all arriving at once. Modes, each run ``--repeats`` times in the
same process, alternating (the best run of each is reported):

- ``base``: 16 streams without an adapter (one-token steps may take the native C++ step);
- ``lora``: 16 streams, 4 on each adapter, decoded together (the native step applies each row's adapter);
- ``base-python``: 16 base streams with the native step switched off, to separate its share from LoRA's.

Example (the command behind docs/benchmarks.md)::

    python benchmarks/bench_lora.py --streams 16 --adapters 4 --new-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hf_batching import PROMPTS, default_model, summarise  # noqa: E402

RANKS = (8, 16, 8, 16)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapters(model_dir: str, folder: Path, count: int) -> dict[str, str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for i in range(count):
        out = folder / f"adapter{i}"
        if not (out / "adapter_config.json").is_file():
            base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
            with torch.random.fork_rng():
                torch.manual_seed(i + 1)
                config = LoraConfig(r=RANKS[i % len(RANKS)], lora_alpha=16, target_modules=TARGETS,
                                    init_lora_weights=False)
                get_peft_model(base, config).save_pretrained(out)
        adapters[f"adapter{i}"] = str(out)
    return adapters


def run_mode(chat, streams: int, new_tokens: int, adapters: list[str | None]) -> tuple[float, list[list[float]], list]:
    from lmchat.engines.events import TextDelta

    prepared = [chat.prepare([{"role": "user", "content": PROMPTS[i]}], max_new_tokens=new_tokens, ignore_eos=True,
                             adapter=adapters[i % len(adapters)]) for i in range(streams)]
    token_times: list[list[float]] = [[] for _ in prepared]
    worker = chat.engine.worker
    worker.batch_sizes.clear()

    async def stream(i: int) -> None:
        [request] = prepared[i].requests(uuid.uuid4().hex)
        with chat.engine.adapters.hold(request.adapter) if request.adapter else contextlib.nullcontext():
            async for event in chat.engine.generate(request):
                if isinstance(event, TextDelta) and event.num_tokens:
                    token_times[i].extend([time.perf_counter()] * event.num_tokens)

    async def run_all() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(stream(i) for i in range(streams)))
        return start

    start = chat.run_sync(run_all())
    return start, token_times, list(worker.batch_sizes)


def run_one(model_dir: str, streams: int, count: int, new_tokens: int, repeats: int, native: str) -> list[dict]:
    from lmchat import ChatModel

    folder = Path(tempfile.gettempdir()) / "lmchat-bench-lora" / Path(model_dir).name
    adapters = make_adapters(model_dir, folder, count)
    args = {"model_name_or_path": model_dir, "do_sample": False, "infer_dtype": "float32", "native_decode": native,
            "max_batch_size": max(streams, 1), "kv_cache_tokens": 65536,
            "lora_modules": [f"{name}={path}" for name, path in adapters.items()], "max_lora_rank": max(RANKS)}
    modes = {"base": [None], "lora": list(adapters)} if native == "on" else {"base-python": [None]}
    rows = []
    with ChatModel(args) as chat:
        chat.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4)  # warm-up
        chat.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4, adapter=next(iter(adapters), None))
        best: dict[str, dict] = {}
        for _ in range(repeats):  # the modes alternate, so a change in the machine's load hits them alike
            for mode, names in modes.items():
                start, token_times, sizes = run_mode(chat, streams, new_tokens, names)
                row = summarise(f"{mode} ({len(set(names) - {None})} adapters)", streams, start, token_times,
                                {"max_batch": max(sizes), "forward": chat.engine.worker.runner.name})
                if mode not in best or row["tokens_per_s"] > best[mode]["tokens_per_s"]:
                    best[mode] = row
        rows = list(best.values())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = args.model or default_model()
    if args.one:
        print(json.dumps(run_one(model_dir, args.streams, args.adapters, args.new_tokens, args.repeats, args.one)))
        return
    rows = []
    for native in ("on", "off"):  # each in its own process
        command = [sys.executable, __file__, "--one", native, "--model", model_dir, "--streams", str(args.streams),
                   "--adapters", str(args.adapters), "--new-tokens", str(args.new_tokens), "--repeats",
                   str(args.repeats)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows += json.loads(output.strip().splitlines()[-1])
    base = next(r for r in rows if r["engine"].startswith("base ("))
    print("| mode | streams | tokens/s | vs base | TTFT p50 (s) | ITL p50 (ms) | max batch | forward |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['streams']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base['tokens_per_s']:.0%} "
              f"| {r['ttft_p50']:.2f} | {r['itl_p50'] * 1000:.0f} | {r['max_batch']} | {r['forward']} |")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
