"""What lmchat's compiled parts do on this CPU: run natively and under QEMU by tools/check-cpu.sh.

Prints one JSON object: the CPU level PyTorch reports, the llama.cpp CPU variant chosen and the greedy tokens of the
default GGUF for a fixed prompt, and whether the native decode kernels pass the engine's own start-up check (a
plain transformers forward against the native step, batched and one row) on a small random Llama, in float32 and
with its weights quantized to 4 and 8 bits (the quantized kernels); and which int8-activation paths the kernels
found in CPUID, each checked against the float64 product of the rounded rows (native/int8_act.h).
"""

from __future__ import annotations

import json
import sys

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def llama_cpp_tokens() -> dict:
    import llama_cpp

    from lmchat.engines.llamacpp.cpu_backend import load_cpu_backend
    from lmchat.models.default import default_gguf_path

    variant = load_cpu_backend()
    llm = llama_cpp.Llama(model_path=str(default_gguf_path()), n_ctx=512, n_threads=2, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    out = llm.create_completion(ids, max_tokens=8, temperature=0.0)
    text = out["choices"][0]["text"]
    llm.close()
    return {"llama_cpp_variant": variant, "llama_cpp_text": text}


def native_kernels() -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmchat.engines.hf import native, quant
    from lmchat.engines.hf.runner import enable_native, pick_runner

    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    module = native.load()
    passed = {}
    for bits in (None, 8, 4):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
        if bits:
            quant.use_native_kernels(module)
            quant.quantize_model(model, bits)
        runner = pick_runner(model, torch.device("cpu"), "auto")
        passed[bits] = bool(enable_native(runner, module)) and runner.name == "lean+native"
    paths = module.int8_paths()
    return {"torch_capability": torch.backends.cpu.get_cpu_capability(), "native_flags": native.flags(),
            "native_build": str(native.build_dir()), "native_check_passed": passed[None],
            "native_quantized_check_passed": passed[8] and passed[4], "runner": runner.name,
            "int8_paths": paths, "int8_activations_check_passed": bool(paths) and all(
                int8_matches(module, path, bits) for path in paths for bits in (4, 8))}


def int8_matches(module, path: str, bits: int) -> bool:
    """qlinear with int8 activations on ``path`` equals the rounded rows times the dequantized weight (the plain
    path leaves int8 weights at float32 activations: then it equals float32's own result)."""
    import torch

    from lmchat.engines.hf.quant import QuantizedWeight

    generator = torch.Generator().manual_seed(1)
    weight = QuantizedWeight.quantize(torch.randn(70, 96, generator=generator) * 0.05, bits)
    x = torch.randn(13, 96, generator=generator)
    got = module.qlinear(x, weight.codes, weight.scales, weight.mins, None, path)
    if path == "int8-plain" and bits == 8:
        return torch.equal(got, module.qlinear(x, weight.codes, weight.scales, weight.mins, None))
    groups = x.reshape(13, -1, 32)
    top = groups.abs().amax(-1, keepdim=True)
    rounded = (torch.round(groups * torch.where(top > 0, 127 / top, torch.zeros_like(top))) * (top / 127))
    expected = rounded.reshape(13, 96).double() @ weight.dequantize().double().T
    return bool((got.double() - expected).abs().max() <= 1e-5 * expected.abs().max())


if __name__ == "__main__":
    report = {}
    for part in sys.argv[1:] or ["llama_cpp", "native"]:
        report.update(llama_cpp_tokens() if part == "llama_cpp" else native_kernels())
    print(json.dumps(report))
