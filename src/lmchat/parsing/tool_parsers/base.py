"""The tool-parser contract and the one streaming scanner all parsers share.

A parser only describes its syntax: the ``markers`` that open a call anywhere in the answer, and matchers that
look at the text from a candidate position and answer "need more text" (None), a decided region (:class:`Match`)
or a committed call (:class:`Open`). The scanner (:class:`ToolStream`) does the rest, the same way for a
one-piece answer and for a stream (``parse`` is one ``feed`` of the whole answer, then ``finish``), so both always
agree:

* text before a candidate is content; text that could be the start of a marker is held back until it is decided,
  so no partial markup ever reaches the content;
* whitespace right before a call, between calls and at the end of an answer with calls is dropped (so is the
  parser's ``separator`` between two calls, Llama 3's ``;``); an answer without calls comes out unchanged;
* **a call is committed at its name.** As soon as a well-formed prefix of a call's markup shows its name and the
  start of its JSON arguments (the ``{`` followed by a key's ``"`` or by ``}``, :func:`arguments_open`), the
  matcher answers :class:`Open` and the call is announced: a :class:`ToolCallDelta` with index, id (the model's
  own when it wrote one before the arguments; one written after them comes too late and is dropped) and name.
  The arguments then stream as JSON fragments (:class:`lmchat.parsing.json_stream.JsonStream`), in deltas that
  carry only ``arguments``; joined, they are exactly ``dumps(loads(arguments))``, the text a whole call gets (a
  repeated key is passed on as written), or, for arguments written as a JSON text of their own
  (:attr:`Open.verbatim`), the text as the model wrote it. The decision depends only on the text up to that
  point, so chunking never changes it. Calls whose arguments are not JSON (GLM-4.5, the XML and pythonic
  families) are committed at their name or first argument and stream one complete argument at a time;
* a committed call stays a call whatever follows. If its arguments break (the answer ends inside them, e.g. cut
  by ``max_tokens``, or the JSON turns invalid) they are closed into valid JSON (an open string is ended, an
  unfinished number or literal and a key without a value are dropped, open containers are closed), and the text
  that could not be read from that point on comes out as content, as does anything after the arguments that
  does not fit the family's closing markup (:meth:`ToolParser.match_rest`): nothing the model wrote is lost;
* text that is malformed before the commit point is plain content. Calls that cannot be committed at their name
  (the name written after the arguments, arguments written as a JSON string, a Python-style list whose first
  call is written another way) are decided whole once their region is complete, and sent as one delta with id,
  name and complete arguments; a malformed one is plain content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lmchat.parsing.json_stream import BROKEN, OPEN, JsonStream
from lmchat.parsing.scan import BracketScanner, FoundCall, earliest_marker, is_partial, skip_json_space
from lmchat.parsing.schema import ToolSchemas, tool_schemas
from lmchat.parsing.stream import TextStream
from lmchat.parsing.types import OutputDelta, ParsedOutput, ToolCallDelta, collect, new_call_id


@dataclass(frozen=True, slots=True)
class Match:
    """A decided region: ``text[:end]`` holds ``calls``, or is plain content when ``calls`` is empty.

    ``markup``: the region is markup that carries nothing (a channel header, an end-of-message token) and is
    dropped. ``restart``: after the region the answer counts as starting again, so :meth:`ToolParser.match_start`
    looks at what follows (xLAM writes its call list right after a ``</think>``).
    """

    end: int
    calls: tuple[FoundCall, ...] = ()
    markup: bool = False
    restart: bool = False


@dataclass(frozen=True, slots=True)
class Open:
    """A committed call: ``text[:start]`` is its markup and its arguments start at ``text[start]``.

    By default they are the JSON object opening there, which the stream reads (and re-serialises, or passes on as
    written with ``verbatim``) itself; then
    :meth:`ToolParser.match_rest` reads what follows them, with ``state``. A parser whose arguments are not JSON
    gives ``arguments``, their first fragment (``"{"``), and streams the rest itself through
    :attr:`Rest.arguments`.
    """

    start: int
    name: str
    call_id: str | None = None
    state: Any = None
    arguments: str | None = None
    verbatim: bool = False
    """The JSON arguments are sent as written (when they are valid) instead of re-serialised."""


@dataclass(frozen=True, slots=True)
class Rest:
    """What :meth:`ToolParser.match_rest` read after a committed call's arguments.

    ``text[:content]`` is plain content (text the family's syntax could not place), ``text[content:end]`` markup,
    holding ``calls`` decided whole; ``arguments`` continues the open call's arguments (for :class:`Open` with
    ``arguments``). ``more`` is None when the call's region ends at ``end``; otherwise the region goes on and
    ``match_rest`` is called again, with ``more`` as its state, on the text after ``end``.
    """

    end: int
    content: int = 0
    calls: tuple[FoundCall, ...] = ()
    arguments: str = ""
    more: Any = None


@dataclass(frozen=True, slots=True)
class MatchContext:
    """What matchers may use besides the text: the request's tool schemas and a resumable bracket scanner."""

    tools: ToolSchemas
    scanner: BracketScanner

    def find_closing(self, text: str, start: int, quotes: str = '"') -> int | None:
        """:func:`lmchat.parsing.scan.find_closing`, resumed from the previous call on this growing text."""
        return self.scanner.find_closing(text, start, quotes)


def arguments_open(text: str, pos: int, final: bool) -> bool | None:
    """Whether the ``{`` at ``text[pos]`` opens JSON arguments a call can be committed at: it is followed (after
    whitespace) by the ``"`` of a key or by ``}``, or the answer ends there. None while undecided."""
    after = skip_json_space(text, pos + 1)
    if after == len(text):
        return True if final else None
    return text[after] in '"}'


NO_START = Match(0)
"""What :meth:`ToolParser.match_start` answers when the answer does not open with a marker-less call."""


def plain_until(text: str, final: bool, closers: Sequence[str]) -> tuple[int, str | None] | None:
    """Where the first of ``closers`` starts in ``text`` and which one: ``(index, closer)``.

    Without one: ``(len(text), None)`` when ``final``; else ``(index, None)`` where ``text[:index]`` cannot be part
    of a closer (None when that is nothing), so text can stream while a closer is awaited.
    """
    best: tuple[int, str | None] | None = None
    for closer in closers:
        index = text.find(closer)
        if index != -1 and (best is None or index < best[0]):
            best = (index, closer)
    if best is not None:
        return best
    if final:
        return len(text), None
    safe = earliest_marker(text, tuple(closers))
    safe = len(text) if safe == -1 else safe
    return (safe, None) if safe else None


class ToolParser:
    """Base class: subclasses set ``name`` and ``markers`` and implement the matchers they need."""

    name: ClassVar[str] = ""
    markers: ClassVar[tuple[str, ...]] = ()
    separator: ClassVar[str] = ""
    """Text allowed between two calls, dropped there like whitespace (content anywhere else)."""
    ends_reasoning: ClassVar[tuple[str, ...]] = ()
    """Markers that end a reasoning block the prompt opened even without its closing tag (a model that calls a
    tool straight from its thoughts); they stay in the text, for this parser."""
    special_tokens: ClassVar[tuple[str, ...]] = ()
    """Tokens of the family's markup that its models' tokenizers mark special. Engines drop special tokens from
    the text by default (``skip_special_tokens``), so the facade's parsing plan has them keep these (a token a
    tokenizer does not mark special is in the text anyway)."""

    def parse(self, text: str, tools: Sequence[Mapping[str, Any]] | None = None) -> ParsedOutput:
        """Split a whole answer into content and tool calls (never raises for model output)."""
        stream = self.start_stream(tools)
        return collect([*stream.feed(text), *stream.finish()])

    def start_stream(self, tools: Sequence[Mapping[str, Any]] | None = None) -> ToolStream:
        """A stream for one answer: ``feed`` each text delta, then ``finish``."""
        return ToolStream(self, MatchContext(tool_schemas(tools), BracketScanner()))

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        """A call written without a marker at the very start of the answer (``text`` starts at its first
        non-space character). :data:`NO_START` when there is none."""
        return NO_START

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | Open | None:
        """The region opened by the full marker ``text`` starts with. ``final``: the answer ends with ``text``,
        so decide now. A content answer must consume at least one character."""
        return Match(1)

    def match_rest(self, text: str, final: bool, ctx: MatchContext, state: Any, broken: bool) -> Rest | Open | None:
        """What follows the arguments of a call committed by an :class:`Open` with this ``state``: ``text`` starts
        right after them. ``broken``: they broke, and ``text`` starts with what could not be read. Decide when
        ``final``. By default the call's region ends with its arguments, and what follows is read as usual."""
        return Rest(0)


@dataclass(slots=True)
class _OpenCall:
    index: int
    state: Any
    json: JsonStream | None  # reading the arguments; None once they are read (or when the parser streams them)
    broken: bool = False


class ToolStream(TextStream):
    """Incremental splitting of one answer; see the module docstring for the rules."""

    def __init__(self, parser: ToolParser, context: MatchContext) -> None:
        self._parser = parser
        self._context = context
        super().__init__()
        self._at_start = True
        self._pending_space = ""
        self._after_call = False
        self._num_calls = 0
        self._open: _OpenCall | None = None

    def finish(self) -> list[OutputDelta]:
        """Decide everything still held back; the answer is complete."""
        if not self._finished:
            self._finished = True
            self._drain(final=True)
            if self._buffer:  # a matcher could not decide: keep the text rather than lose it
                self._content(self._buffer)
                self._buffer = ""
            held = self._pending_space if not self._num_calls else self._pending_space.rstrip()
            if held:  # an answer's trailing space, or a separator no call followed
                self._out.append(OutputDelta(content=held))
            self._pending_space = ""
        return self._flush()

    def _drain(self, final: bool) -> None:
        while True:
            if self._open is not None:
                if not self._drain_open(final):
                    return
                continue
            if not self._buffer:
                return
            if self._at_start:
                if not self._drain_start(final):
                    return
                continue
            index = earliest_marker(self._buffer, self._parser.markers)
            if index == -1:
                index = len(self._buffer)
            if index > 0:
                self._content(self._buffer[:index])
                self._cut(index)
                continue
            if self._is_partial_marker():
                if not final:
                    return
                match: Match | Open | None = Match(len(self._buffer))
            else:
                match = self._parser.match_marker(self._buffer, final, self._context)
            if match is None or (isinstance(match, Match) and match.end == 0 and not match.calls):
                return
            self._take(match)
            if isinstance(match, Match) and match.restart:
                self._at_start = True

    def _is_partial_marker(self) -> bool:
        markers = self._parser.markers
        if any(self._buffer.startswith(marker) for marker in markers):
            return False
        return any(is_partial(self._buffer, marker) for marker in markers)

    def _drain_start(self, final: bool) -> bool:
        """Handle the start of the answer; False when more text is needed."""
        stripped = self._buffer.lstrip()
        if stripped != self._buffer:
            self._content(self._buffer[: len(self._buffer) - len(stripped)])
            self._cut(len(self._buffer) - len(stripped))
        if not stripped:
            return False
        match = self._parser.match_start(stripped, final, self._context)
        if match is None:
            return False
        self._at_start = False
        if isinstance(match, Open) or match.end or match.calls:
            self._take(match)
        return True

    def _drain_open(self, final: bool) -> bool:
        """Go on with the committed call; False when more text is needed."""
        call = self._open
        assert call is not None
        if call.json is not None:
            fragment, used = call.json.feed(self._buffer)
            self._cut(used)
            if call.json.state == OPEN:
                if not final:
                    self._arguments(call.index, fragment)
                    return False
                fragment += call.json.close()
            self._arguments(call.index, fragment)
            call.broken = call.json.state == BROKEN
            self._buffer = call.json.unread + self._buffer
            call.json = None
            return True
        rest = self._parser.match_rest(self._buffer, final, self._context, call.state, call.broken)
        if isinstance(rest, Rest) and rest.more is not None and rest.more == call.state:
            if not (rest.end or rest.calls or rest.arguments):
                rest = None  # no progress: wait for more text
        if rest is None:
            if not final:
                return False
            rest = Rest(0)  # the parser cannot decide at the end: what is left is read as plain text
        call.broken = False
        if isinstance(rest, Open):
            self._open = None
            self._take(rest)
            return True
        self._arguments(call.index, rest.arguments)
        content = self._buffer[: rest.content]
        self._cut(rest.end)
        if content:
            self._content(content)
        if rest.calls:
            self._calls(rest.calls)
        if rest.more is None:
            self._open = None
            self._after_call = True
        else:
            call.state = rest.more
        return True

    def _take(self, match: Match | Open) -> None:
        if isinstance(match, Open):
            self._cut(match.start)
            index = self._next_call_index()
            call_id = match.call_id or new_call_id()
            self._out.append(OutputDelta(tool_calls=[ToolCallDelta(index, call_id, match.name, match.arguments or "")]))
            json = JsonStream(verbatim=match.verbatim) if match.arguments is None else None
            self._open = _OpenCall(index, match.state, json)
            return
        region = self._buffer[: match.end]
        self._cut(match.end)
        if match.markup:
            return
        if not match.calls:
            self._content(region)
            return
        self._calls(match.calls)
        self._after_call = True

    def _calls(self, calls: Sequence[FoundCall]) -> None:
        """Calls decided whole: one delta each, with id, name and complete arguments."""
        pieces = [ToolCallDelta(self._next_call_index(), call.call_id or new_call_id(), call.name, call.arguments)
                  for call in calls]
        self._out.append(OutputDelta(tool_calls=pieces))

    def _next_call_index(self) -> int:
        """A new call starts: the whitespace held before it is dropped."""
        self._pending_space = ""
        self._num_calls += 1
        return self._num_calls - 1

    def _arguments(self, index: int, fragment: str) -> None:
        if fragment:
            self._out.append(OutputDelta(tool_calls=[ToolCallDelta(index, arguments=fragment)]))

    def _cut(self, size: int) -> None:
        """Drop the first ``size`` characters of the buffer (the scanner's saved states refer to the old text)."""
        if size:
            self._buffer = self._buffer[size:]
            self._context.scanner.reset()

    def _content(self, text: str) -> None:
        if self._holds_separator(text):
            return
        body = text.rstrip()
        if not body:
            self._pending_space += text
            return
        self._out.append(OutputDelta(content=self._pending_space + body))
        self._pending_space = text[len(body) :]
        self._after_call = False

    def _holds_separator(self, text: str) -> bool:
        """Right after a call, keep back space and at most one separator: dropped if a call follows."""
        separator = self._parser.separator
        if not separator or not self._after_call:
            return False
        held = (self._pending_space + text).strip()
        if held and held != separator and not is_partial(held, separator):
            return False
        self._pending_space += text
        return True

