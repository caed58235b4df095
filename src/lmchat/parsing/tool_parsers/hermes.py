"""Hermes / Qwen2.5 / Qwen3 (and ERNIE-4.5, Granite 4): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
one tag per call; LongCat and InternLM2 write the same with their own tags.

A call left open at the end of the answer (or directly followed by the next ``<tool_call>``) is still read. The
call is committed once ``{"name": "...", "arguments": {`` is written; anything after its object up to
``</tool_call>`` (or the next ``<tool_call>``, or the end) that is not just space is content. A call object
written any other way (name after the arguments, arguments as a string) is read whole, up to the tag's end.
"""

from __future__ import annotations

import ast
import re
from typing import Any, ClassVar

from lmchat.parsing.scan import MISMATCH, FoundCall, call_from_object, dumps, is_partial, loads, skip_space
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
    """Hermes / Qwen: one JSON call object per ``<tool_call>`` tag. Subclasses change the tags only."""

    name = "hermes"
    start_tag: ClassVar[str] = START
    end_tag: ClassVar[str] = END
    markers = (START,)
    special_tokens = (START, END)  # special in some Hermes tokenizers (not Qwen's), as vLLM's hermes parser says

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        start, end_tag = self.start_tag, self.end_tag
        limit = region_limit(text, start, end_tag)
        end = len(text) if limit == -1 else limit
        brace = skip_space(text, len(start))
        if brace < end and text[brace] == "{":
            head = open_call(text, brace, CALL_OBJECT, end, final=final)
            if isinstance(head, Open):
                return head
            if head is None and limit == -1 and not final:
                return None
        region = tagged_body(text, start, end_tag, final)
        if region is None:
            return None
        body, region_end = region
        call = body_call(body)
        return Match(region_end, (call,)) if call else Match(region_end)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | None:
        start, end_tag = self.start_tag, self.end_tag
        if broken or state == ODD:
            return rest_of_tag(text, final, start, end_tag)
        end = object_end(text)
        if end is None and not final:
            return None
        if end is None or end == MISMATCH:
            return rest_of_tag(text, final, start, end_tag)
        after = skip_space(text, end)
        if after == len(text):
            return None if not final else Rest(after)
        if text.startswith(end_tag, after):
            return Rest(after + len(end_tag))
        if text.startswith(start, after):
            return Rest(after)
        if not final and (is_partial(text[after:], end_tag) or is_partial(text[after:], start)):
            return None
        return Rest(end, more=ODD)


_FUNCTION_BODY = re.compile(r'\s*<function(?:=|\s+name=")([\w.\-]+)"?>\s*(\{.*\})\s*</function>\s*\Z', re.DOTALL)


def body_call(body: str) -> FoundCall | None:
    """A tag's body read whole: a JSON call object; as Hermes-2-Pro's model card writes it, a Python dict; or
    ``<function=NAME>{json}</function>`` / ``<function name="NAME">{json}</function>`` (forms llama.cpp's Hermes
    parser accepts)."""
    function = _FUNCTION_BODY.match(body)
    if function is not None:
        arguments = loads(function.group(2))
        return FoundCall(function.group(1), dumps(arguments)) if isinstance(arguments, dict) else None
    value = loads(body)
    if value is None and body.strip().startswith("{"):
        value = python_literal(body)
    return call_from_object(value)


def python_literal(source: str) -> Any:
    """The Python literal ``source`` (never evaluated: ``ast.literal_eval``); None when it is not one."""
    try:
        return ast.literal_eval(source.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


class LongCatToolParser(HermesToolParser):
    """LongCat-Flash: ``<longcat_tool_call>{json}</longcat_tool_call>``."""

    name = "longcat"
    start_tag, end_tag = "<longcat_tool_call>", "</longcat_tool_call>"
    markers = (start_tag,)
    special_tokens = ()


class InternLm2ToolParser(HermesToolParser):
    """InternLM2/2.5: ``<|action_start|><|plugin|>\n{"name": ..., "parameters": {...}}<|action_end|>``."""

    name = "internlm"
    start_tag, end_tag = "<|action_start|><|plugin|>", "<|action_end|>"
    markers = (start_tag,)
    special_tokens = ("<|action_start|>", "<|plugin|>", "<|action_end|>")
