"""A config against the chosen engine, before the model loads: refuse what the engine cannot honour, and report
once, in the log, what lmchat accepted without using (LLaMA-Factory's training keys, another engine's settings)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lmchat.config.adapters import merged_adapters, named_adapters
from lmchat.config.llamafactory import IGNORED_KEYS
from lmchat.config.model_config import ModelConfig
from lmchat.errors import ConfigError

if TYPE_CHECKING:
    from lmchat.engines.base import BaseEngine, ModelInfo

logger = logging.getLogger("lmchat.config")

ENGINE_SETTINGS = ("quantization_bit", "rope_scaling", "flash_attn", "model_max_length", "pooling_type",
                   "image_do_pan_and_scan")
"""Settings an engine must declare it honours (``Capabilities.settings``) before they may differ from their default;
anything else is refused, naming the setting."""

UNHONOURED_MEDIA_SETTINGS = ("crop_to_patches", "use_audio_in_video")
"""LLaMA-Factory media keys lmchat accepts but no engine applies yet: refused unless left at their default."""

_REFUSALS = {
    "quantization_bit": "Weight quantization on load (quantization_bit: {value}) is not available for the {engine} "
                        "engine yet; leave quantization_bit out, or load a checkpoint quantized ahead of time.",
}
_REFUSAL = ("The {engine} engine cannot honour {name}: {value!r}; leave it out or choose infer_backend huggingface "
            "(the transformers engine).")
_TRAINING_STAGES = ("pt", "ppo", "dpo", "kto")


def owner_engine(name: str) -> str | None:
    """The engine a setting belongs to (``vllm_maxlen`` -> vllm), or None for a setting of every engine."""
    if name.startswith("vllm_"):
        return "vllm"
    if name.startswith("sglang_"):
        return "sglang"
    if name == "llamacpp_config":
        return "llamacpp"
    if name.startswith("kt_") or name in ("ktransformers_config", "cpu_infer", "chunk_size", "mode"):
        return "ktransformers"
    return None


def review_settings(config: ModelConfig, engine: type[BaseEngine]) -> str | None:
    """Raise ConfigError for a setting ``engine`` cannot honour (its declared :class:`Capabilities`: LoRA adapters,
    ``settings``); log (and return) the line of ignored settings."""
    check_settings(config, engine)
    line = ignored_line(config, engine.name)
    if line:
        logger.warning("%s", line)
    return line


def check_settings(config: ModelConfig, engine: type[BaseEngine]) -> None:
    """Raise ConfigError for the first setting ``engine`` cannot honour; nothing is logged."""
    named = named_adapters(config)
    if named and not engine.capabilities.named_adapters:
        param = "lora_modules" if config.lora_modules else "merge_adapters"
        raise ConfigError(
            f"The {engine.label or engine.name} engine does not serve named LoRA adapters side by side "
            f"({', '.join(named)}); use an engine that does (huggingface, vllm), or merge the adapters "
            "(adapter_name_or_path with merge_adapters: true).", param=param,
        )
    if merged_adapters(config) and not engine.capabilities.lora:
        raise ConfigError(
            f"The {engine.label or engine.name} engine does not apply LoRA adapters; merge them into the model, or "
            "use an engine that applies them (huggingface, vllm, sglang).",
            param="adapter_name_or_path",
        )
    for name in ENGINE_SETTINGS:
        value = getattr(config, name)
        if value != ModelConfig.model_fields[name].default and name not in engine.capabilities.settings:
            message = _REFUSALS.get(name, _REFUSAL).format(engine=engine.label or engine.name, name=name, value=value)
            raise ConfigError(message, param=name)
    for name in UNHONOURED_MEDIA_SETTINGS:
        if getattr(config, name) != ModelConfig.model_fields[name].default:
            raise ConfigError(
                f"{name} is not honoured by any lmchat engine yet (the media are processed with the model's processor "
                f"defaults); leave {name} out.", param=name,
            )


def ignored_line(config: ModelConfig, engine: str) -> str | None:
    """``Ignored settings: lora_rank, lora_target (they only matter to training); ...`` or None."""
    reasons: dict[str, list[str]] = {}
    for name in config.ignored:  # names only: values may be secrets (ms_hub_token, swanlab_api_key)
        reasons.setdefault(f"they {IGNORED_KEYS[name]}", []).append(name)
    for name in sorted(config.model_fields_set):
        owner = owner_engine(name)
        if owner is not None and owner != engine:
            reasons.setdefault(f"settings of the {owner} engine", []).append(name)
    if config.stage in _TRAINING_STAGES:
        reasons.setdefault("a training stage: the model chats as it is", []).append(f"stage: {config.stage}")
    if config.length_penalty != 1.0:
        reasons.setdefault("no effect without beam search, as in transformers", []).append("length_penalty")
    if not reasons:
        return None
    return "Ignored settings: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in reasons.items()) + "."


def check_stage(config: ModelConfig, info: ModelInfo) -> None:
    """``stage: rm`` (LLaMA-Factory's reward model) needs a model that scores; the loaded one only generates."""
    if config.stage == "rm" and not info.is_reward_model:
        raise ConfigError(
            f"stage: rm asks for a reward model, but '{info.name}' is a generative model (no value head, not a "
            "sequence classifier); leave stage out to chat with it.",
            param="stage",
        )
