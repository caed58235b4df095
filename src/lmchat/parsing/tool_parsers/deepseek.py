"""DeepSeek V3 / R1 and V3.1 tool calls, inside ``<｜tool▁calls▁begin｜> ... <｜tool▁calls▁end｜>``.

Each call is ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>name\\n```json\\n{...}\\n```<｜tool▁call▁end｜>`` (V3, R1)
or ``<｜tool▁call▁begin｜>name<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`` (V3.1); the two are told apart per call. If
any call of a block is malformed the whole block stays content.
"""

from __future__ import annotations

import re

from lmchat.parsing.scan import FoundCall, dumps, loads
from lmchat.parsing.tool_parsers.base import Match, MatchContext, ToolParser

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
_FENCE = re.compile(r"\A```[A-Za-z]*\s*\n?(.*?)\n?\s*```\s*\Z", re.DOTALL)


def parse_block(body: str) -> tuple[FoundCall, ...] | None:
    """The calls of a block's body; None unless the body is only well-formed calls."""
    calls: list[FoundCall] = []
    pos = 0
    while body[pos:].strip():
        start = body.find(CALL_BEGIN, pos)
        if start == -1 or body[pos:start].strip():
            return None
        inner_start = start + len(CALL_BEGIN)
        stop = body.find(CALL_END, inner_start)
        inner = body[inner_start:] if stop == -1 else body[inner_start:stop]
        call = parse_call(inner)
        if call is None:
            return None
        calls.append(call)
        pos = len(body) if stop == -1 else stop + len(CALL_END)
    return tuple(calls) or None


def parse_call(inner: str) -> FoundCall | None:
    head, sep, tail = inner.partition(SEP)
    if not sep:
        return None
    if tail.lstrip().startswith("{"):  # V3.1: name<sep>{json}
        name, arguments = head.strip(), loads(tail)
    else:  # V3: function<sep>name\n```json\n{...}\n```
        name_line, _, rest = tail.partition("\n")
        fence = _FENCE.match(rest.strip())
        name, arguments = name_line.strip(), loads(fence.group(1)) if fence else loads(rest)
    if not name or not isinstance(arguments, dict):
        return None
    return FoundCall(name, dumps(arguments))


class DeepSeekV3ToolParser(ToolParser):
    name = "deepseek_v3"
    markers = (CALLS_BEGIN, CALL_BEGIN)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        if text.startswith(CALLS_BEGIN):
            body_start, closing = len(CALLS_BEGIN), text.find(CALLS_END)
            end = closing + len(CALLS_END) if closing != -1 else len(text)
        else:  # a call without the block marker: up to the block end, or the end of the answer
            body_start, closing = 0, text.find(CALLS_END)
            end = closing + len(CALLS_END) if closing != -1 else len(text)
        if closing == -1 and not final:
            return None
        body = text[body_start : closing if closing != -1 else len(text)]
        calls = parse_block(body)
        return Match(end, calls) if calls else Match(end)
