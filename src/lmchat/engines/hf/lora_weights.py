"""Read one PEFT LoRA adapter folder for batched serving: each target module's A [r, in] and B [out, r] (B scaled
by alpha/r, or alpha/sqrt(r) for rsLoRA), checked against the loaded model. Everything the batched path cannot
apply exactly is refused with an :class:`~lmchat.errors.InvalidRequestError` naming it, before anything changes."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmchat.engines.hf.quant import QuantizedLinear
from lmchat.errors import InvalidRequestError

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class ModuleLora:
    """One target module's low-rank update: ``x @ a.T @ b.T`` is added to its output."""

    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r], scaled

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class AdapterWeights:
    name: str
    path: str
    modules: dict[str, ModuleLora]  # the model's module name (model.layers.0.self_attn.q_proj) -> its update

    @property
    def rank(self) -> int:
        return max(m.rank for m in self.modules.values())


def _bad(path: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"The LoRA adapter '{path}' cannot be served: {why}.", param="lora_path")


def read_adapter(name: str, path: str, model: Any, max_rank: int) -> AdapterWeights:
    """The adapter in folder ``path``, its tensors on the model's device and dtype."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise _bad(path, "no such folder")
    config = _read_config(folder, path)
    state = _read_state(folder, path)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = _KEY.match(key)
        if match is None:
            raise _bad(path, f"it holds '{key}', which is not a LoRA A/B weight (embedding LoRA, DoRA magnitudes "
                             "and modules_to_save are not applied per request)")
        pairs.setdefault(match["module"], {})[match["part"]] = tensor
    if not pairs:
        raise _bad(path, "it holds no LoRA weights")
    parameter = next(model.parameters())
    modules = {module: _module_lora(model, module, parts, config, path, max_rank, parameter)
               for module, parts in pairs.items()}
    return AdapterWeights(name, path, modules)


def _read_config(folder: Path, path: str) -> dict[str, Any]:
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise _bad(path, f"no {CONFIG_FILE} (not a PEFT adapter folder)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"{CONFIG_FILE} is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise _bad(path, f"peft_type is {config.get('peft_type') if isinstance(config, dict) else '?'}, not LORA")
    refusals = {"use_dora": "DoRA", "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)",
                "modules_to_save": "modules_to_save", "layers_pattern": None}
    for key, what in refusals.items():
        if what and config.get(key):
            raise _bad(path, f"{what} is not applied per request (merge it instead: merge_adapters)")
    if config.get("bias", "none") != "none":
        raise _bad(path, f"bias '{config['bias']}' is not applied per request (only bias: none)")
    if not isinstance(config.get("lora_alpha", 8), (int, float)):
        raise _bad(path, "lora_alpha is not a number")
    return config


def _read_state(folder: Path, path: str) -> dict[str, torch.Tensor]:
    try:
        if (folder / WEIGHT_FILES[0]).is_file():
            from safetensors.torch import load_file

            return load_file(str(folder / WEIGHT_FILES[0]))
        if (folder / WEIGHT_FILES[1]).is_file():
            return torch.load(folder / WEIGHT_FILES[1], map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the caller's bad adapter
        raise _bad(path, f"its weights cannot be read ({type(exc).__name__}: {exc})") from None
    raise _bad(path, f"no {' or '.join(WEIGHT_FILES)}")


def _module_lora(model: Any, module: str, parts: dict[str, torch.Tensor], config: dict[str, Any], path: str,
                 max_rank: int, parameter: torch.Tensor) -> ModuleLora:
    if set(parts) != {"A", "B"}:
        raise _bad(path, f"'{module}' has lora_{'A' if 'A' in parts else 'B'} without its pair")
    target = _target_linear(model, module, path)
    a, b = parts["A"], parts["B"]
    rank = a.shape[0] if a.dim() == 2 else -1
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != target.in_features or b.shape != (target.out_features, rank):
        raise _bad(path, f"'{module}' has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not fit its "
                         f"[{target.out_features}, {target.in_features}] weight (an adapter of another model?)")
    if rank > max_rank:
        raise _bad(path, f"its rank {rank} ('{module}') is above max_lora_rank ({max_rank})")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise _bad(path, f"'{module}' has non-finite weights")
    alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
    scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    b = b.float() * scale
    return ModuleLora(a.to(parameter.device, parameter.dtype).contiguous(),
                      b.to(parameter.device, parameter.dtype).contiguous())


def _target_linear(model: Any, module: str, path: str) -> torch.nn.Linear:
    try:
        target = model.get_submodule(module)
    except AttributeError:
        raise _bad(path, f"the model has no module '{module}' (an adapter of another model?)") from None
    target = getattr(target, "base", target)  # already wrapped for another adapter (lora.LoraLinear)
    if not isinstance(target, (torch.nn.Linear, QuantizedLinear)):
        raise _bad(path, f"'{module}' is a {type(target).__name__}; only linear layers take LoRA per request")
    return target


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's alpha_pattern: the value of the first key that names ``module`` or a suffix of it."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default
