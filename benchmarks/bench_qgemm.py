"""The transformers engine's multiplies for one decode step of SmolLM2-135M, by weight format and rows.

One decode step multiplies B rows by every linear weight of the model (30 layers of q/k/v, o, gate/up and down, and
the 49152-row output head). This times that sum, per format, at each B, side by side in one run:

- ``float32 oneDNN packed``: what the float32 model runs for batched steps (``packed_weights``)
- ``float32 F.linear``: MKL's sgemm/GEMV (one-row steps of the float32 model)
- ``int8`` / ``int4 native``: lmchat's quantized kernels (``native/quantized.h``; the head at 8 bits, as served)
- ``... int8 act``: the same weights with the activations rounded to int8 (``native/int8_act.h``,
  ``quantized_activations: auto``) on the CPU's best int8 path (``int8-vnni`` or ``int8-plain``; an int8 weight
  without VNNI keeps float32 activations, as served)

Random weights of the real shapes (distinct per layer) (quantized with lmchat's own quantizer); median of ``--repeats`` timed passes
after a warm-up, ms per step; threads as torch has them.

    python benchmarks/bench_qgemm.py --rows 1 4 16 24 32 64 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lmchat.engines.hf import native, onednn
from lmchat.engines.hf.quant import QuantizedWeight

HIDDEN, INTERMEDIATE, KV, LAYERS, VOCAB = 576, 1536, 192, 30, 49152
SHAPES = [(HIDDEN + 2 * KV, HIDDEN), (HIDDEN, HIDDEN), (2 * INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]


def weights() -> list[torch.Tensor]:
    torch.manual_seed(0)
    # distinct tensors per layer, as in the model: a step streams every weight from memory
    return [torch.randn(n, k) * 0.05 for _ in range(LAYERS) for n, k in SHAPES] + [torch.randn(VOCAB, HIDDEN) * 0.05]


def timed(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 24, 32, 64, 128])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    module = native.load()
    fp32 = weights()
    distinct = {id(w): w for w in fp32}
    packed = {key: onednn.pack(w) for key, w in distinct.items()}
    quantized = {bits: {key: QuantizedWeight.quantize(w, 8 if w.shape[0] == VOCAB else bits)
                        for key, w in distinct.items()} for bits in (8, 4)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per decode step (all {len(fp32)} "
          f"multiplies of SmolLM2-135M), median of {args.repeats}")
    paths = module.int8_paths()
    act = "int8" if paths else "float32"
    print(f"int8 activations: {paths[0] if paths else 'none on this CPU'}")
    print("| rows | float32 oneDNN packed | float32 F.linear | int8 native | int4 native | int8 int8 act "
          "| int4 int8 act | int4 vs packed float32 | int4 int8 act vs packed float32 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with torch.inference_mode():
        for rows in args.rows:
            inputs = {k: torch.randn(rows, k) for k in (HIDDEN, INTERMEDIATE)}

            def run_packed():
                for w in fp32:
                    onednn.linear(inputs[w.shape[1]], packed[id(w)], None)

            def run_mkl():
                for w in fp32:
                    F.linear(inputs[w.shape[1]], w)

            def run_q(bits, activations="float32"):
                def step():
                    for w in fp32:
                        q = quantized[bits][id(w)]
                        module.qlinear(inputs[w.shape[1]], q.codes, q.scales, q.mins, None, activations)
                return step

            runs = (run_packed, run_mkl, run_q(8), run_q(4), run_q(8, act), run_q(4, act))
            results = [timed(run, args.repeats) for run in runs]
            print(f"| {rows} | " + " | ".join(f"{value:.1f}" for value in results)
                  + f" | {results[0] / results[3]:.2f}x | {results[0] / results[5]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
