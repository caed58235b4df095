"""The chat's state: the conversation in OpenAI message format, its system prompt, and the /set options."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmchat.chat.messages import build_conversation
from lmchat.errors import InvalidRequestError
from lmchat.generation.sampling import OPTION_ALIASES

_ASSIGNMENT = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=")


@dataclass
class Conversation:
    """User and assistant messages (the system prompt kept apart); answers hold the content, not the reasoning."""

    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)  # media parts for the next user message

    def clear(self) -> None:
        self.messages.clear()
        self.attachments.clear()

    def attach(self, kind: str, source: str) -> None:
        """``/image PATH``: an OpenAI/vLLM content part (``image_url``, ``video_url``, ``audio_url``) that goes
        before the text of the next user message (the facade fetches and decodes it)."""
        self.attachments.append({"type": f"{kind}_url", f"{kind}_url": {"url": source}})

    def add_user(self, text: str) -> None:
        if self.attachments:
            content: Any = [*self.attachments, {"type": "text", "text": text}]
            self.attachments = []
        else:
            content = text
        self.messages.append({"role": "user", "content": content})

    def add_answer(self, content: str) -> None:
        self.messages.append({"role": "assistant", "content": content})

    def ends_with_user(self) -> bool:
        return bool(self.messages) and self.messages[-1]["role"] == "user"

    def pop_answer(self) -> str | None:
        """Remove a trailing assistant message and return its content (None when there is none)."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages.pop()["content"]
        return None

    def drop_last_user(self) -> None:
        """Take back an unanswered user message; its media stay attached for the next one."""
        if self.ends_with_user():
            content = self.messages.pop()["content"]
            if isinstance(content, list):
                self.attachments = [part for part in content if part.get("type") != "text"] + self.attachments

    def undo(self) -> int:
        """Drop the last exchange (the last user message and everything after it); the number of messages dropped."""
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index]["role"] == "user":
                dropped = len(self.messages) - index
                del self.messages[index:]
                return dropped
        return 0

    def to_openai(self) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return system + [dict(message) for message in self.messages]

    def save(self, path: str | Path) -> int:
        """Write the conversation as a JSON list of OpenAI messages; the number of messages written."""
        messages = self.to_openai()
        Path(path).expanduser().write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return len(messages)

    @classmethod
    def load(cls, path: str | Path) -> Conversation:
        """Read a JSON list of OpenAI messages (or ``{"messages": [...]}``), validated like a chat request."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}).") from None
        if isinstance(data, dict) and "messages" in data:
            data = data["messages"]
        if not isinstance(data, list):
            raise InvalidRequestError(f"{path} must hold a JSON list of messages (OpenAI format).")
        messages = build_conversation(data)
        if messages and messages[0]["role"] in ("system", "developer"):
            return cls(system=messages[0]["content"], messages=messages[1:])
        return cls(messages=messages)


def parse_assignments(text: str) -> dict[str, Any]:
    """``temperature=0.3 stop=["###"] seed=`` -> each value parsed as JSON when it is JSON, else kept as text.

    A value runs to the next `` key=``, so ``stop=User said`` is one string. An empty value (``seed=``) is None:
    the option goes back to the model's default.
    """
    matches = list(_ASSIGNMENT.finditer(text))
    if not matches or text[: matches[0].start()].strip():
        word = text.split()[0] if text.split() else text
        raise InvalidRequestError(f"Expected key=value, got '{word}' (for example /set temperature=0.3).")
    assignments: dict[str, Any] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        value = text[match.end(): following.start() if following else len(text)].strip()
        assignments[OPTION_ALIASES.get(match.group(1), match.group(1))] = _value(value)
    return assignments


def _value(text: str) -> Any:
    if text == "":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def merge_options(current: dict[str, Any], assignments: dict[str, Any]) -> dict[str, Any]:
    """The options after applying ``assignments`` (None removes a key)."""
    merged = dict(current)
    for key, value in assignments.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def validate_options(model: Any, options: dict[str, Any]) -> None:
    """Check chat options with the same validation as a chat call (unknown keys name the closest option)."""
    if model.resolve_options(**options).params.n != 1:
        raise InvalidRequestError("The chat shows one answer at a time, so n must be 1.", param="n")
