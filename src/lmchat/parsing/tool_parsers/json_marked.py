"""Families that write one JSON call object after a marker, with no closing tag:

* ``granite_20b_fc`` (granite-20b-functioncalling): ``<function_call> {"name": ..., "arguments": {...}}``, one
  marker per call;
* ``gigachat3`` (GigaChat 3): ``<|function_call|>{...}``, or the template's function-call turn
  ``<|message_sep|>\\n\\nfunction call<|role_sep|>\\n{...}``; a ``</s>`` after the object is dropped.

A call is committed at its name (``{"name": "f", "arguments": {"``); its region ends with its object. An object
written another way is read whole once complete; a marker not followed by a call object is content.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from lmchat.parsing.scan import MISMATCH, call_from_object, is_partial, loads, skip_space
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, Rest, ToolParser
from lmchat.parsing.tool_parsers.json_calls import CALL_OBJECT, object_rest, open_call


class MarkedJsonToolParser(ToolParser):
    """Base: each of ``markers`` is followed by one call object (``after_object``: markup dropped after it)."""

    after_object: ClassVar[str] = ""

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        marker = self.marker_end(text, final)
        if marker is None:
            return None
        if marker is False:  # the marker's text, but not a call's: content
            return Match(next(len(marker) for marker in self.markers if text.startswith(marker)))
        brace = skip_space(text, marker)
        if brace == len(text):
            return None if not final else Match(marker)
        if text[brace] != "{":
            return Match(marker)
        head = open_call(text, brace, CALL_OBJECT, final=final)
        if isinstance(head, Open) or (head is None and not final):
            return head
        end = ctx.find_closing(text, brace)
        if end is None:
            return None if not final else Match(marker)
        call = call_from_object(loads(text[brace:end])) if end != MISMATCH else None
        return Match(self._drop_after(text, end), (call,)) if call else Match(marker)

    def marker_end(self, text: str, final: bool) -> int | bool | None:
        """Where the full marker ``text`` starts with ends; False when it is not one after all; None: undecided."""
        return next(len(marker) for marker in self.markers if text.startswith(marker))

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | None:
        rest = object_rest(text, final, broken)
        if rest is None or rest.end == 0 or not self.after_object:
            return rest
        after = skip_space(text, rest.end)
        if not final and (after == len(text) or is_partial(text[after:], self.after_object)):
            return None
        return Rest(self._drop_after(text, rest.end))

    def _drop_after(self, text: str, end: int) -> int:
        after = skip_space(text, end)
        return after + len(self.after_object) if self.after_object and text.startswith(self.after_object, after) else end


class Granite20bFcToolParser(MarkedJsonToolParser):
    name = "granite_20b_fc"
    markers = ("<function_call>",)


MESSAGE_SEP = "<|message_sep|>"
_FUNCTION_TURN = re.compile(r"\s*function call<\|role_sep\|>")
_FUNCTION_TURN_TEXT = "function call<|role_sep|>"


class GigaChat3ToolParser(MarkedJsonToolParser):
    name = "gigachat3"
    markers = ("<|function_call|>", MESSAGE_SEP)
    after_object = "</s>"

    def marker_end(self, text: str, final: bool) -> int | bool | None:
        if not text.startswith(MESSAGE_SEP):
            return len("<|function_call|>")
        turn = _FUNCTION_TURN.match(text, len(MESSAGE_SEP))
        if turn is not None:
            return turn.end()
        rest = text[len(MESSAGE_SEP) :].lstrip()
        if not final and (not rest or _FUNCTION_TURN_TEXT.startswith(rest)):
            return None
        return False
