"""Llama 3.2 / Llama 4 "pythonic" calls: ``[get_weather(city="LA"), add(a=1, b=2)]``.

The list must open the answer, or stand between ``<|python_start|>`` and ``<|python_end|>``. It is read with
``ast`` (never evaluated): keyword arguments with literal values only. Python literals can only be judged by
``ast`` once written out, so these calls are not streamed piecemeal: each is sent whole (id, name and complete
arguments) once the list is complete, and a malformed list stays content.
"""

from __future__ import annotations

import ast
import re

from lmchat.parsing.scan import MISMATCH, FoundCall, dumps
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, ToolParser
from lmchat.parsing.tool_parsers.hermes import tagged_body

START = "<|python_start|>"
END = "<|python_end|>"
_CALL_OPENING = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_PLAUSIBLE_PREFIX = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?\Z")


def parse_call_list(source: str) -> tuple[FoundCall, ...] | None:
    """The calls of a Python list of calls; None when ``source`` is anything else."""
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(node, ast.List) or not node.elts:
        return None
    calls = [_call(element) for element in node.elts]
    return tuple(calls) if all(calls) else None  # type: ignore[arg-type]


def _call(node: ast.expr) -> FoundCall | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = _dotted_name(node.func)
    if name is None or any(keyword.arg is None for keyword in node.keywords):
        return None
    try:
        arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
        return FoundCall(name, dumps(arguments))
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted_name(node.value)
        return f"{owner}.{node.attr}" if owner else None
    return None


class PythonicToolParser(ToolParser):
    name = "pythonic"
    markers = (START,)

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        if not text.startswith("["):
            return NO_START
        if not _CALL_OPENING.match(text):
            undecided = _PLAUSIBLE_PREFIX.match(text) and not final
            return None if undecided else NO_START
        end = ctx.find_closing(text, 0, quotes="'\"")
        if end is None:
            return None if not final else NO_START
        calls = parse_call_list(text[:end]) if end != MISMATCH else None
        return Match(end, calls) if calls else NO_START

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        region = tagged_body(text, START, END, final)
        if region is None:
            return None
        body, end = region
        calls = parse_call_list(body)
        return Match(end, calls) if calls else Match(end)
