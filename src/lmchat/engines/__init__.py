"""Engines: the contract, the registry and the built-in backends (imported lazily)."""

from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.events import Finished, TextDelta, TokenLogprob
from lmchat.engines.registry import engine_names, get_engine_class, register_engine

__all__ = [
    "BaseEngine",
    "Capabilities",
    "Finished",
    "GenerationRequest",
    "ModelInfo",
    "TextDelta",
    "TokenLogprob",
    "engine_names",
    "get_engine_class",
    "register_engine",
]
