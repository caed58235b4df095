"""lmchat: talk to large language models through one interface, whatever engine runs them.

Importing lmchat imports no torch and no engine; they load when a ChatModel picks its engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["BaseEngine", "ChatModel", "ModelConfig", "Response", "SamplingParams", "render_prompt"]

_LAZY = {
    "ChatModel": "lmchat.chat.chat_model",
    "Response": "lmchat.chat.response",
    "BaseEngine": "lmchat.engines.base",
    "ModelConfig": "lmchat.config.model_config",
    "SamplingParams": "lmchat.generation.sampling",
    "render_prompt": "lmchat.templates.render",
}

if TYPE_CHECKING:
    from lmchat.chat.chat_model import ChatModel
    from lmchat.chat.response import Response
    from lmchat.config.model_config import ModelConfig
    from lmchat.engines.base import BaseEngine
    from lmchat.generation.sampling import SamplingParams
    from lmchat.templates.render import render_prompt


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmchat' has no attribute {name!r}")
