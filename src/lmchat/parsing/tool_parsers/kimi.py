"""Kimi-K2 (and K2-Thinking) tool calls::

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0 <|tool_call_argument_begin|>
    {"city": "Beijing"}<|tool_call_end|><|tool_calls_section_end|>

The call id the model writes (``functions.NAME:INDEX``, or ``NAME:INDEX``) is kept as the call's id, as vLLM
does, and names the function; a bare counter (``0``) names the request's only tool. A call is committed at the
JSON arguments after ``<|tool_call_argument_begin|>`` (kept as written, like vLLM's parser); the section then goes
on call by call. A call whose id names no function, or whose arguments are not a JSON object, is content (the
calls after it are still read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmchat.parsing.scan import is_partial, skip_space
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, Rest, ToolParser, arguments_open, plain_until

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
CALL_END = "<|tool_call_end|>"
ARGUMENTS = "<|tool_call_argument_begin|>"
_CALL_ID = re.compile(r"(?:functions\.)?([A-Za-z_][\w.\-]*):\d+|\d+")
_BETWEEN = "between"  # state: after a call, inside the section
_ODD = "odd"  # state: a call that could not be read further, content up to its end


@dataclass(frozen=True, slots=True)
class _AfterArguments:
    """State after a committed call's arguments: its end, then the next call or the section's end."""


def call_name(call_id: str, ctx: MatchContext) -> str | None:
    """The function a call id names; None when it names none."""
    found = _CALL_ID.fullmatch(call_id)
    if found is None:
        return None
    if found.group(1):
        return found.group(1)
    return next(iter(ctx.tools)) if len(ctx.tools) == 1 else None  # a bare counter: the only tool


def open_call(text: str, pos: int, final: bool, ctx: MatchContext) -> Open | bool | None:
    """The call opening at ``text[pos]`` (``<|tool_call_begin|>``): committed at its arguments; None while
    undecided; False when it is not well formed."""
    if not text.startswith(CALL_BEGIN, pos):
        undecided = pos == len(text) or is_partial(text[pos:], CALL_BEGIN)
        return None if undecided and not final else False
    start = pos + len(CALL_BEGIN)
    marker = text.find(ARGUMENTS, start)
    if marker == -1:
        header = text[start:]
        if final or CALL_END in header or SECTION_END in header or len(header) > 200:
            return False
        return None
    call_id = text[start:marker].strip()
    name = call_name(call_id, ctx)
    if name is None:
        return False
    brace = skip_space(text, marker + len(ARGUMENTS))
    if brace == len(text):
        return None if not final else False
    if text[brace] != "{":
        return False
    opens = arguments_open(text, brace, final)
    return Open(brace, name, call_id, _AfterArguments(), verbatim=True) if opens else opens


class KimiK2ToolParser(ToolParser):
    name = "kimi_k2"
    markers = (SECTION_BEGIN, CALL_BEGIN)
    special_tokens = (SECTION_BEGIN, SECTION_END, CALL_BEGIN, ARGUMENTS, CALL_END)
    ends_reasoning = (SECTION_BEGIN,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        in_section = text.startswith(SECTION_BEGIN)
        pos = skip_space(text, len(SECTION_BEGIN)) if in_section else 0
        if in_section and text.startswith(SECTION_END, pos):  # an empty section: markup
            return Match(pos + len(SECTION_END), markup=True)
        if in_section and is_partial(text[pos:], SECTION_END) and not final:
            return None
        opened = open_call(text, pos, final, ctx)
        if isinstance(opened, Open) or (opened is None and not final):
            return opened
        if not in_section:
            return Match(len(CALL_BEGIN))  # a malformed call: content (the calls after it are read on)
        return Match(pos, markup=True)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if broken or state == _ODD:
            return _odd(text, final)
        pos = skip_space(text, 0)
        if pos == len(text):
            return None if not final else Rest(pos)
        if state == _BETWEEN:
            if text.startswith(SECTION_END, pos):
                return Rest(pos + len(SECTION_END))
            opened = open_call(text, pos, final, ctx)
            if opened is None or isinstance(opened, Open):
                return opened
            if not final and is_partial(text[pos:], SECTION_END):
                return None
            return Rest(pos, more=_ODD)
        if text.startswith(CALL_END, pos):
            return Rest(pos + len(CALL_END), more=_BETWEEN)
        if text.startswith(SECTION_END, pos):
            return Rest(pos + len(SECTION_END))
        if not final and (is_partial(text[pos:], CALL_END) or is_partial(text[pos:], SECTION_END)):
            return None
        return _odd(text, final)


def _odd(text: str, final: bool) -> Rest | None:
    """Content up to the call's end (dropped), the next call, or the section's end (dropped)."""
    found = plain_until(text, final, (CALL_END, CALL_BEGIN, SECTION_END))
    if found is None:
        return None
    index, closer = found
    if closer == CALL_END:
        return Rest(index + len(CALL_END), content=index, more=_BETWEEN)
    if closer == CALL_BEGIN:
        return Rest(index, content=index, more=_BETWEEN)
    if closer == SECTION_END:
        return Rest(index + len(SECTION_END), content=index)
    return Rest(index, content=index, more=None if final else _ODD)
