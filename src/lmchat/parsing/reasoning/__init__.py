"""Reasoning parsers, registered by name: split the model's reasoning off its visible answer, in one piece or
streamed.

A reasoning parser class gives ``parse(text, starts_in_reasoning=..., ends=...)``, ``start_stream(...)`` (a
stream with ``feed``/``finish``) and ``opens_in(prompt)`` (whether the generation prompt left a reasoning block
open). Built-ins: ``think`` and its tag variants (``tagged.py``), gpt-oss's harmony channels (``harmony.py``).
Names follow vLLM's; third parties add theirs with :func:`register_reasoning_parser`.
"""

from __future__ import annotations

import importlib
from typing import Any

from lmchat.errors import ConfigError, unknown_name_message
from lmchat.parsing.reasoning.tagged import ReasoningStream, ThinkReasoningParser

__all__ = ["ReasoningStream", "ThinkReasoningParser", "get_reasoning_parser", "reasoning_parser_names",
           "register_reasoning_parser"]

_TAGGED = "lmchat.parsing.reasoning.tagged"
_BUILTINS: dict[str, str] = {
    "think": f"{_TAGGED}:ThinkReasoningParser",
    "granite": f"{_TAGGED}:GraniteReasoningParser",
    "hunyuan_a13b": f"{_TAGGED}:HunyuanReasoningParser",
    "seed_oss": f"{_TAGGED}:SeedOssReasoningParser",
    "kimi_vl": f"{_TAGGED}:KimiVlReasoningParser",
    "gpt_oss": "lmchat.parsing.reasoning.harmony:HarmonyReasoningParser",
}
_ALIASES: dict[str, str] = {
    # families whose reasoning is <think>...</think> (vLLM's parser names)
    **{name: "think" for name in ("deepseek_r1", "deepseek_v3", "qwen3", "kimi_k2", "minimax_m2", "ernie45",
                                  "olmo3", "step3", "step3p5", "glm45", "longcat")},
    "openai": "gpt_oss",
    "harmony": "gpt_oss",
    "hunyuan": "hunyuan_a13b",
    "seed": "seed_oss",
    "kimi": "kimi_vl",  # SGLang's name
}
_registered: dict[str, Any] = {}


def register_reasoning_parser(name: str, parser: type | str) -> None:
    """Register a reasoning parser class (or a lazy ``module:Class`` path) as ``name``."""
    _registered[_normalise(name)] = parser


def reasoning_parser_names() -> list[str]:
    return sorted({*_BUILTINS, *_ALIASES, *_registered})


def get_reasoning_parser(name: str) -> Any:
    """The reasoning parser class registered as ``name`` (case and ``-``/``_`` do not matter)."""
    key = _normalise(name)
    target = _registered.get(key) or _BUILTINS.get(_ALIASES.get(key, key))
    if target is None:
        raise ConfigError(
            unknown_name_message("reasoning parser", name, reasoning_parser_names()), param="reasoning_parser"
        )
    if not isinstance(target, str):
        return target
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")
