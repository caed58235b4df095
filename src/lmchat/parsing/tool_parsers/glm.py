"""GLM tool calls.

* ``glm4`` (glm-4-9b-chat): the whole answer is ``name\\n{json arguments}``.
* ``glm45`` (GLM-4.5/4.6): ``<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value>...</tool_call>``.
  Values are bare text: typed by the request's tool schema when it declares the parameter, otherwise read as JSON
  when they parse (``42``, ``true``) and kept as text when not.
"""

from __future__ import annotations

import re

from lmchat.parsing.scan import MISMATCH, FoundCall, call_from_object, dumps, loads, skip_space
from lmchat.parsing.schema import ToolSchemas, coerce_value
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, ToolParser
from lmchat.parsing.tool_parsers.hermes import tagged_body

_GLM4_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
START = "<tool_call>"
END = "</tool_call>"
_ARG_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


class Glm4ToolParser(ToolParser):
    name = "glm4"

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
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
        end = ctx.find_closing(text, brace)
        if end is None:
            return None if not final else NO_START
        arguments = loads(text[brace:end]) if end != MISMATCH else None
        if not isinstance(arguments, dict):
            return NO_START
        return Match(end, (FoundCall(name.group(), dumps(arguments)),))


class Glm45ToolParser(ToolParser):
    name = "glm45"
    markers = (START,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        region = tagged_body(text, START, END, final)
        if region is None:
            return None
        body, end = region
        call = parse_glm45_body(body, ctx.tools)
        return Match(end, (call,)) if call else Match(end)


def parse_glm45_body(body: str, tools: ToolSchemas) -> FoundCall | None:
    """``name`` followed by key/value pairs (or, as some checkpoints write, a JSON call object)."""
    if body.lstrip().startswith("{"):
        return call_from_object(loads(body))
    cut = body.find("<arg_key>")
    name = (body if cut == -1 else body[:cut]).strip()
    if not name or any(char.isspace() or char in "<>{}" for char in name):
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
