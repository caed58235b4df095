"""What a chat call returns: LLaMA-Factory's ``Response`` plus lmchat's extra fields, and stream chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lmchat.engines.events import TokenLogprob

FinishReason = Literal["stop", "length", "tool_calls", "abort"]


@dataclass
class Response:
    """One answer. ``response_text`` is the raw answer text (stop strings trimmed), as in LLaMA-Factory."""

    response_text: str
    response_length: int
    prompt_length: int
    finish_reason: FinishReason
    index: int = 0
    content: str | None = None
    reasoning_text: str | None = None
    tool_calls: list[Any] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    cached_tokens: int = 0  # prompt tokens the engine reused rather than computed (usage.prompt_tokens_details)


@dataclass(frozen=True)
class ChatChunk:
    """A piece of answer ``index``, and on its last chunk the finish reason and token counts.

    ``text`` is the raw answer text; ``content``, ``reasoning`` and ``tool_calls`` are the same text parsed
    (reasoning split out, tool-call markup turned into :class:`~lmchat.parsing.types.ToolCallDelta` items).
    """

    index: int
    text: str = ""
    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[Any, ...] = ()
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    token_ids: tuple[int, ...] = ()  # the generated tokens since the previous chunk (where the engine reports them)
    stop_string: str | None = None  # on the last chunk: the stop string that ended the answer, if one did
    cached_tokens: int = 0  # on the last chunk: the prompt tokens the engine reused
