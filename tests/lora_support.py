"""Tiny LoRA adapters made locally with PEFT on the tiny random-weight Llama (different ranks and targets)."""

from __future__ import annotations

import json
from pathlib import Path

ADAPTERS = {  # name -> (rank, alpha, target modules, rsLoRA)
    "alpha": (4, 16, ["q_proj", "v_proj"], False),
    "beta": (8, 16, ["o_proj", "gate_proj", "up_proj", "down_proj"], False),
    "gamma": (2, 8, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], True),
}


def make_adapter(base_dir: Path, out_dir: Path, rank: int, alpha: int, targets: list[str], rslora: bool = False,
                 seed: int = 0) -> Path:
    """A PEFT LoRA adapter with random A and B (``init_lora_weights=False``: B is not zero, so it changes answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False,
                        use_rslora=rslora)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        get_peft_model(base, config).save_pretrained(out_dir)
    return out_dir


def make_adapters(base_dir: Path, root: Path) -> dict[str, Path]:
    return {name: make_adapter(base_dir, root / name, rank, alpha, targets, rslora, seed=i + 1)
            for i, (name, (rank, alpha, targets, rslora)) in enumerate(ADAPTERS.items())}


def edited_copy(source: Path, target: Path, **config_changes) -> Path:
    """A copy of an adapter folder with keys of its adapter_config.json changed."""
    import shutil

    shutil.copytree(source, target)
    config = json.loads((target / "adapter_config.json").read_text())
    config.update(config_changes)
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target
