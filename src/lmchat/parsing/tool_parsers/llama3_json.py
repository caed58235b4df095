"""Llama 3.x JSON calls: ``{"name": ..., "parameters": {...}}``, parallel calls joined by ``;``.

The object may stand anywhere in the answer, after an optional ``<|python_tag|>``; it must open with a ``"name"``
(or ``"type"``) key and carry ``parameters`` (or ``arguments``), so ordinary JSON in an answer stays content and
is released as soon as its first key shows it is not a call. A JSON list of calls at the very start of the answer
(LLaMA-Factory's rendering) is read too.
"""

from __future__ import annotations

from lmchat.parsing.scan import (
    MISMATCH,
    FoundCall,
    call_from_object,
    first_key_state,
    loads,
    skip_space,
)
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, ToolParser

PYTHON_TAG = "<|python_tag|>"
FIRST_KEYS = ("name", "type")


def one_call(text: str, pos: int, final: bool, ctx: MatchContext) -> tuple[FoundCall | None, int] | None:
    """The call object at ``text[pos]`` (a ``{``) and the index past it; ``(None, end)`` when ``text[:end]`` is
    known not to be a call; None while undecided."""
    state = first_key_state(text, pos, FIRST_KEYS)
    if state is None and not final:
        return None
    if not state:
        return None, pos + 1
    end = ctx.find_closing(text, pos)
    if end is None:
        return None if not final else (None, pos + 1)
    if end == MISMATCH:
        return None, pos + 1
    return call_from_object(loads(text[pos:end]), require_arguments=True), end


def call_sequence(text: str, pos: int, final: bool, ctx: MatchContext) -> Match | None:
    """Calls from ``text[pos]`` on, separated by ``;``; a content match when the first one is not a call."""
    calls: list[FoundCall] = []
    end = pos
    while True:
        found = one_call(text, pos, final, ctx)
        if found is None:
            return None
        call, call_end = found
        if call is None:
            return Match(end, tuple(calls)) if calls else Match(call_end)
        calls.append(call)
        end = call_end
        semicolon = skip_space(text, end)
        if semicolon == len(text) and not final:
            return None
        if semicolon == len(text) or text[semicolon] != ";":
            return Match(end, tuple(calls))
        pos = skip_space(text, semicolon + 1)
        if pos == len(text) and not final:
            return None
        if pos == len(text) or text[pos] != "{":
            return Match(end, tuple(calls))


class Llama3JsonToolParser(ToolParser):
    name = "llama3_json"
    markers = (PYTHON_TAG, "{")

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        if not text.startswith("["):
            return NO_START
        item = skip_space(text, 1)
        if item == len(text):
            return None if not final else NO_START
        if text[item] != "{":
            return NO_START
        end = ctx.find_closing(text, 0)
        if end is None:
            return None if not final else NO_START
        value = loads(text[:end]) if end != MISMATCH else None
        if not isinstance(value, list) or not value:
            return NO_START
        calls = [call_from_object(entry, require_arguments=True) for entry in value]
        if any(call is None for call in calls):
            return NO_START
        return Match(end, tuple(calls))  # type: ignore[arg-type]

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        if not text.startswith(PYTHON_TAG):
            return call_sequence(text, 0, final, ctx)
        pos = skip_space(text, len(PYTHON_TAG))
        if pos == len(text) and not final:
            return None
        if pos == len(text) or text[pos] != "{":
            return Match(len(PYTHON_TAG))
        match = call_sequence(text, pos, final, ctx)
        if match is None or match.calls:
            return match
        return Match(len(PYTHON_TAG))
