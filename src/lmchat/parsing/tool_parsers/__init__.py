"""Tool-call parsers, registered lazily by name: a parser's module is imported only when it is chosen.

Built-ins are listed below as ``module:Class`` strings; other names are added at run time with
:func:`register_tool_parser` (usable as a class decorator). Aliases follow vLLM's and LLaMA-Factory's names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, overload

from lmchat.errors import ConfigError, unknown_name_message

if TYPE_CHECKING:
    from lmchat.parsing.tool_parsers.base import ToolParser

_PACKAGE = "lmchat.parsing.tool_parsers"
_BUILTINS: dict[str, str] = {
    "hermes": f"{_PACKAGE}.hermes:HermesToolParser",
    "llama3_json": f"{_PACKAGE}.llama3_json:Llama3JsonToolParser",
    "pythonic": f"{_PACKAGE}.pythonic:PythonicToolParser",
    "mistral": f"{_PACKAGE}.mistral:MistralToolParser",
    "glm4": f"{_PACKAGE}.glm:Glm4ToolParser",
    "glm45": f"{_PACKAGE}.glm:Glm45ToolParser",
    "deepseek_v3": f"{_PACKAGE}.deepseek:DeepSeekV3ToolParser",
    "default": f"{_PACKAGE}.react:ReactToolParser",
    "longcat": f"{_PACKAGE}.hermes:LongCatToolParser",
    "internlm": f"{_PACKAGE}.hermes:InternLm2ToolParser",
    "granite": f"{_PACKAGE}.json_lists:GraniteToolParser",
    "phi4_mini_json": f"{_PACKAGE}.json_lists:Phi4MiniToolParser",
    "jamba": f"{_PACKAGE}.json_lists:JambaToolParser",
    "hunyuan_a13b": f"{_PACKAGE}.json_lists:HunyuanToolParser",
    "xlam": f"{_PACKAGE}.json_lists:XlamToolParser",
    "granite_20b_fc": f"{_PACKAGE}.json_marked:Granite20bFcToolParser",
    "gigachat3": f"{_PACKAGE}.json_marked:GigaChat3ToolParser",
    "qwen3_coder": f"{_PACKAGE}.xml_calls:Qwen3CoderToolParser",
    "step3p5": f"{_PACKAGE}.xml_calls:Step3p5ToolParser",
    "seed_oss": f"{_PACKAGE}.xml_calls:SeedOssToolParser",
    "minimax_m2": f"{_PACKAGE}.xml_calls:MiniMaxM2ToolParser",
    "minimax": f"{_PACKAGE}.minimax:MiniMaxToolParser",
    "step3": f"{_PACKAGE}.xml_calls:Step3ToolParser",
    "lfm2": f"{_PACKAGE}.pythonic:Lfm2ToolParser",
    "olmo3": f"{_PACKAGE}.pythonic:Olmo3ToolParser",
    "kimi_k2": f"{_PACKAGE}.kimi:KimiK2ToolParser",
    "functionary_v3_2": f"{_PACKAGE}.functionary:FunctionaryV32ToolParser",
    "functionary_v3_1": f"{_PACKAGE}.functionary:FunctionaryV31ToolParser",
    "openai": f"{_PACKAGE}.harmony:OpenAIToolParser",
    # forced calls (tool_choice required / a named function), constrained to plain JSON: structured/tool_choice.py
    "tool_choice_required": f"{_PACKAGE}.forced:RequiredCallsToolParser",
    "tool_choice_named": f"{_PACKAGE}.forced:NamedCallToolParser",
}
_ALIASES: dict[str, str] = {
    "qwen": "hermes",
    "qwen25": "hermes",
    "qwen3": "hermes",
    "llama3": "llama3_json",
    "llama4_pythonic": "pythonic",
    "glm4_moe": "glm45",
    "deepseek_v31": "deepseek_v3",
    "react": "default",
    "hermes_2_pro": "hermes",
    "ernie45": "hermes",
    "ernie45_moe": "hermes",
    "granite4": "hermes",
    "internlm2": "internlm",
    "phi4_mini": "phi4_mini_json",
    "hunyuan": "hunyuan_a13b",
    "qwen3coder": "qwen3_coder",
    "qwen3_xml": "qwen3_coder",
    "step3.5": "step3p5",
    "minimax_m1": "minimax",
    "seed": "seed_oss",
    "functionary": "functionary_v3_2",
    "functionary_v3_1_llama_3_1": "functionary_v3_1",
    "gpt_oss": "openai",
    "harmony": "openai",
}
_registered: dict[str, type[ToolParser] | str] = {}

P = TypeVar("P", bound="type[ToolParser]")


@overload
def register_tool_parser(name: str) -> Callable[[P], P]: ...
@overload
def register_tool_parser(name: str, parser: type[ToolParser] | str) -> None: ...


def register_tool_parser(name: str, parser: type[ToolParser] | str | None = None) -> Callable[[P], P] | None:
    """Register a parser class (or a lazy ``module:Class`` path) as ``name``; without ``parser``, a decorator."""
    if parser is not None:
        _registered[_normalise(name)] = parser
        return None

    def decorate(cls: P) -> P:
        _registered[_normalise(name)] = cls
        return cls

    return decorate


def tool_parser_names() -> list[str]:
    """Every name :func:`get_tool_parser` accepts, aliases included."""
    return sorted({*_BUILTINS, *_ALIASES, *_registered})


def get_tool_parser(name: str) -> type[ToolParser]:
    """The parser class registered as ``name`` (case and ``-``/``_`` do not matter)."""
    key = _normalise(name)
    if key in _registered:
        target = _registered[key]
        return _load(target) if isinstance(target, str) else target
    key = _ALIASES.get(key, key)
    if key in _BUILTINS:
        return _load(_BUILTINS[key])
    raise ConfigError(unknown_name_message("tool parser", name, tool_parser_names()), param="tool_parser")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _load(path: str) -> type[ToolParser]:
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
