"""GLM tool calls.

* ``glm4`` (glm-4-9b-chat): the whole answer is ``name\\n{json arguments}``; the call is committed at the ``{``.
* ``glm45`` (GLM-4.5/4.6): ``<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value>...</tool_call>``.
  Values are bare text: typed by the request's tool schema when it declares the parameter, otherwise read as JSON
  when they parse (``42``, ``true``) and kept as text when not. The call is committed at its first ``<arg_key>``
  (after a well-formed name) and its arguments stream one complete argument at a time (``{``, ``"k": v``,
  ``, "k2": v2``, ``}``); a pair that does not fit closes them, and the rest of the tag is content. A call
  without arguments, or written as a JSON object, is read whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmchat.parsing.scan import FoundCall, call_from_object, dumps, loads, skip_space
from lmchat.parsing.schema import ToolSchemas, coerce_value
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser, arguments_open
from lmchat.parsing.tool_parsers.hermes import ODD, region_limit, rest_of_tag, tagged_body

_GLM4_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
START = "<tool_call>"
END = "</tool_call>"
KEY_OPEN, KEY_CLOSE, VALUE_OPEN, VALUE_CLOSE = "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"
_ARG_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


class Glm4ToolParser(ToolParser):
    name = "glm4"

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        name = _GLM4_NAME.match(text)
        if name is None:
            return NO_START
        newline = name.end()
        if newline == len(text):
            return None if not final else NO_START
        if text[newline] != "\n":
            return NO_START
        brace = skip_space(text, newline)
        if brace == len(text):
            return None if not final else NO_START
        if text[brace] != "{":
            return NO_START
        opens = arguments_open(text, brace, final)
        if not opens:
            return None if opens is None else NO_START
        return Open(brace, name.group())


@dataclass(frozen=True, slots=True)
class _Pairs:
    """State of a committed GLM-4.5 call: reading its key/value pairs (``first``: none sent yet)."""

    name: str
    first: bool = True


def glm45_name(head: str) -> str | None:
    """The call name written before the first ``<arg_key>`` (or alone in the tag); None when malformed."""
    name = head.strip()
    if not name or any(char.isspace() or char in "<>{}" for char in name):
        return None
    return name


class Glm45ToolParser(ToolParser):
    name = "glm45"
    markers = (START,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        limit = region_limit(text, START, END)
        end = len(text) if limit == -1 else limit
        cut = text.find(KEY_OPEN, len(START), end)
        if cut != -1:
            head = text[len(START) : cut]
            name = glm45_name(head) if not head.lstrip().startswith("{") else None
            if name is not None:
                return Open(cut, name, state=_Pairs(name), arguments="{")
        region = tagged_body(text, START, END, final)
        if region is None:
            return None
        body, region_end = region
        call = parse_glm45_body(body, ctx.tools)
        return Match(region_end, (call,)) if call else Match(region_end)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | None:
        if state == ODD:
            return rest_of_tag(text, final, START, END)
        limit = region_limit_from(text, 0)
        end = len(text) if limit == -1 else limit
        pos = skip_space(text, 0)
        if pos >= end:
            if limit != -1:
                return Rest(limit + len(END) if text.startswith(END, limit) else limit, arguments="}")
            return Rest(len(text), arguments="}") if final else None
        pair = _pair_at(text, pos, end)
        if pair is None:
            return None if limit == -1 and not final else Rest(pos, arguments="}", more=ODD)
        if pair is False:  # a pair that does not fit: the arguments end, the rest of the tag is content
            return Rest(pos, arguments="}", more=ODD)
        key, raw, pair_end = pair
        value = coerce_value(raw, ctx.tools.get(state.name, {}).get(key))
        piece = ("" if state.first else ", ") + dumps(key) + ": " + dumps(value)
        return Rest(pair_end, arguments=piece, more=_Pairs(state.name, first=False))


def region_limit_from(text: str, pos: int) -> int:
    """The first ``</tool_call>`` or ``<tool_call>`` at or after ``pos``; -1 if none."""
    found = [index for index in (text.find(END, pos), text.find(START, pos)) if index != -1]
    return min(found, default=-1)


def _pair_at(text: str, pos: int, end: int) -> tuple[str, str, int] | bool | None:
    """The key/value pair at ``text[pos]`` within ``text[:end]`` (as ``_ARG_PAIR`` reads it): stripped key, raw
    value and the index past it; None while ``text[:end]`` ends inside it, False when it does not fit."""
    if not text.startswith(KEY_OPEN, pos, end):
        return None if KEY_OPEN.startswith(text[pos:end]) else False
    key_end = text.find(KEY_CLOSE, pos + len(KEY_OPEN), end)
    if key_end == -1:
        return None
    value = skip_space(text, key_end + len(KEY_CLOSE))
    if not text.startswith(VALUE_OPEN, value, end):
        return None if value >= end or VALUE_OPEN.startswith(text[value:end]) else False
    value_end = text.find(VALUE_CLOSE, value + len(VALUE_OPEN), end)
    if value_end == -1:
        return None
    key = text[pos + len(KEY_OPEN) : key_end].strip()
    return key, text[value + len(VALUE_OPEN) : value_end], value_end + len(VALUE_CLOSE)


def parse_glm45_body(body: str, tools: ToolSchemas) -> FoundCall | None:
    """``name`` followed by key/value pairs (or, as some checkpoints write, a JSON call object)."""
    if body.lstrip().startswith("{"):
        return call_from_object(loads(body))
    cut = body.find(KEY_OPEN)
    name = glm45_name(body if cut == -1 else body[:cut])
    if name is None:
        return None
    properties = tools.get(name, {})
    arguments = {}
    pos = len(body) if cut == -1 else cut
    while pos < len(body) and body[pos:].strip():
        pair = _ARG_PAIR.match(body, pos)
        if pair is None:
            return None
        key, raw = pair.group(1).strip(), pair.group(2)
        arguments[key] = coerce_value(raw, properties.get(key))
        pos = pair.end()
    return FoundCall(name, dumps(arguments))
