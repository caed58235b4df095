"""Fold a streamed answer (:class:`~lmchat.chat.response.ChatChunk` items) into an OpenAI assistant message."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from lmchat.chat.response import ChatChunk


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class AnswerBuilder:
    """The answer so far: visible text, reasoning, tool calls, and at the end its finish reason and token counts."""

    raw: str = ""
    content: str = ""
    reasoning: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    def feed(self, chunk: ChatChunk) -> None:
        self.raw += chunk.text
        self.content += chunk.content
        self.reasoning += chunk.reasoning
        for delta in chunk.tool_calls:
            call = self.calls.setdefault(delta.index, _Call())
            call.id = delta.id or call.id
            call.name = delta.name or call.name
            call.arguments += delta.arguments or ""
        if chunk.finish_reason is not None:
            self.finish(chunk.finish_reason, chunk.prompt_tokens, chunk.completion_tokens)

    def finish(self, reason: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.finish_reason = reason
        self.prompt_tokens = prompt_tokens or self.prompt_tokens
        self.completion_tokens = completion_tokens or self.completion_tokens
        self.ended = time.perf_counter()

    def message(self) -> dict[str, Any]:
        """The assistant message, as the conversation (and the chat template) holds it."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.calls:
            message["tool_calls"] = [
                {"id": call.id or f"call_{index}", "type": "function",
                 "function": {"name": call.name, "arguments": _json_text(call.arguments)}}
                for index, call in sorted(self.calls.items())
            ]
        return message

    def stats(self) -> str:
        """``42 tokens · 12.3 tokens/s · prompt 17 tokens · finish: stop``, or empty before the end."""
        if self.ended is None:
            return ""
        seconds = max(self.ended - self.started, 1e-6)
        speed = self.completion_tokens / seconds
        return (
            f"{self.completion_tokens} tokens · {speed:.1f} tokens/s · prompt {self.prompt_tokens} tokens"
            f" · finish: {self.finish_reason}"
        )


def _json_text(arguments: str) -> str:
    """Arguments as compact JSON text when they parse (the stream may split them anywhere), else as produced."""
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False)
    except json.JSONDecodeError:
        return arguments
