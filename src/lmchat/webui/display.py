"""What the chat shows: Gradio ``Chatbot`` messages made from the OpenAI conversation.

Reasoning, tool calls and tool results become collapsible blocks (Gradio's ``metadata.title``); media parts become
files shown in the chat. :func:`chatbot_messages` also returns, for every shown message, the index of the
conversation message it came from, so that the chat's own edit/undo/retry events map back to the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lmchat.webui.conversation import Message, message_media, message_text

Shown = dict[str, Any]


def chatbot_messages(messages: Sequence[Message], notice: str = "") -> tuple[list[Shown], list[int]]:
    """``(shown messages, conversation index of each)``; ``notice`` (an error) is shown last, index -1."""
    shown: list[Shown] = []
    origins: list[int] = []
    for index, message in enumerate(messages):
        for item in _shown(message):
            shown.append(item)
            origins.append(index)
    if notice:
        shown.append({"role": "assistant", "content": f"⚠ **Error:** {notice}"})
        origins.append(-1)
    return shown, origins


def conversation_index(messages: Sequence[Message], shown_index: Any) -> int:
    """The conversation index behind the chat's ``shown_index`` (Gradio may give ``(row, column)`` pairs)."""
    row = shown_index[0] if isinstance(shown_index, (list, tuple)) else shown_index
    _, origins = chatbot_messages(messages)
    if not isinstance(row, int) or not 0 <= row < len(origins):
        return len(messages) - 1
    return origins[row]


def _shown(message: Message) -> list[Shown]:
    role = message["role"]
    if role == "user":
        return [_user(message)]
    if role == "tool":
        title = f"Tool result: {message.get('name') or message.get('tool_call_id') or 'tool'}"
        return [_block(_code(message_text(message)), title)]
    if role == "assistant":
        return _assistant(message)
    return [{"role": "assistant", "content": message_text(message)}]


def _user(message: Message) -> Shown:
    text = message_text(message)
    media = message_media(message)
    if not media:
        return {"role": "user", "content": text}
    content: list[Any] = [text] if text else []
    for kind, url in media:
        if url.startswith(("http://", "https://", "data:")):
            content.append(f"[{kind}]({url})" if not url.startswith("data:") else f"({kind} attached)")
        else:
            content.append({"path": url})
    return {"role": "user", "content": content}


def _assistant(message: Message) -> list[Shown]:
    shown: list[Shown] = []
    text = message_text(message)
    calls = message.get("tool_calls") or ()
    if message.get("reasoning_content"):
        shown.append(_block(message["reasoning_content"], "Reasoning", collapsed=bool(text or calls)))
    if text or not (shown or calls):
        shown.append({"role": "assistant", "content": text})
    for call in calls:
        function = call.get("function", {})
        shown.append(_block(_code(_pretty(function.get("arguments", "")), "json"), f"Tool call: {function.get('name')}"))
    return shown


def _block(text: str, title: str, collapsed: bool = False) -> Shown:
    """A collapsible block, open unless ``collapsed`` (reasoning folds away once the answer has begun)."""
    metadata = {"title": title, "status": "done"} if collapsed else {"title": title}
    return {"role": "assistant", "content": text, "metadata": metadata}


def _pretty(arguments: Any) -> str:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return str(arguments)
    return json.dumps(value, indent=2, ensure_ascii=False)


def _code(text: str, language: str = "") -> str:
    return f"```{language}\n{text}\n```"
