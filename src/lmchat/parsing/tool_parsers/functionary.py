"""MeetKai Functionary (the formats llama.cpp reads; vLLM has no parser for them):

* ``functionary_v3_2`` (functionary-small/medium-v3.2): the generation prompt ends with ``>>>``, and each turn
  part names its recipient on its first line: ``all\\n`` then text for the user, ``NAME\\n{json}`` for a call,
  later parts again after ``>>>`` (``all\\nLet me check.>>>get_weather\\n{"city": "Paris"}``);
* ``functionary_v3_1`` (functionary-medium-v3.1, Llama 3.1 based): ``<function=NAME>{json}</function>``, and
  ``<|python_tag|>`` followed by code for the built-in ``python`` tool.

A call is committed at its JSON arguments (kept as written); ``python`` code (``>>>python\\n`` or
``<|python_tag|>``) is not JSON and becomes one call with ``{"code": ...}`` once complete.
"""

from __future__ import annotations

import re
from typing import Any

from lmchat.parsing.scan import FoundCall, dumps, is_partial, skip_space
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser, arguments_open

RECIPIENT = ">>>"
ALL = "all"
PYTHON = "python"
_NAME = re.compile(r"[A-Za-z_][\w.\-]*")


def _part(text: str, pos: int, final: bool) -> Match | Open | bool | None:
    """The turn part whose recipient line starts at ``text[pos]``: its markup, call or code; None while
    undecided; False when ``text[pos:]`` does not start with a recipient line."""
    if pos == len(text):
        return None if not final else False
    name = _NAME.match(text, pos)
    if name is None:
        return False
    if name.end() == len(text):
        return None if not final else False
    if text[name.end()] != "\n":
        return False
    body = name.end() + 1
    if name.group() == ALL:
        return Match(body, markup=True)
    brace = skip_space(text, body)
    if brace == len(text) and not final:
        return None
    if brace < len(text) and text[brace] == "{":
        opens = arguments_open(text, brace, final)
        if opens or opens is None:
            return Open(brace, name.group(), verbatim=True) if opens else None
    if name.group() != PYTHON:
        return False
    stop = text.find(RECIPIENT, body)  # python code: up to the next ">>>" or the end, one call
    if stop == -1 and not final:
        return None
    end = len(text) if stop == -1 else stop
    return Match(end, (FoundCall(PYTHON, dumps({"code": text[body:end]})),))


class FunctionaryV32ToolParser(ToolParser):
    name = "functionary_v3_2"
    markers = (RECIPIENT,)

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        found = _part(text, 0, final)
        return NO_START if found is False else found

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        found = _part(text, len(RECIPIENT), final)
        return Match(len(RECIPIENT)) if found is False else found  # ">>>" without a recipient line: content


FUNCTION = "<function="
FUNCTION_END = "</function>"
PYTHON_TAG = "<|python_tag|>"
_CODE_ENDS = ("<|eom_id|>", "<|eot_id|>")


class FunctionaryV31ToolParser(ToolParser):
    name = "functionary_v3_1"
    markers = (FUNCTION, PYTHON_TAG)
    special_tokens = (PYTHON_TAG,)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if text.startswith(PYTHON_TAG):
            found = [index for index in (text.find(end) for end in _CODE_ENDS) if index != -1]
            if not found and not final:
                return None
            end = min(found, default=len(text))
            code = text[len(PYTHON_TAG) : end]
            if not code.strip():
                return Match(len(PYTHON_TAG))
            token = next((token for token in _CODE_ENDS if text.startswith(token, end)), "")  # dropped with the code
            return Match(end + len(token), (FoundCall(PYTHON, dumps({"code": code})),))
        close = text.find(">", len(FUNCTION))
        if close == -1:
            return None if not final and "\n" not in text else Match(len(FUNCTION))
        name = text[len(FUNCTION) : close].strip()
        brace = skip_space(text, close + 1)
        if not _NAME.fullmatch(name) or (brace < len(text) and text[brace] != "{"):
            return Match(len(FUNCTION))
        if brace == len(text):
            return None if not final else Match(len(FUNCTION))
        opens = arguments_open(text, brace, final)
        if not opens:
            return None if opens is None else Match(len(FUNCTION))
        return Open(brace, name, verbatim=True, state=FUNCTION_END)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | None:
        if broken:
            return Rest(0)
        pos = skip_space(text, 0)
        if text.startswith(FUNCTION_END, pos):
            return Rest(pos + len(FUNCTION_END))
        if not final and (pos == len(text) or is_partial(text[pos:], FUNCTION_END)):
            return None
        return Rest(0)
