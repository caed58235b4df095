"""Llama 3.x JSON calls: ``{"name": ..., "parameters": {...}}``, parallel calls joined by ``;``.

The object may stand anywhere in the answer, after an optional ``<|python_tag|>``; it must open with a ``"name"``
(or ``"type"``) key and carry ``parameters`` (or ``arguments``), so ordinary JSON in an answer stays content and
is released as soon as its first key shows it is not a call. A JSON list of calls at the very start of the answer
(LLaMA-Factory's rendering) is read too. A call is committed once ``{"name": "...", "parameters": {`` is written;
other spellings (name after the parameters, parameters as a string) are read whole.
"""

from __future__ import annotations

from typing import Any

from lmchat.parsing.scan import (
    MISMATCH,
    FoundCall,
    call_from_object,
    first_key_state,
    loads,
    skip_space,
)
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser
from lmchat.parsing.tool_parsers.json_calls import CALL_OBJECT, CallList, list_rest, object_rest, open_call

PYTHON_TAG = "<|python_tag|>"
FIRST_KEYS = ("name", "type")


def one_call(text: str, pos: int, final: bool, ctx: MatchContext) -> tuple[FoundCall | None, int] | None:
    """The call object at ``text[pos]`` (a ``{``) read whole, and the index past it; ``(None, end)`` when
    ``text[:end]`` is known not to be a call; None while undecided."""
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


def object_call(text: str, pos: int, final: bool, ctx: MatchContext) -> Match | Open | None:
    """The call object at ``text[pos]``: committed at its name, or read whole; a content match when it is not
    a call."""
    head = open_call(text, pos, CALL_OBJECT, first_keys=FIRST_KEYS, final=final)
    if isinstance(head, Open) or (head is None and not final):
        return head
    found = one_call(text, pos, final, ctx)
    if found is None:
        return None
    call, end = found
    return Match(end, (call,)) if call else Match(end)


class Llama3JsonToolParser(ToolParser):
    name = "llama3_json"
    markers = (PYTHON_TAG, "{")
    special_tokens = (PYTHON_TAG,)
    separator = ";"

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if not text.startswith("["):
            return NO_START
        item = skip_space(text, 1)
        if item == len(text):
            return None if not final else NO_START
        if text[item] != "{":
            return NO_START
        head = open_call(text, item, CallList(require_arguments=True), final=final)
        if isinstance(head, Open) or (head is None and not final):
            return head
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

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if not text.startswith(PYTHON_TAG):
            return object_call(text, 0, final, ctx)
        pos = skip_space(text, len(PYTHON_TAG))
        if pos == len(text) and not final:
            return None
        if pos == len(text) or text[pos] != "{":
            return Match(len(PYTHON_TAG))
        match = object_call(text, pos, final, ctx)
        if match is None or isinstance(match, Open) or match.calls:
            return match
        return Match(len(PYTHON_TAG))

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if isinstance(state, CallList):
            return list_rest(text, final, ctx, state, broken)
        return object_rest(text, final, broken)
