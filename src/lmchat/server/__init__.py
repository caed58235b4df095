"""The OpenAI-compatible HTTP server (``lmchat serve``), built on :class:`~lmchat.ChatModel`.

Layout, as in vLLM's ``entrypoints/openai``: ``routes.py`` is the thin router, ``protocol.py`` holds the request and
response models under OpenAI's own names, ``serving/`` has one serving class per endpoint, ``errors.py`` the one
function that maps exceptions to OpenAI error bodies. Importing this package needs the ``serve`` extra
(``pip install 'lmchat[serve]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerSettings", "create_app"]

if TYPE_CHECKING:
    from lmchat.server.app import create_app
    from lmchat.server.settings import ServerSettings


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from lmchat.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from lmchat.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'lmchat.server' has no attribute {name!r}")
