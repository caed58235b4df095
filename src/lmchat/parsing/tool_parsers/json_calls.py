"""Calls written as JSON objects (Hermes, Llama 3, Mistral): committing them at their name, and reading what
follows their arguments (the rest of the call object, the rest of a JSON list of calls)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lmchat.parsing.json_stream import DONE, OPEN, JsonStream
from lmchat.parsing.scan import (
    HEAD_KEYS,
    MISMATCH,
    CallHead,
    call_from_object,
    call_head,
    is_partial,
    loads,
    skip_json_space,
)
from lmchat.parsing.tool_parsers.base import MatchContext, Open, Rest

CALL_OBJECT = "call object"
"""State of a call object standing alone: after its arguments come its other members and its ``}``."""


@dataclass(frozen=True, slots=True)
class CallList:
    """State inside a JSON list of call objects: right after a call's arguments (``in_object``) or after an
    entry. ``skip_other``: entries that are not calls are dropped (else they end the list's reading, and the
    rest is read as plain text); ``require_arguments``: a call object must write its arguments."""

    in_object: bool = True
    skip_other: bool = False
    require_arguments: bool = False
    closer: str = ""
    """Markup the list is followed by (``</tool_calls>``, a fence's closing backticks), dropped with it."""


def open_call(
    text: str, pos: int, state: Any, end: int | None = None, first_keys: tuple[str, ...] = HEAD_KEYS,
    final: bool = False,
) -> Open | bool | None:
    """:func:`lmchat.parsing.scan.call_head` of the object at ``text[pos]``, as an :class:`Open` with ``state``."""
    head = call_head(text, pos, end, first_keys, final)
    if isinstance(head, CallHead):
        return Open(head.start, head.name, head.call_id, state)
    return head


def object_end(text: str) -> int | None:
    """Index past the ``}`` closing a call object whose arguments end at ``text[0]``: members written after the
    arguments are read and dropped (an ``id`` there comes too late: the call was sent with its own at its name).
    None while unfinished; :data:`lmchat.parsing.scan.MISMATCH` when this is not the rest of a JSON object."""
    pos = skip_json_space(text, 0)
    if pos < len(text) and text[pos] == "}":
        return pos + 1
    stream = JsonStream(object_rest=True)
    _, used = stream.feed(text)
    if stream.state == DONE:
        return used
    return None if stream.state == OPEN else MISMATCH


def object_rest(text: str, final: bool, broken: bool) -> Rest | None:
    """After the arguments of a call object standing alone: its region ends with the object (when the object
    does not end well, what follows the arguments is read as plain text)."""
    if broken:
        return Rest(0)
    end = object_end(text)
    if end is None:
        return None if not final else Rest(0)
    return Rest(0) if end == MISMATCH else Rest(end)


def list_rest(text: str, final: bool, ctx: MatchContext, state: CallList, broken: bool) -> Rest | Open | None:
    """After a call's arguments, or after an entry, in a JSON list of calls: the next call, or the list's end.

    An entry that is not committed at its name is read whole (a call, or dropped with ``skip_other``). Anything
    that does not fit ends the list's reading there: what follows is read as plain text.
    """
    if broken:
        return Rest(0)
    if state.in_object:
        end = object_end(text)
        if end is None:
            return None if not final else Rest(0)
        return Rest(0) if end == MISMATCH else Rest(end, more=replace(state, in_object=False))
    pos = skip_json_space(text, 0)
    if pos == len(text):
        return None if not final else Rest(pos)
    if text[pos] == "]":
        return after_list(text, pos + 1, final, state.closer)
    if text[pos] != ",":
        return Rest(0)
    entry = skip_json_space(text, pos + 1)
    if entry == len(text):
        return None if not final else Rest(0)
    if text[entry] == "{":
        head = open_call(text, entry, replace(state, in_object=True), final=final)
        if isinstance(head, Open) or (head is None and not final):
            return head
        end = ctx.find_closing(text, entry)
        if end is None:
            return None if not final else Rest(0)
        value = loads(text[entry:end]) if end != MISMATCH else None
        call = call_from_object(value, require_arguments=state.require_arguments)
        if call is not None:
            return Rest(end, calls=(call,), more=state)
        return Rest(end, more=state) if value is not None and state.skip_other else Rest(0)
    if not state.skip_other:
        return Rest(0)
    stream = JsonStream()
    _, used = stream.feed(text[entry:])
    if stream.state == DONE:
        return Rest(entry + used, more=state)
    return None if stream.state == OPEN and not final else Rest(0)


def after_list(text: str, end: int, final: bool, closer: str) -> Rest | None:
    """The list ended at ``text[:end]``: its region goes on over space and ``closer``, when that follows."""
    if not closer:
        return Rest(end)
    pos = skip_json_space(text, end)
    if text.startswith(closer, pos):
        return Rest(pos + len(closer))
    if not final and (pos == len(text) or is_partial(text[pos:], closer)):
        return None
    return Rest(end)
