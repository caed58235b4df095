"""What the page's buttons do: each handler takes the conversation (and the controls) and returns the new page state.

Errors the user can fix are raised as ``gr.Error`` (a readable pop-up, and the chained answer does not start);
answering never raises (see :mod:`lmchat.webui.generate`).
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import gradio as gr

from lmchat.chat.chat_model import ChatModel
from lmchat.errors import LmchatError
from lmchat.webui import conversation as conv
from lmchat.webui.display import chatbot_messages, conversation_index
from lmchat.webui.generate import Answerer, Options
from lmchat.webui.transfer import export_conversation, read_conversation_file

EMPTY_BOX = {"text": "", "files": []}


def shown(messages: list[dict], notice: str = "") -> list[dict]:
    return chatbot_messages(messages, notice)[0]


class ChatHandlers:
    """The handlers of one page, bound to one model."""

    def __init__(self, model: ChatModel, media_dir: Path) -> None:
        self.model = model
        self.media_dir = media_dir
        self.answerer = Answerer(model)
        self.supports_thinking = "enable_thinking" in model.template.source

    # --- turns ----------------------------------------------------------------------------------------
    def add_user_turn(self, box: dict | None, messages: list[dict]):
        box = box or EMPTY_BOX
        files = [_file_path(item) for item in box.get("files") or ()]
        with _readable_errors():
            messages = [*messages, conv.user_message(box.get("text", ""), files)]
        return messages, gr.MultimodalTextbox(value=None, interactive=False), shown(messages)

    def add_tool_result(self, text: str, messages: list[dict]):
        with _readable_errors():
            messages = conv.add_tool_result(messages, text)
        return messages, "", shown(messages)

    def regenerate(self, messages: list[dict]):
        with _readable_errors():
            messages = conv.truncate_for_regenerate(messages)
        return messages, gr.MultimodalTextbox(interactive=False), shown(messages)

    def edit(self, messages: list[dict], data: gr.EditData):
        index = conversation_index(messages, data.index)
        with _readable_errors():
            messages = conv.edit_user_message(messages, index, str(data.value))
        return messages, gr.MultimodalTextbox(interactive=False), shown(messages)

    def undo(self, messages: list[dict]):
        messages, removed = conv.undo_last_turn(messages)
        box = EMPTY_BOX
        if removed is not None:
            box = {"text": conv.message_text(removed), "files": [url for _, url in conv.message_media(removed)]}
        return messages, box, shown(messages), ""

    def clear(self):
        return [], EMPTY_BOX, [], ""

    # --- answering ----------------------------------------------------------------------------------
    def respond(self, messages: list[dict], system: str, tools: str, temperature: float, top_p: float,
                top_k: float, max_new_tokens: float, seed: str, thinking: bool, adapter: str | None,
                request: gr.Request):
        """Stream the answer: yields (chat, conversation, stats); the conversation is only sent at the end."""
        options = Options(temperature, top_p, int(top_k), int(max_new_tokens), seed,
                          thinking if self.supports_thinking else None, adapter)
        session = request.session_hash or "default"
        for progress in self.answerer.stream(session, messages, system or "", tools or "", options):
            if not progress.done:
                yield shown(progress.messages), gr.skip(), gr.skip()
                continue
            if progress.notice:
                gr.Warning(progress.notice)
            stats = f"Last answer: {progress.stats}" if progress.stats else ""
            yield shown(progress.messages, progress.notice), progress.messages, stats

    def stop(self, request: gr.Request) -> None:
        self.answerer.stop(request.session_hash or "default")

    # --- saving -------------------------------------------------------------------------------------
    def persist(self, messages: list[dict], system: str, tools: str):
        """The browser's saved copy and the download file, both made from the current conversation."""
        saved = {"messages": messages, "system": system or "", "tools": tools or ""}
        try:
            body = export_conversation(messages, system or "", tools or "", self.model.engine.info.name)
        except LmchatError:  # tools JSON being typed: save the page, skip the download until it parses
            return saved, gr.skip()
        text = json.dumps(body, indent=2, ensure_ascii=False)
        folder = self.media_dir / "downloads" / hashlib.sha256(text.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "conversation.json"
        path.write_text(text, encoding="utf-8")
        return saved, str(path)

    def restore(self, saved: dict[str, Any] | None):
        saved = saved if isinstance(saved, dict) else {}
        messages = saved.get("messages") if isinstance(saved.get("messages"), list) else []
        return messages, saved.get("system") or "", saved.get("tools") or "", shown(messages)

    def upload(self, path: str):
        with _readable_errors():
            messages, system, tools = read_conversation_file(path, self.media_dir / "uploads")
        return messages, system, tools, shown(messages), ""


class _readable_errors:
    """Turn an LmchatError into a ``gr.Error`` pop-up with its message."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, LmchatError):
            raise gr.Error(error.message) from None


def _file_path(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("path"))
    return str(getattr(item, "path", item))
