"""What an engine emits for one sequence: text deltas, then one finish event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's log-probability, with the most likely alternatives when asked for."""

    token: str
    token_id: int
    logprob: float
    top: tuple[tuple[str, int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text, from ``num_tokens`` newly generated tokens (text may be empty mid-character)."""

    text: str
    num_tokens: int = 1
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Finished:
    """The sequence ended. ``completion_tokens`` counts every generated token, an end-of-turn token included."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    stop_token: str | None = field(default=None)


EngineEvent = TextDelta | Finished
