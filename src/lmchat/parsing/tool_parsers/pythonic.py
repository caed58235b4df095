"""Llama 3.2 / Llama 4 "pythonic" calls: ``[get_weather(city="LA"), add(a=1, b=2)]``.

The list must open the answer, or stand between ``<|python_start|>`` and ``<|python_end|>``. It is read as Python
(never evaluated): keyword arguments with literal values only. A call is committed at its name, once a prefix
shows ``[`` (or ``,`` after the list's previous call), a dotted name and ``(`` followed by ``)`` or by a keyword and
its ``=`` (not ``==``); the decision depends on that prefix only. Its arguments then stream one complete argument at
a time (``{``, ``"k": v``, ``, "k2": v2``, ``}``): a value is complete at the ``,`` or ``)`` after it (found by a
resumable scanner that skips brackets and strings) and is converted with ``ast.literal_eval`` (``True``/``None`` ->
``true``/``null``, tuples -> lists; JSON's ``true``/``false``/``null`` are read too), so joined they are the
arguments reading the whole call with ``ast`` gives (but for a repeated keyword, which is passed on as written).
An argument that cannot be read (not a literal, positional, ``**kw``, cut by the end of the answer or of the tag)
closes the arguments, and the text from it on is content, as is anything after a call that is neither the next
call nor the list's end (in the tagged form: up to ``<|python_end|>``). A list whose first call is written another
way (a positional argument, a comment...) is read whole, with ``ast``, once complete, and stays content when it is
not a list of such calls.
"""

from __future__ import annotations

import ast
import keyword
import re
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from lmchat.parsing.scan import MISMATCH, BracketScanner, FoundCall, dumps, is_partial
from lmchat.parsing.tool_parsers.base import NO_START, Match, MatchContext, Open, Rest, ToolParser
from lmchat.parsing.tool_parsers.hermes import region_limit, rest_of_tag, tagged_body

START = "<|python_start|>"
END = "<|python_end|>"


@dataclass(frozen=True, slots=True)
class Tags:
    """The tags a family writes its calls between; ``bracketed``: the calls form a Python list (``[a(), b()]``),
    else they follow one another, one per line (OLMo 3)."""

    start: str
    end: str
    bracketed: bool = True


LLAMA4 = Tags(START, END)
_CALL_OPENING = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_PLAUSIBLE_PREFIX = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?\Z")
_SPACE = re.compile(r"[ \t\f\r\n]*")  # what Python skips between tokens inside brackets
_DOTTED = re.compile(r"[A-Za-z_][\w.]*")
_IDENTIFIER = re.compile(r"[^\W\d]\w*")
@dataclass(frozen=True, slots=True)
class _Arguments:
    """State of a committed call: ``text`` starts right after its ``(`` (``first``) or at the ``,`` or ``)`` that
    ends an argument. ``tagged``: the tags the calls stand between (None: a list opening the answer)."""

    tagged: Tags | None
    first: bool = True


@dataclass(frozen=True, slots=True)
class _AfterCall:
    """State after a call's ``)``: the next call or the list's end."""

    tagged: Tags | None


@dataclass(frozen=True, slots=True)
class _TagEnd:
    """State of a tagged list after its ``]``: space, then the end tag."""

    tags: Tags


@dataclass(frozen=True, slots=True)
class _Odd:
    """The calls could not be read further: content up to the end tag."""

    tags: Tags


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


def parse_call_lines(source: str) -> tuple[FoundCall, ...] | None:
    """The calls of Python call expressions written one per line; None when ``source`` is anything else."""
    try:
        body = ast.parse(source.strip(), mode="exec").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not body or not all(isinstance(node, ast.Expr) for node in body):
        return None
    calls = [_call(node.value) for node in body]  # type: ignore[attr-defined]
    return tuple(calls) if all(calls) else None  # type: ignore[arg-type]


def _call(node: ast.expr) -> FoundCall | None:
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = _dotted_name(node.func)
    if name is None or any(keyword.arg is None for keyword in node.keywords):
        return None
    try:
        arguments = {keyword.arg: literal(keyword.value) for keyword in node.keywords}
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


def _skip(text: str, pos: int, end: int) -> int:
    return _SPACE.match(text, pos, end).end()


def _identifier(word: str) -> str | None:
    """``word`` as Python reads it (NFKC-normalised); None when it is not an identifier or is a keyword."""
    if not word.isascii():
        word = unicodedata.normalize("NFKC", word)
    return word if word.isidentifier() and not keyword.iskeyword(word) else None


def _name(text: str, pos: int, end: int) -> tuple[str, int] | bool | None:
    """The dotted name at ``text[pos]`` and the index past it; None while ``text[:end]`` may end inside it, False
    when there is none."""
    found = _DOTTED.match(text, pos, end)
    if found is None:
        return False
    if found.end() == end:
        return None
    parts = [_identifier(part) for part in found.group().split(".")]
    return (".".join(parts), found.end()) if all(parts) else False  # type: ignore[arg-type]


def _keyword(text: str, pos: int, end: int) -> tuple[str, int] | bool | None:
    """``key=`` at ``text[pos]``: the key and the index past the ``=``; None while ``text[:end]`` may end inside it
    (or right after the ``=``, which must not start ``==``), False when it is not there."""
    found = _IDENTIFIER.match(text, pos, end)
    if found is None:
        return False
    if found.end() == end:
        return None
    key = _identifier(found.group())
    equals = _skip(text, found.end(), end)
    if key is None or (equals < end and text[equals] != "="):
        return False
    if equals + 1 >= end:
        return None
    return (key, equals + 1) if text[equals + 1] != "=" else False


def _call_head(text: str, pos: int, end: int, decide: bool) -> tuple[str, int] | bool | None:
    """A call written from ``text[pos]`` up to its commit point: ``name(`` then ``)`` or ``key=``. Its name and
    the index past its ``(``; False when it is not one; None while ``text[:end]`` ends first (False when
    ``decide``: no more text can come)."""
    undecided: Any = False if decide else None
    pos = _skip(text, pos, end)
    name = _name(text, pos, end) if pos < end else None
    if not name:
        return undecided if name is None else False
    call_name, cursor = name
    cursor = _skip(text, cursor, end)
    if cursor == end:
        return undecided
    if text[cursor] != "(":
        return False
    start = cursor + 1
    cursor = _skip(text, start, end)
    if cursor == end:
        return undecided
    if text[cursor] == ")":
        return call_name, start
    found = _keyword(text, cursor, end)
    if found is None:
        return undecided
    return (call_name, start) if found else False


def _literal_json(source: str) -> str | None:
    """The JSON text of the Python literal ``source`` (as written between the parentheses of a call); None when
    it is not one."""
    if not source.strip(" \t\f\r\n"):
        return None
    try:
        return dumps(literal(ast.parse("(" + source + "\n)", mode="eval")))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


_JSON_NAMES = {"true": True, "false": False, "null": None}


class _JsonNames(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _JSON_NAMES:
            return ast.copy_location(ast.Constant(_JSON_NAMES[node.id]), node)
        return node


def literal(node: ast.AST) -> Any:
    """``ast.literal_eval`` of ``node`` (never evaluated), with JSON's ``true``/``false``/``null`` read as Python's
    (LLaMA-Factory's ``lfm2`` tool format writes values that are not strings as JSON)."""
    return ast.literal_eval(_JsonNames().visit(node))


def _balanced(source: str) -> bool:
    """True when no string or bracket is left open in ``source`` (nor closed by the wrong bracket)."""
    return BracketScanner().find_item_end(source + ",", 0) == len(source)


class PythonicToolParser(ToolParser):
    name = "pythonic"
    tags: ClassVar[Tags] = LLAMA4
    markers = (START,)
    special_tokens = (START, END)  # Llama 4's
    list_at_start: ClassVar[bool] = True

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        if not self.list_at_start or not text.startswith("["):
            return NO_START
        head = _call_head(text, 1, len(text), final)
        if head is None:
            return None
        if head:
            return Open(head[1], head[0], state=_Arguments(tagged=None), arguments="{")
        if not _CALL_OPENING.match(text):
            undecided = _PLAUSIBLE_PREFIX.match(text) and not final
            return None if undecided else NO_START
        end = ctx.find_closing(text, 0, quotes="'\"")
        if end is None:
            return None if not final else NO_START
        calls = parse_call_list(text[:end]) if end != MISMATCH else None
        return Match(end, calls) if calls else NO_START

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        tags = self.tags
        limit = region_limit(text, tags.start, tags.end)
        end = len(text) if limit == -1 else limit
        decide = final or limit != -1
        first = _skip(text, len(tags.start), end)
        if first == end:
            head = False if decide else None
        elif tags.bracketed:
            head = _call_head(text, first + 1, end, decide) if text[first] == "[" else False
        else:
            head = _call_head(text, first, end, decide)
        if head is None:
            return None
        if head:
            return Open(head[1], head[0], state=_Arguments(tagged=tags), arguments="{")
        region = tagged_body(text, tags.start, tags.end, final)
        if region is None:
            return None
        body, region_end = region
        calls = parse_call_list(body) if tags.bracketed else parse_call_lines(body)
        return Match(region_end, calls) if calls else Match(region_end)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        if isinstance(state, _Odd):
            rest = rest_of_tag(text, final, state.tags.start, state.tags.end)
            return replace(rest, more=state) if rest is not None and rest.more is not None else rest
        if isinstance(state, _TagEnd):
            return _tag_end(text, final, state.tags)
        tags = state.tagged
        limit = ctx.scanner.find_first(text, (tags.end, tags.start)) if tags else -1  # where the tag's region ends
        if isinstance(state, _AfterCall):
            return _after_call(text, final, state, limit)
        return _argument(text, final, ctx, state, limit)


class Lfm2ToolParser(PythonicToolParser):
    """LFM2 (Liquid): ``<|tool_call_start|>[f(a=1), g()]<|tool_call_end|>``."""

    name = "lfm2"
    tags = Tags("<|tool_call_start|>", "<|tool_call_end|>")
    markers = (tags.start,)
    special_tokens = (tags.start, tags.end)
    list_at_start = False


class Olmo3ToolParser(PythonicToolParser):
    """OLMo 3: ``<function_calls>f(a=1)\ng(b=2)</function_calls>``, one call per line."""

    name = "olmo3"
    tags = Tags("<function_calls>", "</function_calls>", bracketed=False)
    markers = (tags.start,)
    special_tokens = ()
    list_at_start = False


def _cut_marker(text: str, pos: int, final: bool, tags: Tags) -> bool:
    """True when ``text`` may still grow and ends, from ``pos``, with the start of a tag (which may end the list)."""
    size = len(text) - pos
    if final or not 0 < size < len(tags.start) + len(tags.end):
        return False
    tail = text[pos:]
    return is_partial(tail, tags.start) or is_partial(tail, tags.end)


def _stop(at: int, tagged: Tags | None, arguments: str = "") -> Rest:
    """The list's reading ends at ``text[at]``: what follows is content (in the tagged form, up to the tag's end)."""
    return Rest(at, arguments=arguments, more=_Odd(tagged) if tagged else None)


def _argument(text: str, final: bool, ctx: MatchContext, state: _Arguments, limit: int) -> Rest | None:
    """The next argument of a committed call (``"k": v``, after ``, `` but for the first), or its ``)``."""
    end = len(text) if limit == -1 else limit
    decide = final or limit != -1
    pos = 0
    if not state.first and text.startswith(","):
        pos = 1
    pos = _skip(text, pos, end)
    if state.tagged and _cut_marker(text, pos, final, state.tagged):
        return None
    if pos == end:  # the answer or the tag ends here: nothing is lost but closing markup
        return None if not decide else _stop(pos, state.tagged, "}")
    if text[pos] == ")":
        return Rest(pos + 1, arguments="}", more=_AfterCall(state.tagged))
    broken = _stop(0 if not state.first else pos, state.tagged, "}")  # content from the argument's "," on
    found = _keyword(text, pos, end)
    if found is None:
        return None if not decide else broken
    if not found:
        return broken
    key, value_start = found
    value_end = ctx.scanner.find_item_end(text, value_start)
    if value_end is None or value_end == MISMATCH or value_end > end:  # no "," or ")" before the end
        if value_end == MISMATCH and limit == -1:
            return broken
        if not decide:
            return None
        value_end = end
        if not _balanced(text[value_start:end]):  # a string or bracket the end cuts
            return broken
    value = _literal_json(text[value_start:value_end])
    if value is None:
        return broken
    piece = ("" if state.first else ", ") + dumps(key) + ": " + value
    return Rest(value_end, arguments=piece, more=_Arguments(state.tagged, first=False))


def _after_call(text: str, final: bool, state: _AfterCall, limit: int) -> Rest | Open | None:
    """After a call's ``)``: ``, name(`` opens the next call, ``]`` ends the list (calls one per line: the next
    call's name, or the end tag)."""
    end = len(text) if limit == -1 else limit
    decide = final or limit != -1
    tags = state.tagged
    pos = _skip(text, 0, end)
    if tags is not None and _cut_marker(text, pos, final, tags):
        return None
    if pos == end:
        if tags is not None and not tags.bracketed and limit != -1 and text.startswith(tags.end, limit):
            return Rest(limit + len(tags.end))
        return None if not decide else _stop(pos, tags)
    if tags is not None and not tags.bracketed:
        head = _call_head(text, pos, end, decide) if pos else False
        if head is None:
            return None
        return Open(head[1], head[0], state=_Arguments(tags), arguments="{") if head else _stop(pos, tags)
    after = pos
    if text[pos] == ",":
        after = _skip(text, pos + 1, end)
        if tags is not None and _cut_marker(text, after, final, tags):
            return None
        if after == end:  # a trailing "," (Python allows one) is closing markup too
            return None if not decide else _stop(after, tags)
    if text[after] == "]":
        return Rest(after + 1, more=_TagEnd(tags) if tags else None)
    if after == pos:
        return _stop(pos, tags)
    head = _call_head(text, after, end, decide)
    if head is None:
        return None
    if not head:
        return _stop(pos, tags)
    return Open(head[1], head[0], state=_Arguments(tags), arguments="{")


def _tag_end(text: str, final: bool, tags: Tags) -> Rest | None:
    """After a tagged list's ``]``: space, then the end tag (or the next start tag, or the end); anything else is
    content up to the tag's end."""
    pos = _skip(text, 0, len(text))
    if text.startswith(tags.end, pos):
        return Rest(pos + len(tags.end))
    if text.startswith(tags.start, pos):
        return Rest(pos)
    if pos == len(text):
        return None if not final else Rest(pos)
    return None if _cut_marker(text, pos, final, tags) else Rest(pos, more=_Odd(tags))
