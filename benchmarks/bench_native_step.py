"""One native decode step of the default model (SmolLM2-135M) alone: ms per step by rows, weights and activations.

The transformers engine runs each decode step of a float32 or quantized Llama-family model on the CPU as one call
into ``native/decode.cpp`` (``Decoder.step``). This times that call at B rows, each at about ``--context`` cached
positions (random keys and values: the attention reads as many as a real step), for the default model's weights
at 4 bits with int8 and float32 activations (``quantized_activations`` auto / off) and, with ``--float32``, its
float32 weights. No sampling, no Python worker: the difference to the serving benchmark's step time is what the
engine spends around the native call. Median and the 25th percentile of ``--steps`` steps after a warm-up.

    python benchmarks/bench_native_step.py --rows 1 4 16 64 --context 100
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmchat.engines.hf import native
from lmchat.engines.hf.lean import LeanDecoder
from lmchat.engines.hf.quant import quantize_model
from lmchat.models.default import default_model_dir


def decoder(bits: int | None, activations: str) -> LeanDecoder:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32).eval()
    if bits:
        quantize_model(model, bits)
    lean = LeanDecoder(model, packed=bits is None)
    lean.use_native(native.load(), activations)
    return lean


def time_steps(lean: LeanDecoder, rows: int, context: int, steps: int) -> list[float]:
    layers, kv_heads, head_dim = len(lean.layers), lean.kv_heads, lean.head_dim
    capacity = context + rows + 8
    keys = [torch.randn(rows, kv_heads, capacity, head_dim) for _ in range(layers)]
    values = [torch.randn(rows, kv_heads, capacity, head_dim) for _ in range(layers)]
    tokens = torch.randint(0, 1000, (rows,), generator=torch.Generator().manual_seed(0))
    positions = torch.full((rows,), context) + torch.arange(rows) % 7  # rows a few positions apart
    lean._rope(positions)  # the rotary table the step reads
    slots = torch.zeros(0, dtype=torch.long)
    times = []
    for _ in range(steps + 3):
        began = time.perf_counter()
        lean.native.step(tokens, positions, 0, keys, values, lean._cos, lean._sin, slots)
        times.append(time.perf_counter() - began)
    return sorted(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--context", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--float32", action="store_true", help="also the float32 weights (packed oneDNN)")
    args = parser.parse_args()
    contenders = {"int4 x int8 act": (4, "int8"), "int4 x float32 act": (4, "float32")}
    if args.float32:
        contenders["float32"] = (None, "float32")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; int8 paths {native.load().int8_paths()}; "
          f"context ~{args.context}; ms per step (median, p25), tokens/s at the median")
    print("| weights x activations | rows | median ms | p25 ms | tokens/s | laid-out panels MB |")
    print("|---|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for name, (bits, activations) in contenders.items():
            lean = decoder(bits, activations)
            for rows in args.rows:
                times = time_steps(lean, rows, args.context, args.steps)
                median = statistics.median(times)
                print(f"| {name} | {rows} | {1e3 * median:.2f} | {1e3 * times[len(times) // 4]:.2f} | "
                      f"{rows / median:.0f} | {getattr(lean.native, 'packed_bytes', 0) / 1e6:.0f} |", flush=True)


if __name__ == "__main__":
    main()
