"""``lmchat webui``: a browser chat over :class:`~lmchat.chat.chat_model.ChatModel` (Gradio).

Gradio is imported only when the page is built: ``pip install 'lmchat[webui]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import gradio as gr

    from lmchat.chat.chat_model import ChatModel

__all__ = ["build_app"]


def build_app(model: ChatModel, media_dir: Path) -> gr.Blocks:
    """The chat page for ``model`` (see :func:`lmchat.webui.app.build_app`)."""
    from lmchat.errors import require

    require("gradio", "webui")
    from lmchat.webui.app import build_app as build

    return build(model, media_dir)
