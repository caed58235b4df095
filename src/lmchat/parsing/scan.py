"""Small text-scanning helpers shared by the tool parsers.

Streaming parsers call these on a growing text, so each helper says "not decided yet" (None) instead of guessing
while the text may still grow, and decides the same way on every longer text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INCOMPLETE = None
MISMATCH = -1
_PAIRS = {"{": "}", "[": "]"}
_STRUCTURE = {'"': re.compile(r'[][{}"]'), "'\"": re.compile(r"""[][{}"']""")}
_STRING_END = {'"': re.compile(r'["\\]'), "'": re.compile(r"['\\]")}
_DECODER = json.JSONDecoder(strict=False)


@dataclass(frozen=True, slots=True)
class FoundCall:
    """A call recognised in the text, before it gets an id (``call_id`` when the model wrote one)."""

    name: str
    arguments: str
    call_id: str | None = None


def find_closing(text: str, start: int, quotes: str = '"') -> int | None:
    """Index just past the bracket closing ``text[start]`` (a ``{`` or ``[``), skipping quoted strings.

    None when the text ends first; :data:`MISMATCH` when brackets do not pair up. ``quotes`` is ``'"'`` for JSON and
    ``'\\'"'`` for Python literals. Streams use :class:`BracketScanner`, which resumes where it stopped.
    """
    return BracketScanner().find_closing(text, start, quotes)


@dataclass(slots=True)
class _ScanState:
    prefix: str  # the text scanned so far; the state is only reused on a text that extends it
    pos: int
    stack: list[str]
    quote: str | None = None  # inside a string opened by this quote


class BracketScanner:
    """:func:`find_closing` for a growing text: each call resumes where the last one on a prefix stopped, so
    streaming a long call costs linear, not quadratic, time."""

    def __init__(self) -> None:
        self._states: dict[tuple[int, str], _ScanState] = {}

    def reset(self) -> None:
        self._states.clear()

    def find_closing(self, text: str, start: int, quotes: str = '"') -> int | None:
        return self._resume((start, quotes), text, lambda state: _scan(text, state, quotes))

    def find_first(self, text: str, needles: tuple[str, ...], start: int = 0) -> int:
        """Where the first of ``needles`` starts at or after ``start`` (-1 if none); only the text added since the
        previous call on this growing text is searched."""
        key = (start, needles)
        state = self._states.get(key)
        if state is None or not text.startswith(state.prefix):
            state = self._states[key] = _ScanState("", start, [])
        found = [index for index in (text.find(needle, state.pos) for needle in needles) if index != -1]
        if found:
            state.pos = min(found)
        else:  # a needle cut by the end of the text is searched again
            state.pos = max(state.pos, len(text) - max(map(len, needles)) + 1)
        state.prefix = text[: state.pos]
        return min(found, default=-1)

    def find_item_end(self, text: str, start: int) -> int | None:
        """Where the Python value (a list item, a keyword argument's value) written from ``text[start]`` ends.

        The index of the first ``,`` outside brackets (``()``, ``[]``, ``{}``) and string literals (``'`` or ``"``,
        triple-quoted too), or of the first closing bracket outside brackets (the ``)`` ending an argument list,
        the ``]`` ending a list, or a stray one). None when the text ends first; :data:`MISMATCH` when a bracket is
        closed by the wrong one. Resumed, like :meth:`find_closing`, from the previous call on this growing text.
        """
        return self._resume((start, _ITEM), text, lambda state: _scan_item(text, state))

    def _resume(self, key: tuple[int, str], text: str, scan: Callable[[_ScanState], int | None]) -> int | None:
        """Run ``scan`` from the state saved under ``key`` (when ``text`` extends the text it stopped on), and save
        the state again while the answer is still incomplete."""
        state = self._states.pop(key, None)
        if state is None or not text.startswith(state.prefix):
            state = _ScanState("", key[0], [])
        result = scan(state)
        if result is INCOMPLETE:
            state.prefix = text[: state.pos]
            self._states[key] = state
        return result


def _scan(text: str, state: _ScanState, quotes: str) -> int | None:
    """Advance ``state`` through ``text``; the closing index, :data:`MISMATCH`, or None (state saved)."""
    structure = _STRUCTURE[quotes]
    while True:
        if state.quote is not None and not _skip_quoted(text, state, state.quote):
            return INCOMPLETE
        found = structure.search(text, state.pos)
        if found is None:
            state.pos = len(text)
            return INCOMPLETE
        char, state.pos = found.group(), found.end()
        if char in quotes:
            state.quote = char
        elif char in _PAIRS:
            state.stack.append(_PAIRS[char])
        elif not state.stack or state.stack.pop() != char:
            return MISMATCH
        elif not state.stack:
            return state.pos


_ITEM = "python item"  # the scanner's key for find_item_end (others are keyed by their quotes)
_ITEM_STRUCTURE = re.compile(r"""[][(){},"']""")
_ITEM_PAIRS = {"(": ")", "[": "]", "{": "}"}
_PYTHON_STRING_END = {quote: re.compile(re.escape(quote) + r"|\\") for quote in ("'", '"', "'''", '"""')}


def _scan_item(text: str, state: _ScanState) -> int | None:
    """Advance ``state`` to where a Python value ends (see :meth:`BracketScanner.find_item_end`)."""
    while True:
        if state.quote is not None and not _skip_quoted(text, state, state.quote):
            return INCOMPLETE
        found = _ITEM_STRUCTURE.search(text, state.pos)
        if found is None:
            state.pos = len(text)
            return INCOMPLETE
        char, at = found.group(), found.start()
        if char in "'\"":
            if text.startswith(char * 3, at):
                state.quote, state.pos = char * 3, at + 3
            elif (char * 3).startswith(text[at:]):  # a quote or two last: maybe a triple quote, read them again
                state.pos = at
                return INCOMPLETE
            else:
                state.quote, state.pos = char, at + 1
        elif char in _ITEM_PAIRS:
            state.stack.append(_ITEM_PAIRS[char])
            state.pos = at + 1
        elif not state.stack:
            return at
        elif char == "," or state.stack.pop() == char:
            state.pos = at + 1
        else:
            return MISMATCH


def _skip_quoted(text: str, state: _ScanState, quote: str) -> bool:
    """Move past the closing ``quote`` (one or three characters) of the string ``state`` is in, honouring
    backslash escapes; False (state kept) when the text ends first."""
    pattern = _PYTHON_STRING_END[quote]
    while True:
        found = pattern.search(text, state.pos)
        if found is None:  # a triple quote's closing may be cut: its first quotes are read again
            state.pos = max(state.pos, len(text) - len(quote) + 1)
            return False
        if found.group() == quote:
            state.pos, state.quote = found.end(), None
            return True
        if found.end() == len(text):  # a backslash last: read it again with what follows
            state.pos = found.start()
            return False
        state.pos = found.end() + 1


def loads(text: str) -> Any:
    """``json.loads`` that accepts raw control characters in strings; None when the text is not JSON."""
    try:
        return _DECODER.decode(text.strip())
    except (ValueError, RecursionError):
        return None


def dumps(value: Any) -> str:
    """The canonical JSON text of arguments (``json.dumps`` defaults, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False)


def arguments_text(value: Any) -> str | None:
    """Arguments as JSON object text, from an object or from a string holding one; None otherwise."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        value = loads(value)
    return dumps(value) if isinstance(value, dict) else None


def call_from_object(obj: Any, *, require_arguments: bool = False) -> FoundCall | None:
    """A call from ``{"name": ..., "arguments"|"parameters": {...}}``; None when ``obj`` is not one."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict) and "name" not in obj:
        obj = {**obj["function"], "id": obj.get("id")}
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    key = "arguments" if "arguments" in obj else "parameters"
    if require_arguments and key not in obj:
        return None
    arguments = arguments_text(obj.get(key))
    if arguments is None:
        return None
    call_id = obj.get("id")
    return FoundCall(name.strip(), arguments, call_id if isinstance(call_id, str) and call_id else None)


def skip_space(text: str, pos: int) -> int:
    """The first index at or after ``pos`` that is not whitespace (``len(text)`` if none)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def is_partial(text: str, marker: str) -> bool:
    """True when ``text`` is a proper, non-empty prefix of ``marker`` (the marker may still be completed)."""
    return 0 < len(text) < len(marker) and marker.startswith(text)


def earliest_marker(text: str, markers: tuple[str, ...]) -> int:
    """Where the first marker starts, counting a marker cut off by the end of ``text``; -1 if none."""
    best = -1
    for marker in markers:
        index = text.find(marker)
        if index == -1:
            index = _tail_prefix(text, marker)
        if index != -1 and (best == -1 or index < best):
            best = index
    return best


def _tail_prefix(text: str, marker: str) -> int:
    """Start of the longest end of ``text`` that is a proper prefix of ``marker``; -1 if none."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return len(text) - size
    return -1


def first_key_state(text: str, pos: int, keys: tuple[str, ...]) -> bool | None:
    """Whether the JSON object opening at ``text[pos]`` starts with one of ``keys``; None while undecided."""
    pos = skip_space(text, pos + 1)
    if pos == len(text):
        return None
    if text[pos] != '"':
        return False
    end = text.find('"', pos + 1)
    key = text[pos + 1 : end if end != -1 else len(text)]
    if end == -1:
        return None if any(k.startswith(key) for k in keys) else False
    return key in keys


# --- the head of a JSON call object, read as soon as it is written -------------------------------------------

HEAD_KEYS = ("name", "id", "type")
"""Keys a streamed call object may write before its arguments (each once; ``name`` is required)."""
ARGUMENT_KEYS = ("arguments", "parameters")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
NOT_A_HEAD = False


@dataclass(frozen=True, slots=True)
class CallHead:
    """A call object read up to the ``{`` that opens its arguments (at ``text[start]``)."""

    name: str
    start: int
    call_id: str | None = None


def _arguments_head(text: str, cursor: int, end: int, final: bool, seen: dict[str, str]) -> CallHead | bool | None:
    """The head of a call whose arguments' value starts at ``text[cursor]`` (see :func:`call_head`)."""
    call_name = seen.get("name", "").strip()
    if text[cursor] != "{" or not call_name:
        return NOT_A_HEAD
    inside = skip_json_space(text, cursor + 1)
    if inside >= end:
        return CallHead(call_name, cursor, seen.get("id") or None) if final or end < len(text) else None
    return CallHead(call_name, cursor, seen.get("id") or None) if text[inside] in '"}' else NOT_A_HEAD


def skip_json_space(text: str, pos: int) -> int:
    """The first index at or after ``pos`` that is not JSON whitespace."""
    return _JSON_SPACE.match(text, pos).end()


def json_string_at(text: str, pos: int, end: int | None = None) -> tuple[str, int] | bool | None:
    """The JSON string opening at ``text[pos]`` (a quote) and the index past it; None when ``text[:end]`` ends
    inside it, :data:`NOT_A_HEAD` when it is not a valid string."""
    end = len(text) if end is None else end
    cursor = pos + 1
    while True:
        found = _STRING_END['"'].search(text, cursor, end)
        if found is None or (found.group() == "\\" and found.end() >= end):
            return None
        if found.group() == '"':
            try:
                return json.decoder.scanstring(text, pos + 1, False)
            except ValueError:
                return NOT_A_HEAD
        cursor = found.end() + 1


def call_head(
    text: str, pos: int, end: int | None = None, first_keys: tuple[str, ...] = HEAD_KEYS, final: bool = False
) -> CallHead | bool | None:
    """Read the object opening at ``text[pos]`` (a ``{``) as the head of a call: ``{"name": "f", "arguments": {"``
    (``id`` and ``type`` strings may come before the arguments, ``parameters`` may name them).

    A :class:`CallHead` once its arguments' ``{`` is read and followed by the ``"`` of a key or by ``}`` (or by the
    end of ``text[:end]``, when that is the end of the region or, ``final``, of the answer); None while
    ``text[:end]`` ends first;
    :data:`NOT_A_HEAD` when the object is written any other way (the name after the arguments, arguments that are
    a string, other keys first, not JSON...): such an object can only be judged whole. ``first_keys``: the keys
    the object may open with.
    """
    end = len(text) if end is None else end
    seen: dict[str, str] = {}
    cursor = pos + 1
    while True:
        cursor = skip_json_space(text, cursor)
        if cursor >= end:
            return None
        if seen:
            if text[cursor] != ",":
                return NOT_A_HEAD
            cursor = skip_json_space(text, cursor + 1)
            if cursor >= end:
                return None
        if text[cursor] != '"':
            return NOT_A_HEAD
        allowed = first_keys if not seen else (*(key for key in HEAD_KEYS if key not in seen), *ARGUMENT_KEYS)
        key = json_string_at(text, cursor, end)
        if key is None:
            partial = text[cursor + 1 : end]
            return None if "\\" in partial or any(name.startswith(partial) for name in allowed) else NOT_A_HEAD
        if key is NOT_A_HEAD or key[0] not in allowed:
            return NOT_A_HEAD
        name, cursor = key
        cursor = skip_json_space(text, cursor)
        if cursor >= end:
            return None
        if text[cursor] != ":":
            return NOT_A_HEAD
        cursor = skip_json_space(text, cursor + 1)
        if cursor >= end:
            return None
        if name in ARGUMENT_KEYS:
            return _arguments_head(text, cursor, end, final, seen)
        if text[cursor] != '"':
            return NOT_A_HEAD
        value = json_string_at(text, cursor, end)
        if value is None or value is NOT_A_HEAD:
            return value
        seen[name], cursor = value
