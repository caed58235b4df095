"""The web chat's conversation: OpenAI messages and the last-turn edits (undo, regenerate, edit, tool results).

Pure functions over plain lists of dicts, with no Gradio, so they are tested on their own. A user turn with files
holds OpenAI content parts: ``{"type": "text"}`` plus ``image_url`` / ``video_url`` / ``audio_url`` parts whose
``url`` is a local file path (the file Gradio received). Downloads turn those paths into data URLs
(:mod:`lmchat.webui.transfer`), so a saved conversation stands on its own.
"""

from __future__ import annotations

import copy
import mimetypes
from collections.abc import Sequence
from typing import Any

from lmchat.chat.messages import media_of, part_media
from lmchat.errors import InvalidRequestError

Message = dict[str, Any]
MEDIA_PARTS = {"image": "image_url", "video": "video_url", "audio": "audio_url"}  # the parts the page writes


def media_kind(path: str) -> str | None:
    """``image``, ``video`` or ``audio`` by the file's name (or data URL's type); None for anything else."""
    if path.startswith("data:"):
        mime = path[5:].split(";", 1)[0]
    else:
        mime = mimetypes.guess_type(path)[0] or ""
    kind = mime.split("/", 1)[0]
    return kind if kind in MEDIA_PARTS else None


def user_message(text: str, files: Sequence[str] = ()) -> Message:
    """A user turn: plain text, or OpenAI content parts when files are attached."""
    text = (text or "").strip()
    if not files:
        if not text:
            raise InvalidRequestError("Type a message or attach a file first.")
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for path in files:
        kind = media_kind(path)
        if kind is None:
            raise InvalidRequestError(f"'{path.rsplit('/', 1)[-1]}' is not an image, a video or an audio file.")
        parts.append({"type": MEDIA_PARTS[kind], MEDIA_PARTS[kind]: {"url": path}})
    return {"role": "user", "content": parts}


def message_text(message: Message) -> str:
    """The text of a message, whatever its content's shape."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def message_media(message: Message) -> list[tuple[str, str]]:
    """``(kind, url)`` of every media part of a message, in order (read as ``ChatModel.prepare`` reads them)."""
    content = message.get("content")
    if not isinstance(content, list):
        return []
    found = (part_media(part) for part in content if isinstance(part, dict))
    return [media for media in found if media is not None and media[1] is not None]


def conversation_media(messages: Sequence[Message]) -> dict[str, list[str]]:
    """Every image, video and audio of the conversation, in order (what the model is given with it)."""
    return {kind: list(items) for kind, items in media_of(messages).by_kind().items()}


def _last_index(messages: Sequence[Message], role: str) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == role:
            return index
    return None


def undo_last_turn(messages: Sequence[Message]) -> tuple[list[Message], Message | None]:
    """Drop the last user turn and everything after it; also return that user message (to put back in the box)."""
    index = _last_index(messages, "user")
    if index is None:
        return list(messages), None
    return copy.deepcopy(list(messages[:index])), copy.deepcopy(messages[index])


def truncate_for_regenerate(messages: Sequence[Message]) -> list[Message]:
    """The conversation without its last answer, ready to be answered again."""
    end = len(messages)
    while end and messages[end - 1]["role"] == "assistant":
        end -= 1
    if not end:
        raise InvalidRequestError("There is no question to answer again yet.")
    return copy.deepcopy(list(messages[:end]))


def edit_user_message(messages: Sequence[Message], index: int, text: str) -> list[Message]:
    """Replace the text of user message ``index`` (keeping its files) and drop everything after it."""
    if not 0 <= index < len(messages) or messages[index]["role"] != "user":
        raise InvalidRequestError("Only your own messages can be edited.")
    edited = copy.deepcopy(messages[index])
    media = [url for _, url in message_media(edited)]
    edited = user_message(text, media)
    return [*copy.deepcopy(list(messages[:index])), edited]


def pending_tool_calls(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The last assistant turn's tool calls that have no ``tool`` message answering them yet."""
    index = _last_index(messages, "assistant")
    if index is None:
        return []
    answered = {m.get("tool_call_id") for m in messages[index + 1:] if m["role"] == "tool"}
    return [call for call in messages[index].get("tool_calls") or () if call.get("id") not in answered]


def add_tool_result(messages: Sequence[Message], content: str) -> list[Message]:
    """Answer the first pending tool call with ``content`` as a ``tool`` message."""
    content = (content or "").strip()
    if not content:
        raise InvalidRequestError("Type the tool's result first.")
    pending = pending_tool_calls(messages)
    if not pending:
        raise InvalidRequestError("No tool call is waiting for a result: the model has not called a tool.")
    call = pending[0]
    result = {"role": "tool", "tool_call_id": call.get("id"), "name": call["function"]["name"], "content": content}
    return [*copy.deepcopy(list(messages)), result]


def can_answer(messages: Sequence[Message]) -> bool:
    """The conversation ends with a turn the model should answer (a question, or every tool result)."""
    if not messages:
        return False
    last = messages[-1]["role"]
    return last == "user" or (last == "tool" and not pending_tool_calls(messages))
