"""Mistral: ``[TOOL_CALLS]`` then a JSON list of calls (tokenizers before v11), or ``name{...}`` /
``name[ARGS]{...}`` (v11 and later, one marker per call, optionally ``[CALL_ID]id`` before ``[ARGS]``).

Entries of a JSON list that are not calls are skipped; arguments given as a JSON string are decoded. When the
marker was removed as a special token, a JSON call list or object opening the answer is read too. A call is
committed at its name: ``name{``, ``name[ARGS]{`` or ``{"name": "...", "arguments": {`` (a list then goes on
entry by entry); a list whose first call is written any other way is read whole.
"""

from __future__ import annotations

import re
from typing import Any

from lmchat.parsing.scan import (
    MISMATCH,
    FoundCall,
    call_from_object,
    first_key_state,
    is_partial,
    loads,
    skip_json_space,
    skip_space,
)
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser, arguments_open
from lmchat.parsing.tool_parsers.json_calls import CALL_OBJECT, CallList, list_rest, object_rest, open_call

MARKER = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ID = re.compile(r"[A-Za-z0-9_\-]+")
_NAMED = "named"  # state: a name{...} call, whose region ends with its arguments


def calls_from_json(value: object) -> tuple[FoundCall, ...]:
    """The calls of a JSON object or list; non-call entries of a list are skipped."""
    entries = value if isinstance(value, list) else [value]
    return tuple(call for call in map(call_from_object, entries) if call is not None)


class MistralToolParser(ToolParser):
    name = "mistral"
    markers = (MARKER,)
    special_tokens = (MARKER, ARGS, CALL_ID)  # control tokens of Mistral's tokenizers

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if is_partial(text, MARKER):
            return None if not final else NO_START
        if text.startswith(MARKER) or text[0] not in "[{":
            return NO_START
        obj = skip_space(text, 1) if text[0] == "[" else 0
        if obj == len(text):
            return None if not final else NO_START
        if text[obj] == "{":
            head = open_call(text, obj, CallList() if obj else CALL_OBJECT, final=final)
            if isinstance(head, Open) or (head is None and not final):
                return head
        state = first_key_state(text, obj, ("name", "arguments")) if text[obj] == "{" else False
        if state is None and not final:
            return None
        end = ctx.find_closing(text, 0) if state else MISMATCH
        if end is None:
            return None if not final else NO_START
        value = loads(text[:end]) if end != MISMATCH else None
        entries = value if isinstance(value, list) else [value]
        calls = calls_from_json(value)
        return Match(end, calls) if calls and len(calls) == len(entries) else NO_START

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        pos = len(MARKER)
        while True:
            pos = skip_space(text, pos)
            if text.startswith(MARKER, pos):
                pos += len(MARKER)
            elif is_partial(text[pos:], MARKER) and not final:
                return None
            else:
                break
        if pos == len(text):
            return None if not final else Match(pos)
        if text[pos] in "[{":
            return self._json_calls(text, pos, final, ctx)
        return self._named_call(text, pos, final, ctx)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if isinstance(state, CallList):
            return list_rest(text, final, ctx, state, broken)
        if state == CALL_OBJECT:
            return object_rest(text, final, broken)
        return Rest(0)

    def _json_calls(self, text: str, pos: int, final: bool, ctx: MatchContext) -> Match | Open | None:
        obj = pos if text[pos] == "{" else skip_json_space(text, pos + 1)
        if obj == len(text) and not final:
            return None
        if obj < len(text) and text[obj] == "{":
            head = open_call(text, obj, CALL_OBJECT if obj == pos else CallList(skip_other=True), final=final)
            if isinstance(head, Open) or (head is None and not final):
                return head
        end = ctx.find_closing(text, pos)
        if end is None:
            return None if not final else Match(pos)
        calls = calls_from_json(loads(text[pos:end])) if end != MISMATCH else ()
        return Match(end, calls) if calls else Match(pos)

    def _named_call(self, text: str, pos: int, final: bool, ctx: MatchContext) -> Match | Open | None:
        """``name{...}``, ``name[ARGS]{...}`` or ``name[CALL_ID]id[ARGS]{...}`` at ``text[pos]``."""
        name = _NAME.match(text, pos)
        if name is None:
            return Match(pos)
        cursor, call_id = name.end(), None
        if self._undecided(text, cursor, (CALL_ID, ARGS, "{")):
            return None if not final else Match(pos)
        if text.startswith(CALL_ID, cursor):
            found_id = _ID.match(text, cursor + len(CALL_ID))
            if found_id is None and cursor + len(CALL_ID) == len(text):  # the id is not written yet
                return None if not final else Match(pos)
            if found_id is None or self._undecided(text, found_id.end(), (ARGS,)):
                return None if found_id and not final else Match(pos)
            cursor, call_id = found_id.end(), found_id.group()
        if text.startswith(ARGS, cursor):
            cursor = skip_space(text, cursor + len(ARGS))
        if cursor == len(text) or text[cursor] != "{":
            return None if cursor == len(text) and not final else Match(pos)
        opens = arguments_open(text, cursor, final)
        if not opens:
            return None if opens is None else Match(pos)
        return Open(cursor, name.group(), call_id, _NAMED, verbatim=True)

    @staticmethod
    def _undecided(text: str, cursor: int, follows: tuple[str, ...]) -> bool:
        """True when the text ends at ``cursor`` or inside one of ``follows``."""
        rest = text[cursor:]
        return not rest or any(is_partial(rest, item) for item in follows)
