"""Hermes / Qwen2.5 / Qwen3: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one tag per call.

A call left open at the end of the answer (or directly followed by the next ``<tool_call>``) is still read. The
call is committed once ``{"name": "...", "arguments": {`` is written; anything after its object up to
``</tool_call>`` (or the next ``<tool_call>``, or the end) that is not just space is content. A call object
written any other way (name after the arguments, arguments as a string) is read whole, up to the tag's end.
"""

from __future__ import annotations

from typing import Any

from lmchat.parsing.scan import MISMATCH, call_from_object, is_partial, loads, skip_space
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, Rest, ToolParser, plain_until
from lmchat.parsing.tool_parsers.json_calls import CALL_OBJECT, object_end, open_call

START = "<tool_call>"
END = "</tool_call>"
ODD = "odd"
"""State of a committed call's tag once its syntax could not be read further: plain text up to the tag's end."""


def tagged_body(text: str, start: str, end: str, final: bool) -> tuple[str, int] | None:
    """The body of a region opened by ``start`` at ``text[0]`` and the index just past it.

    The region ends at ``end``, at the next ``start``, or (``final``) at the end of the text; None while undecided.
    """
    body_start = len(start)
    closing = text.find(end, body_start)
    reopening = text.find(start, body_start)
    if closing != -1 and (reopening == -1 or closing < reopening):
        return text[body_start:closing], closing + len(end)
    if reopening != -1:
        return text[body_start:reopening], reopening
    if not final:
        return None
    return text[body_start:], len(text)


def region_limit(text: str, start: str, end: str) -> int:
    """Where the region opened by ``start`` at ``text[0]`` ends (its ``end`` or the next ``start``); -1 if not
    written yet."""
    found = [index for index in (text.find(end, len(start)), text.find(start, len(start))) if index != -1]
    return min(found, default=-1)


def rest_of_tag(text: str, final: bool, start: str, end: str) -> Rest | None:
    """Plain text up to the tag's ``end`` (which is dropped), the next ``start``, or the end of the answer."""
    found = plain_until(text, final, (end, start))
    if found is None:
        return None
    index, closer = found
    if closer == end:
        return Rest(index + len(end), content=index)
    if closer == start or final:
        return Rest(index, content=index)
    return Rest(index, content=index, more=ODD)


class HermesToolParser(ToolParser):
    name = "hermes"
    markers = (START,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        limit = region_limit(text, START, END)
        end = len(text) if limit == -1 else limit
        brace = skip_space(text, len(START))
        if brace < end and text[brace] == "{":
            head = open_call(text, brace, CALL_OBJECT, end, final=final)
            if isinstance(head, Open):
                return head
            if head is None and limit == -1 and not final:
                return None
        region = tagged_body(text, START, END, final)
        if region is None:
            return None
        body, region_end = region
        call = call_from_object(loads(body))
        return Match(region_end, (call,)) if call else Match(region_end)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | None:
        if broken or state == ODD:
            return rest_of_tag(text, final, START, END)
        end = object_end(text)
        if end is None and not final:
            return None
        if end is None or end == MISMATCH:
            return rest_of_tag(text, final, START, END)
        after = skip_space(text, end)
        if after == len(text):
            return None if not final else Rest(after)
        if text.startswith(END, after):
            return Rest(after + len(END))
        if text.startswith(START, after):
            return Rest(after)
        if not final and (is_partial(text[after:], END) or is_partial(text[after:], START)):
            return None
        return Rest(end, more=ODD)
