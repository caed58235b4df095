"""DeepSeek V3 / R1 and V3.1 tool calls, inside ``<｜tool▁calls▁begin｜> ... <｜tool▁calls▁end｜>``.

Each call is ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>name\\n```json\\n{...}\\n```<｜tool▁call▁end｜>`` (V3, R1)
or ``<｜tool▁call▁begin｜>name<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`` (V3.1); the two are told apart per call.

A call is committed at the ``{`` after its name, and the block then goes on call by call: a later call that is
not well formed, or text after a call's arguments that does not fit, is content. A block whose first call is
not well formed is read whole, and stays content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmchat.parsing.scan import FoundCall, dumps, is_partial, loads, skip_space
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, Rest, ToolParser, arguments_open, plain_until

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_BEGIN_VARIANTS = (CALLS_BEGIN, "<｜tool_calls_begin｜>", "<｜tool calls begin｜>", "<｜tool\\_calls\\_begin｜>",
                        "<｜tool▁calls｜>")
"""How the block opens: the real token, and the spellings distilled or quantised checkpoints write (llama.cpp's
list)."""
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
FENCE = "```"
BARE_CALL = "function" + SEP
_LETTERS = re.compile(r"[A-Za-z]*")
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
    markers = (*CALLS_BEGIN_VARIANTS, CALL_BEGIN)
    ends_reasoning = (*CALLS_BEGIN_VARIANTS, CALL_BEGIN)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        opener = next((len(marker) for marker in CALLS_BEGIN_VARIANTS if text.startswith(marker)), 0)
        opened = open_call(text, skip_space(text, opener) if opener else 0, final)
        if opened is None or isinstance(opened, Open):
            return opened
        # read whole: the block (or a call without the block marker) up to the block end, or the end of the answer
        body_start, closing = opener, text.find(CALLS_END)
        end = closing + len(CALLS_END) if closing != -1 else len(text)
        if closing == -1 and not final:
            return None
        body = text[body_start : closing if closing != -1 else len(text)]
        calls = parse_block(body)
        return Match(end, calls) if calls else Match(end)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if broken or isinstance(state, _Odd):
            return _odd(text, final, state if isinstance(state, _Odd) else _Odd())
        if state == _BETWEEN:
            return _between(text, final)
        pos = skip_space(text, 0)
        if state.fenced:
            if (pos == len(text) or is_partial(text[pos:], FENCE)) and not final:
                return None
            if not text.startswith(FENCE, pos):
                return _odd(text, final, _Odd())
            pos = skip_space(text, pos + len(FENCE))
        if pos == len(text):
            return None if not final else Rest(pos)
        if text.startswith(CALL_END, pos):
            return Rest(pos + len(CALL_END), more=_BETWEEN)
        if text.startswith(CALLS_END, pos):
            return Rest(pos + len(CALLS_END))
        if not final and (is_partial(text[pos:], CALL_END) or is_partial(text[pos:], CALLS_END)):
            return None
        return _odd(text, final, _Odd())


@dataclass(frozen=True, slots=True)
class _Call:
    """State after a committed call's arguments (``fenced``: inside a ```` ```json ```` block)."""

    fenced: bool


@dataclass(frozen=True, slots=True)
class _Odd:
    """State in a call that could not be read further: plain text up to its end (``keep_end``: the call was never
    committed, so its ``<｜tool▁call▁end｜>`` is content too)."""

    keep_end: bool = False


_BETWEEN = "between"  # state: after a call of a block


def _limit(text: str, pos: int) -> int:
    """Where the first special token at or after ``pos`` starts (-1 if none)."""
    found = [index for index in (text.find(token, pos) for token in (CALL_END, CALLS_END, CALL_BEGIN, CALLS_BEGIN))
             if index != -1]
    return min(found, default=-1)


def open_call(text: str, pos: int, final: bool) -> Open | bool | None:
    """The call opening at ``text[pos]``, committed at the ``{`` after its name; None while undecided, False when
    it can only be read whole."""
    if pos == len(text) or is_partial(text[pos:], CALL_BEGIN) or is_partial(text[pos:], BARE_CALL):
        return None if not final else False
    if text.startswith(CALL_BEGIN, pos):
        start = pos + len(CALL_BEGIN)
    elif text.startswith(BARE_CALL, pos):  # llama.cpp: distilled checkpoints may leave the call's token out
        start = pos
    else:
        return False
    limit = _limit(text, start)
    end = len(text) if limit == -1 else limit
    undecided = None if limit == -1 and not final else False
    sep = text.find(SEP, start, end)
    if sep == -1:
        return undecided
    after = sep + len(SEP)
    brace = skip_space(text, after)
    if brace >= end:
        return undecided
    if text[brace] == "{":  # V3.1: name<sep>{...}
        name = text[start:sep].strip()
        return _open_at(text, brace, name, _Call(fenced=False), final) if name else False
    newline = text.find("\n", after, end)  # V3: function<sep>name\n```json\n{...}\n```
    if newline == -1:
        return undecided
    name = text[after:newline].strip()
    if not name:
        return False
    cursor = skip_space(text, newline + 1)
    fenced = text.startswith(FENCE, cursor)
    if not fenced and cursor < end and FENCE.startswith(text[cursor:end]):
        return undecided
    if fenced:
        cursor = _LETTERS.match(text, cursor + len(FENCE)).end()
        cursor = skip_space(text, cursor)
    if cursor >= end:
        return undecided
    return _open_at(text, cursor, name, _Call(fenced), final) if text[cursor] == "{" else False


def _open_at(text: str, brace: int, name: str, state: _Call, final: bool) -> Open | bool | None:
    """The call committed at the JSON arguments opening at ``text[brace]`` (kept as written, as DeepSeek's
    reference parser does)."""
    opens = arguments_open(text, brace, final)
    return Open(brace, name, state=state, verbatim=True) if opens else opens


def _between(text: str, final: bool) -> Rest | Open | None:
    """After a call of a block: the next call, or the block's end."""
    pos = skip_space(text, 0)
    if pos == len(text):
        return None if not final else Rest(pos)
    if text.startswith(CALL_BEGIN, pos):
        opened = open_call(text, pos, final)
        if opened is None or isinstance(opened, Open):
            return opened
        # not a well-formed call: its text is content, up to and with its end
        return Rest(pos + len(CALL_BEGIN), content=pos + len(CALL_BEGIN), more=_Odd(keep_end=True))
    if text.startswith(CALLS_END, pos):
        return Rest(pos + len(CALLS_END))
    if not final and (is_partial(text[pos:], CALL_BEGIN) or is_partial(text[pos:], CALLS_END)):
        return None
    return Rest(pos, more=_Odd())


def _odd(text: str, final: bool, state: _Odd) -> Rest | None:
    """Plain text up to the end of the call (dropped, unless ``keep_end``), the block's end or the next call."""
    found = plain_until(text, final, (CALL_END, CALLS_END, CALL_BEGIN))
    if found is None:
        return None
    index, closer = found
    if closer == CALL_END:
        end = index + len(CALL_END)
        return Rest(end, content=end if state.keep_end else index, more=_BETWEEN)
    if closer == CALLS_END:
        return Rest(index + len(CALLS_END), content=index)
    if closer == CALL_BEGIN:
        return Rest(index, content=index, more=_BETWEEN)
    return Rest(index, content=index, more=None if final else state)
