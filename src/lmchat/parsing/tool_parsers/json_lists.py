"""Families that write a JSON list of call objects after a marker (and some, a lone call object):

* ``granite`` (Granite 3.x): ``<|tool_call|>[{"name": ..., "arguments": {...}}, ...]`` (3.1 also ``<tool_call>``),
  or the list alone at the start of the answer;
* ``phi4_mini_json`` (Phi-4-mini): ``functools[{...}, ...]``;
* ``jamba`` (AI21 Jamba) and ``hunyuan_a13b`` (Hunyuan-A13B): ``<tool_calls>[{...}]</tool_calls>``;
* ``xlam`` (Salesforce xLAM-2): the list alone at the start of the answer or right after ``</think>``, in a
  ```` ```json ```` fence, after ``[TOOL_CALLS]``, or inside ``<tool_call>...</tool_call>``.

The first call is committed at its name (``[{"name": "f", "arguments": {"``) and the list then goes on entry by
entry (:func:`lmchat.parsing.tool_parsers.json_calls.list_rest`); its closing markup is dropped with it. A list
whose first entry is written another way (arguments before the name...) is read whole once complete and stays
content unless every entry is a call. A marker not followed by a list (or call object) is content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from lmchat.parsing.scan import MISMATCH, FoundCall, call_from_object, loads, skip_space
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser, plain_until
from lmchat.parsing.tool_parsers.json_calls import CALL_OBJECT, CallList, after_list, list_rest, object_rest, open_call

RESTART = object()
"""An opener after which the answer counts as starting again (xLAM's ``</think>``)."""


def calls_of(value: Any) -> tuple[FoundCall, ...] | None:
    """The calls of a non-empty JSON list whose every entry is a call object; None otherwise."""
    if not isinstance(value, list) or not value:
        return None
    calls = [call_from_object(entry) for entry in value]
    return tuple(calls) if all(calls) else None  # type: ignore[arg-type]


class JsonListToolParser(ToolParser):
    """Base: ``openers`` maps each marker to the markup that closes its list ("" for none)."""

    openers: ClassVar[dict[str, Any]] = {}
    list_at_start: ClassVar[bool] = False
    single_object: ClassVar[bool] = False

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if not self.list_at_start or not text.startswith("["):
            return NO_START
        found = self._list(text, 0, final, ctx, "")
        return NO_START if isinstance(found, Match) and not found.calls else found

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        opener = next(marker for marker in self.markers if text.startswith(marker))
        closer = self.openers[opener]
        if closer is RESTART:
            return Match(len(opener), restart=True)
        pos = skip_space(text, len(opener))
        if pos == len(text):
            return None if not final else Match(len(opener))
        if text[pos] == "[":
            found = self._list(text, pos, final, ctx, closer)
        elif text[pos] == "{" and self.single_object:
            found = self._object(text, pos, final, ctx, closer)
        else:
            found = Match(len(opener))
        return Match(len(opener)) if isinstance(found, Match) and not found.calls else found

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        closer = state.closer if isinstance(state, CallList) else state[1] if isinstance(state, tuple) else ""
        if isinstance(state, _UpTo) or (broken and closer):
            return _up_to(text, final, state if isinstance(state, _UpTo) else _UpTo(closer))
        if isinstance(state, CallList):
            return list_rest(text, final, ctx, state, broken)
        if isinstance(state, tuple):  # a lone object: (CALL_OBJECT, closer)
            rest = object_rest(text, final, broken)
            if rest is None or rest.end == 0 or not state[1]:
                return rest
            return after_list(text, rest.end, final, state[1])
        return Rest(0)

    def _list(self, text: str, pos: int, final: bool, ctx: MatchContext, closer: str) -> Match | Open | None:
        """The list opening at ``text[pos]``: committed at its first call, or read whole (a content match with
        no calls when it is not a list of calls)."""
        item = skip_space(text, pos + 1)
        if item == len(text):
            return None if not final else Match(pos)
        if text[item] == "{":
            head = open_call(text, item, CallList(require_arguments=True, closer=closer), final=final)
            if isinstance(head, Open) or (head is None and not final):
                return head
        return self._whole(text, pos, final, ctx, closer, calls_of)

    def _object(self, text: str, pos: int, final: bool, ctx: MatchContext, closer: str) -> Match | Open | None:
        head = open_call(text, pos, (CALL_OBJECT, closer), final=final)
        if isinstance(head, Open) or (head is None and not final):
            return head
        return self._whole(text, pos, final, ctx, closer, lambda value: (call,) if (call := call_from_object(value))
                           else None)

    @staticmethod
    def _whole(text: str, pos: int, final: bool, ctx: MatchContext, closer: str, read: Any) -> Match | None:
        end = ctx.find_closing(text, pos)
        if end is None:
            return None if not final else Match(pos)
        calls = read(loads(text[pos:end])) if end != MISMATCH else None
        if not calls:
            return Match(pos)
        rest = after_list(text, end, final, closer)
        return None if rest is None else Match(rest.end, calls)


@dataclass(frozen=True, slots=True)
class _UpTo:
    """The calls could not be read further: content up to ``closer`` (dropped)."""

    closer: str


def _up_to(text: str, final: bool, state: _UpTo) -> Rest | None:
    found = plain_until(text, final, (state.closer,))
    if found is None:
        return None
    index, closer = found
    if closer is not None:
        return Rest(index + len(closer), content=index)
    return Rest(index, content=index, more=None if final else state)


class GraniteToolParser(JsonListToolParser):
    name = "granite"
    openers = {"<|tool_call|>": "", "<tool_call>": "</tool_call>"}
    special_tokens = ("<|tool_call|>",)
    markers = tuple(openers)
    list_at_start = True
    single_object = True


class Phi4MiniToolParser(JsonListToolParser):
    name = "phi4_mini_json"
    openers = {"functools": ""}
    markers = tuple(openers)


class JambaToolParser(JsonListToolParser):
    name = "jamba"
    openers = {"<tool_calls>": "</tool_calls>"}
    markers = tuple(openers)
    single_object = True


class HunyuanToolParser(JambaToolParser):
    name = "hunyuan_a13b"


class XlamToolParser(JsonListToolParser):
    name = "xlam"
    openers = {"[TOOL_CALLS]": "", "<tool_call>": "</tool_call>", "```json": "```", "</think>": RESTART}
    markers = tuple(openers)
    list_at_start = True
    single_object = True
