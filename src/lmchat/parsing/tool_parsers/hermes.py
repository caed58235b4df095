"""Hermes / Qwen2.5 / Qwen3: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one tag per call.

A call left open at the end of the answer (or directly followed by the next ``<tool_call>``) is still read.
"""

from __future__ import annotations

from lmchat.parsing.scan import call_from_object, loads
from lmchat.parsing.tool_parsers.base import Match, MatchContext, ToolParser

START = "<tool_call>"
END = "</tool_call>"


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


class HermesToolParser(ToolParser):
    name = "hermes"
    markers = (START,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        region = tagged_body(text, START, END, final)
        if region is None:
            return None
        body, end = region
        call = call_from_object(loads(body))
        return Match(end, (call,)) if call else Match(end)
