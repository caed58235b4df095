"""What the parsers produce: typed answers in one piece, and the deltas of a streamed answer.

``arguments`` is always the JSON text of an object (OpenAI's shape). A streamed answer is a list of
:class:`OutputDelta`; :func:`collect` folds such a list back into the one-piece :class:`ParsedOutput`.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """``call_`` followed by 24 random letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete tool call."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call ``index`` carries ``id`` and ``name``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """A whole answer split into visible text, tool calls and reasoning.

    ``content`` is None when the answer had tool calls or reasoning but no visible text; ``reasoning`` is None when
    the answer had no (non-empty) reasoning.
    """

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class OutputDelta:
    """New visible text, reasoning text and/or tool-call pieces, in the order the model produced them."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


def collect(deltas: Iterable[OutputDelta]) -> ParsedOutput:
    """Fold streamed deltas into the one-piece result (what a non-streamed answer gives)."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        content.append(delta.content)
        reasoning.append(delta.reasoning)
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            call["name"] = piece.name or call["name"]
            call["arguments"] += piece.arguments
    tool_calls = [ToolCall(**calls[index]) for index in sorted(calls)]
    reasoning_text = "".join(reasoning) or None
    content_text = "".join(content)
    if not content_text and (tool_calls or reasoning_text is not None):
        return ParsedOutput(None, tool_calls, reasoning_text)
    return ParsedOutput(content_text, tool_calls, reasoning_text)


def merge_deltas(deltas: Iterable[OutputDelta]) -> list[OutputDelta]:
    """Join neighbouring deltas of the same kind (text with text, calls with calls); drop empty ones.

    Neighbouring pieces of the same call are joined too: a piece with only ``arguments`` is added to the piece of
    the same call right before it.
    """
    merged: list[OutputDelta] = []
    for delta in deltas:
        if not (delta.content or delta.reasoning or delta.tool_calls):
            continue
        last = merged[-1] if merged else None
        if last is not None and _kind(last) == _kind(delta) and _kind(delta) != "mixed":
            merged[-1] = OutputDelta(
                last.content + delta.content, last.reasoning + delta.reasoning,
                _join_pieces(last.tool_calls, delta.tool_calls),
            )
        else:
            merged.append(delta)
    return merged


def _join_pieces(first: list[ToolCallDelta], second: list[ToolCallDelta]) -> list[ToolCallDelta]:
    pieces = list(first)
    for piece in second:
        last = pieces[-1] if pieces else None
        if last is not None and last.index == piece.index and piece.id is None and piece.name is None:
            pieces[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + piece.arguments)
        else:
            pieces.append(piece)
    return pieces


def _kind(delta: OutputDelta) -> str:
    kinds = [name for name, value in (("content", delta.content), ("reasoning", delta.reasoning),
                                      ("tool_calls", delta.tool_calls)) if value]
    return kinds[0] if len(kinds) == 1 else "mixed"
