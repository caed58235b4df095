"""Which engine a one-person chat runs when the user named none: decided here, once, for every front end that asks.

A GGUF model (the default model is one) starts on the llama.cpp engine in under a second (docs/benchmarks.md: 0.9 s
to the first token against 6 s on the transformers engine) and answers one stream there about as fast as the
transformers engine's native 4-bit step (88 against 96 tok/s on an AVX512-VNNI Xeon; 90 against 46 before the
native step). So a terminal chat whose settings name no ``infer_backend`` runs a GGUF model on the llama.cpp engine
when ``llama-cpp-python`` is installed (``make setup`` installs it; ``make chat`` alone does not) and that engine
honours every given setting. Anything else keeps LLaMA-Factory's default, the transformers engine, which also
serves many streams best (``lmchat serve`` does not ask here). ``infer_backend: huggingface`` keeps the
transformers engine for a GGUF model too. The choice is said, with its reason, on the chat's first line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmchat.config.model_config import ModelConfig
from lmchat.errors import ConfigError

LLAMACPP_PACKAGE = "llama_cpp"


@dataclass(frozen=True)
class EngineChoice:
    """The settings to load (``infer_backend`` filled in when this chose it) and the line that says why."""

    model_args: dict[str, Any]
    reason: str | None  # None: the user chose, or nothing was decided (not a GGUF model)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_chat_engine(model_args: dict[str, Any],
                       installed: Callable[[str], bool] = _installed) -> EngineChoice:
    """The engine for one person's chat with ``model_args`` (LLaMA-Factory's settings, as given)."""
    config = ModelConfig.from_dict(model_args)  # bad settings fail here, as they would in ChatModel
    if "infer_backend" in config.model_fields_set or config.infer_backend != "huggingface":
        return EngineChoice(model_args, None)  # named (or implied, as use_kt does): the user's choice stands
    model = config.model_name_or_path
    if model and not model.endswith(".gguf"):
        return EngineChoice(model_args, None)  # a transformers checkpoint: the transformers engine
    what = f"{model} is a GGUF model" if model else "the default model is a GGUF"
    if not installed(LLAMACPP_PACKAGE):
        return EngineChoice(model_args, f"lmchat: transformers engine ({what}; the llama.cpp engine, faster for "
                                        "one chat, is not installed: make setup installs it).")
    from lmchat.config.review import check_settings
    from lmchat.engines.registry import get_engine_class

    try:
        check_settings(config.model_copy(update={"infer_backend": "llamacpp"}), get_engine_class("llamacpp"))
    except ConfigError as exc:
        return EngineChoice(model_args, f"lmchat: transformers engine ({what}, but the llama.cpp engine cannot "
                                        f"honour {exc.param}).")
    return EngineChoice({**model_args, "infer_backend": "llamacpp"},
                        f"lmchat: llama.cpp engine ({what}: it starts in about a second and answers one chat fast; "
                        "infer_backend huggingface picks the transformers engine).")
