"""MiniMax-M1 and MiniMax-Text-01 (vLLM's ``minimax`` parser; LLaMA-Factory's ``minimax1`` tool format): one JSON
call object per line inside one block::

    <tool_calls>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    {"name": "get_time", "arguments": {"zone": "UTC"}}
    </tool_calls>

Each call is committed at its name (``{"name": "f", "arguments": {"``) and its arguments are re-serialised, as
vLLM's and LLaMA-Factory's parsers do; the block goes on line by line up to ``</tool_calls>`` (or the end of the
answer). A line whose object is written another way (arguments before the name) is read whole once complete; a
block whose first line is not a call is read whole, as calls when every line is one, else as content.

``minimax`` also reads MiniMax-M2's ``<minimax:tool_call>`` blocks (:class:`MiniMaxM2ToolParser`): lmchat named
that parser ``minimax`` before following vLLM, so configurations written then still work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmchat.parsing.scan import MISMATCH, FoundCall, call_from_object, is_partial, loads, skip_json_space
from lmchat.parsing.tool_parsers.base import Match, MatchContext, Open, Rest, plain_until
from lmchat.parsing.tool_parsers.json_calls import object_end, open_call
from lmchat.parsing.tool_parsers.xml_calls import MiniMaxM2ToolParser

BLOCK_OPEN, BLOCK_CLOSE = "<tool_calls>", "</tool_calls>"


@dataclass(frozen=True, slots=True)
class _Lines:
    """State inside a block: right after a committed call's arguments (``in_object``), or between two lines."""

    in_object: bool = True


@dataclass(frozen=True, slots=True)
class _Unread:
    """The block could not be read further: content up to its closing tag (dropped)."""


class MiniMaxToolParser(MiniMaxM2ToolParser):
    name = "minimax"
    markers = (BLOCK_OPEN, *MiniMaxM2ToolParser.markers)
    ends_reasoning = (BLOCK_OPEN, *MiniMaxM2ToolParser.ends_reasoning)

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if not text.startswith(BLOCK_OPEN):
            return super().match_marker(text, final, ctx)
        pos = skip_json_space(text, len(BLOCK_OPEN))
        if pos == len(text):
            return None if not final else Match(len(BLOCK_OPEN))
        if text[pos] == "{":
            head = open_call(text, pos, _Lines(), final=final)
            if isinstance(head, Open) or (head is None and not final):
                return head
        return _whole_block(text, final)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if isinstance(state, _Unread) or (broken and isinstance(state, _Lines)):
            return _up_to_close(text, final)
        if not isinstance(state, _Lines):
            return super().match_rest(text, final, ctx, state, broken)
        if state.in_object:
            end = object_end(text)
            if end is None:
                return None if not final else _up_to_close(text, final)
            return _up_to_close(text, final) if end == MISMATCH else Rest(end, more=_Lines(in_object=False))
        return _next_line(text, final, ctx)


def _next_line(text: str, final: bool, ctx: MatchContext) -> Rest | Open | None:
    """Between two lines of a block: the next call, or the block's end."""
    pos = skip_json_space(text, 0)
    if pos == len(text):
        return None if not final else Rest(pos)
    if text.startswith(BLOCK_CLOSE, pos):
        return Rest(pos + len(BLOCK_CLOSE))
    if text[pos] == "{":
        head = open_call(text, pos, _Lines(), final=final)
        if isinstance(head, Open) or (head is None and not final):
            return head
        end = ctx.find_closing(text, pos)
        if end is None and not final:
            return None
        call = call_from_object(loads(text[pos:end])) if end not in (None, MISMATCH) else None
        if call is not None:
            return Rest(end, calls=(call,), more=_Lines(in_object=False))
    elif not final and is_partial(text[pos:], BLOCK_CLOSE):
        return None
    return Rest(pos, more=_Unread())


def _up_to_close(text: str, final: bool) -> Rest | None:
    """Content up to the block's closing tag, which is dropped (or up to the end of the answer)."""
    found = plain_until(text, final, (BLOCK_CLOSE,))
    if found is None:
        return None
    index, closer = found
    if closer is not None:
        return Rest(index + len(closer), content=index)
    return Rest(index, content=index, more=None if final else _Unread())


def _whole_block(text: str, final: bool) -> Match | None:
    """A block whose first line is not committed at its name: calls when every line is a call object, else
    content (its opening tag, then the rest read as usual)."""
    found = plain_until(text[len(BLOCK_OPEN) :], final, (BLOCK_CLOSE,))
    if found is None or (found[1] is None and not final):
        return None
    index, closer = found
    calls = _line_calls(text[len(BLOCK_OPEN) : len(BLOCK_OPEN) + index])
    if not calls:
        return Match(len(BLOCK_OPEN))
    return Match(len(BLOCK_OPEN) + index + (len(closer) if closer else 0), calls)


def _line_calls(body: str) -> tuple[FoundCall, ...]:
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    calls = [call_from_object(loads(line)) for line in lines]
    return tuple(calls) if calls and all(calls) else ()  # type: ignore[arg-type]
