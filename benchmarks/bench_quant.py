"""Weight-only quantization (``quantization_bit: 8`` / ``4``) of the default model, with float32 activations and
with int8 ones (``8+int8`` / ``4+int8``: ``quantized_activations: auto``, the default, on a CPU with int8 dot
products): quality and memory against float32, in one run (the speed: ``bench_serving.py --only "lmchat library hf" "lmchat library hf-int8" ...``).

- **Perplexity** on real text: LLaMA-Factory's alpaca demo answers (``../shared/oracles/datasets``), the first
  ``--tokens`` tokens, one forward pass of the transformers model (its modules quantized as the engine does).
- **Greedy answers**: ``--prompts`` alpaca instructions answered by ``ChatModel`` (the engine's own forward,
  native kernels included), ``--new-tokens`` each: how many are identical to float32's, and on average how many
  tokens agree before the first difference.
- **Memory**: the bytes of the model's weights (``quant.model_bytes``) and the serving process's RSS once
  ``ChatModel`` has loaded and answered (each setting in a process of its own).

    python benchmarks/bench_quant.py
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

SETTINGS = ("none", "8", "4", "8+int8", "4+int8")  # quantization_bit (+ int8 activations)
DATA = Path(__file__).resolve().parents[2] / "shared/oracles/datasets/llamafactory/alpaca_en_demo.json"


def perplexity(bits: int | None, tokens: int, activations: str) -> tuple[float, int]:
    import torch
    import transformers

    from lmchat.engines.hf import native, quant
    from lmchat.models.default import default_model_dir

    folder = default_model_dir()
    module = native.load()
    quant.use_native_kernels(module)
    quant.use_activations(quant.activations_for(module, activations))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    rows = json.loads(DATA.read_text())
    ids = tokenizer("\n\n".join(row["output"] for row in rows[:80])).input_ids[:tokens]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    if bits:
        quant.quantize_model(model, bits)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    return math.exp(float(loss)), quant.model_bytes(model)


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def answers(bits: int | None, prompts: int, new_tokens: int, activations: str) -> tuple[list[list[int]], int]:
    from lmchat import ChatModel
    from lmchat.models.default import default_model_dir

    config = {"model_name_or_path": str(default_model_dir()), "do_sample": False, "max_new_tokens": new_tokens,
              "quantized_activations": activations}
    if bits:
        config["quantization_bit"] = bits
    rows = json.loads(DATA.read_text())[:prompts]
    with ChatModel(config) as model:
        tokenizer = model.engine.loaded.tokenizer
        out = []
        for row in rows:
            text = model.chat([{"role": "user", "content": row["instruction"] + "\n" + row["input"]}])[0].response_text
            out.append(tokenizer(text, add_special_tokens=False).input_ids)
        return out, rss()


def child(setting: str, args: argparse.Namespace) -> None:
    """One setting in a process of its own (so the RSS is its own): the answers first, then the perplexity."""
    width, _, int8 = setting.partition("+")
    bits, activations = (None if width == "none" else int(width)), ("auto" if int8 else "off")
    tokens, serving = answers(bits, args.prompts, args.new_tokens, activations)
    ppl, size = perplexity(bits, args.tokens, activations)
    print(json.dumps({"bits": bits, "perplexity": ppl, "weights": size, "rss": serving, "answers": tokens}))


def agreement(got: list[list[int]], reference: list[list[int]]) -> tuple[int, float]:
    same = sum(a == b for a, b in zip(got, reference))
    prefixes = []
    for a, b in zip(got, reference):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        prefixes.append(n)
    return same, sum(prefixes) / len(prefixes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--child", choices=SETTINGS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args)
    results = {}
    for setting in SETTINGS:
        command = [sys.executable, __file__, "--child", setting, "--tokens", str(args.tokens), "--prompts",
                   str(args.prompts), "--new-tokens", str(args.new_tokens)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results["none"]
    length = sum(map(len, reference["answers"])) / len(reference["answers"])
    print(f"{args.tokens} tokens of text; {args.prompts} prompts, at most {args.new_tokens} greedy tokens "
          f"(float32's answers: {length:.1f} tokens on average)")
    print("| quantization_bit (+ activations) | perplexity | vs float32 | weights MB | serving RSS MB | answers identical | "
          "tokens agreeing before the first difference |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for setting, row in results.items():
        same, prefix = agreement(row["answers"], reference["answers"])
        print(f"| {'none (float32)' if setting == 'none' else setting} | {row['perplexity']:.3f} | "
              f"{100 * (row['perplexity'] / reference['perplexity'] - 1):+.2f} % | {row['weights'] / 1e6:.0f} | "
              f"{row['rss'] / 1e6:.0f} | {same}/{len(reference['answers'])} | {prefix:.1f} |")


if __name__ == "__main__":
    main()
