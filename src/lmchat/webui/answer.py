"""The answer as the page shows it: the facade's assembled answer (:class:`~lmchat.chat.assemble.AnswerAssembler`)
as an OpenAI assistant message, and its speed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lmchat.chat.assemble import AnswerAssembler
from lmchat.chat.response import ChatChunk, Response


@dataclass
class AnswerBuilder:
    """The answer so far; at the end its finish reason and token counts (given by :meth:`finish` when the user
    stopped it)."""

    answer: AnswerAssembler = field(default_factory=AnswerAssembler)
    finish_reason: str | None = None
    completion_tokens: int | None = None
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    @property
    def raw(self) -> str:
        return self.answer.text

    def feed(self, chunk: ChatChunk) -> None:
        self.answer.add(chunk)
        if chunk.finish_reason is not None:
            self.finish(chunk.finish_reason)

    def finish(self, reason: str, prompt_tokens: int = 0, completion_tokens: int | None = None) -> None:
        self.finish_reason = reason
        self.answer.prompt_tokens = self.answer.prompt_tokens or prompt_tokens
        self.completion_tokens = completion_tokens
        self.ended = time.perf_counter()

    def response(self) -> Response:
        return self.answer.response(self.finish_reason or "abort", self.completion_tokens)

    def message(self) -> dict[str, Any]:
        """The assistant message, as the conversation (and the chat template) holds it."""
        response = self.response()
        message: dict[str, Any] = {"role": "assistant", "content": response.content or ""}
        if response.reasoning_text:
            message["reasoning_content"] = response.reasoning_text
        if response.tool_calls:
            message["tool_calls"] = [
                {"id": call.id or f"call_{index}", "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments}}
                for index, call in enumerate(response.tool_calls)
            ]
        return message

    def stats(self) -> str:
        """``42 tokens · 12.3 tokens/s · prompt 17 tokens · finish: stop``, or empty before the end."""
        if self.ended is None:
            return ""
        response = self.response()
        seconds = max(self.ended - self.started, 1e-6)
        speed = response.response_length / seconds
        return (
            f"{response.response_length} tokens · {speed:.1f} tokens/s · prompt {response.prompt_length} tokens"
            f" · finish: {response.finish_reason}"
        )
