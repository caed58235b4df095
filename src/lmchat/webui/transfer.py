"""Download and upload a conversation as JSON in OpenAI's chat-request shape.

The file is ``{"model": ..., "messages": [...], "tools": [...]}``: the system prompt is the first message, media
files are embedded as data URLs, and only OpenAI's message keys (plus ``reasoning_content``) are kept. Uploads
accept that object or a bare list of messages.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import mimetypes
from pathlib import Path
from typing import Any

from lmchat.chat.messages import normalise_tools
from lmchat.errors import InvalidRequestError
from lmchat.webui.conversation import MEDIA_PARTS, Message

_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content")
_PART_TYPES = set(MEDIA_PARTS.values())


def export_conversation(messages: list[Message], system: str, tools: str, model: str) -> dict[str, Any]:
    """The conversation as a self-contained OpenAI chat request body."""
    body: dict[str, Any] = {"model": model, "messages": []}
    if system.strip():
        body["messages"].append({"role": "system", "content": system})
    for message in messages:
        kept = {key: copy.deepcopy(message[key]) for key in _MESSAGE_KEYS if key in message}
        body["messages"].append(_map_media(kept, lambda url, where: _to_data_url(url)))
    if tools.strip():
        body["tools"] = normalise_tools(tools)
    return body


def import_conversation(data: Any, media_dir: Path) -> tuple[list[Message], str, str]:
    """``(messages, system, tools_json)`` from a downloaded file's JSON; data URLs become files in ``media_dir``."""
    if isinstance(data, list):
        data = {"messages": data}
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise InvalidRequestError("The file must hold a JSON list of messages or an object with 'messages'.")
    messages = [_checked(index, message) for index, message in enumerate(data["messages"])]
    system = ""
    if messages and messages[0]["role"] in ("system", "developer"):
        system = str(messages.pop(0)["content"] or "")
    tools = normalise_tools(data.get("tools"))
    messages = [_map_media(message, lambda url, where: _from_data_url(url, media_dir, where))
                for message in messages]
    return messages, system, json.dumps(tools, indent=2) if tools else ""


def read_conversation_file(path: str, media_dir: Path) -> tuple[list[Message], str, str]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"Could not read the conversation file: {exc}") from None
    return import_conversation(data, media_dir)


def _checked(index: int, message: Any) -> Message:
    if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant", "tool"):
        raise InvalidRequestError(f"messages[{index}] must be a dict with a role (system, user, assistant or tool).")
    if not isinstance(message.get("content"), (str, list)) and not message.get("tool_calls"):
        raise InvalidRequestError(f"messages[{index}] has no content.")
    return {key: message[key] for key in _MESSAGE_KEYS if key in message}


def _map_media(message: Message, convert) -> Message:
    """``convert(url, where)`` applied to every media part's URL (``where``: the part's place, for errors)."""
    content = message.get("content")
    if isinstance(content, list):
        for index, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in _PART_TYPES:
                holder = part.get(part["type"])
                where = f"content[{index}].{part['type']}"
                if not isinstance(holder, dict) or not isinstance(holder.get("url"), str):
                    raise InvalidRequestError(f"The file's media part {where} has no 'url' string.")
                holder["url"] = convert(holder["url"], where)
    return message


def _to_data_url(url: str) -> str:
    path = Path(url)
    if url.startswith(("data:", "http://", "https://")) or not path.is_file():
        return url
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _from_data_url(url: str, media_dir: Path, where: str) -> str:
    """A data URL's bytes as a file in ``media_dir``; an http(s) URL as is (fetched later under the media fetch
    guard). Anything else names a file of this machine, which a file from the browser must not reach: refused."""
    if url.startswith(("http://", "https://")):
        return url
    if not url.startswith("data:"):
        raise InvalidRequestError(
            f"The file's media part {where} names '{url[:80]}': a conversation file carries media only as data URLs "
            "(as Download JSON writes them) or http(s) URLs, never as paths of this machine.")
    header, _, payload = url.partition(",")
    mime = header[5:].split(";", 1)[0]
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise InvalidRequestError("A media part of the file holds a broken data URL.") from None
    suffix = mimetypes.guess_extension(mime) or ".bin"
    path = media_dir / f"{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    if not path.exists():
        media_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(path)
