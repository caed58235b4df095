"""What an engine emits for one sequence: text deltas, then one finish event."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One token's log-probability, with the most likely alternatives when asked for (``rank``: the token's place
    in the model's distribution, 1 for the likeliest, where the engine reports it)."""

    token: str
    token_id: int
    logprob: float
    top: tuple[tuple[str, int, float], ...] = ()
    rank: int | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text, from ``num_tokens`` newly generated tokens (text may be empty mid-character)."""

    text: str
    num_tokens: int = 1
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Finished:
    """The sequence ended. ``completion_tokens`` counts every generated token, an end-of-turn token included;
    ``cached_tokens``: the prompt tokens the engine did not compute, reusing another sequence's keys/values."""

    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    stop_token: str | None = field(default=None)
    cached_tokens: int = 0


EngineEvent = TextDelta | Finished
