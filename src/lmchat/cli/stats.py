"""One answer as it streams: its text, reasoning, finish reason, and the numbers /stats shows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lmchat.chat.assemble import AnswerAssembler
from lmchat.chat.response import ChatChunk, Response


@dataclass(frozen=True)
class AnswerStats:
    prompt_tokens: int
    answer_tokens: int
    first_token_s: float | None
    tokens_per_s: float | None
    total_s: float

    def describe(self) -> str:
        first = f"{self.first_token_s:.2f} s" if self.first_token_s is not None else "n/a"
        speed = f"{self.tokens_per_s:.1f} tokens/s" if self.tokens_per_s is not None else "n/a"
        return (
            f"Last answer: prompt {self.prompt_tokens} tokens, answer {self.answer_tokens} tokens, "
            f"time to first token {first}, speed {speed}, total {self.total_s:.2f} s."
        )


class AnswerRecorder:
    """One answer as it streams (folded by the facade's :class:`AnswerAssembler`), and when its pieces came.
    Speed counts the tokens after the first over the time after the first."""

    def __init__(self, prompt_tokens: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.answer = AnswerAssembler(0, prompt_tokens)
        self._clock = clock
        self._started = clock()
        self._first: float | None = None
        self._ended: float | None = None

    @property
    def finish_reason(self) -> str | None:
        return self.answer.finish_reason

    @property
    def content(self) -> str:
        return self._so_far().content or ""

    @property
    def reasoning(self) -> str:
        return self._so_far().reasoning_text or ""

    def _so_far(self) -> Response:
        return self.answer.response(finish_reason="abort")  # the reason only shows if it never finished

    def add(self, chunk: ChatChunk) -> None:
        if self._first is None and (chunk.text or chunk.reasoning or chunk.content):
            self._first = self._clock()
        self.answer.add(chunk)

    def done(self) -> None:
        """The stream ended (finished, stopped or failed)."""
        self._ended = self._clock()

    def stats(self, count_tokens: Callable[[str], int]) -> AnswerStats:
        """The numbers of this answer; a stopped answer's tokens are counted from its text."""
        end = self._ended or self._clock()
        if self.finish_reason is not None:
            tokens = self.answer.completion_tokens
        else:
            text = self.reasoning + self.content
            tokens = count_tokens(text) if text else 0
        first = None if self._first is None else self._first - self._started
        speed = None
        if self._first is not None and tokens > 1 and end > self._first:
            speed = (tokens - 1) / (end - self._first)
        return AnswerStats(self.answer.prompt_tokens, tokens, first, speed, end - self._started)
