"""The tool-parser contract and the one streaming scanner all parsers share.

A parser only describes its syntax: the ``markers`` that open a call anywhere in the answer, and two matchers that
look at the text from a candidate position and answer "need more text" (None) or a :class:`Match`. The scanner
(:class:`ToolStream`) does the rest, the same way for a one-piece answer and for a stream, so both always agree:

* text before a candidate is content; text that could be the start of a marker is held back until it is decided,
  so no partial markup ever reaches the content;
* whitespace right before a call, between calls and at the end of an answer with calls is dropped; an answer
  without calls comes out unchanged;
* a call is sent as one :class:`ToolCallDelta` (id, name and complete arguments) once its text is complete and
  valid, so a malformed call can still fall back to plain content. Arguments are therefore not streamed piecemeal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lmchat.parsing.scan import BracketScanner, FoundCall, earliest_marker, is_partial
from lmchat.parsing.schema import ToolSchemas, tool_schemas
from lmchat.parsing.types import OutputDelta, ParsedOutput, ToolCallDelta, collect, merge_deltas, new_call_id


@dataclass(frozen=True, slots=True)
class Match:
    """A decided region: ``text[:end]`` holds ``calls``, or is plain content when ``calls`` is empty."""

    end: int
    calls: tuple[FoundCall, ...] = ()


@dataclass(frozen=True, slots=True)
class MatchContext:
    """What matchers may use besides the text: the request's tool schemas and a resumable bracket scanner."""

    tools: ToolSchemas
    scanner: BracketScanner

    def find_closing(self, text: str, start: int, quotes: str = '"') -> int | None:
        """:func:`lmchat.parsing.scan.find_closing`, resumed from the previous call on this growing text."""
        return self.scanner.find_closing(text, start, quotes)


NO_START = Match(0)
"""What :meth:`ToolParser.match_start` answers when the answer does not open with a marker-less call."""


class ToolParser:
    """Base class: subclasses set ``name`` and ``markers`` and implement the matchers they need."""

    name: ClassVar[str] = ""
    markers: ClassVar[tuple[str, ...]] = ()

    def parse(self, text: str, tools: Sequence[Mapping[str, Any]] | None = None) -> ParsedOutput:
        """Split a whole answer into content and tool calls (never raises for model output)."""
        stream = self.start_stream(tools)
        return collect([*stream.feed(text), *stream.finish()])

    def start_stream(self, tools: Sequence[Mapping[str, Any]] | None = None) -> ToolStream:
        """A stream for one answer: ``feed`` each text delta, then ``finish``."""
        return ToolStream(self, MatchContext(tool_schemas(tools), BracketScanner()))

    def match_start(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        """A call written without a marker at the very start of the answer (``text`` starts at its first
        non-space character). :data:`NO_START` when there is none."""
        return NO_START

    def match_marker(self, text: str, final: bool, ctx: MatchContext) -> Match | None:
        """The region opened by the full marker ``text`` starts with. ``final``: the answer ends with ``text``,
        so decide now. A content answer must consume at least one character."""
        return Match(1)


class ToolStream:
    """Incremental splitting of one answer; see the module docstring for the rules."""

    def __init__(self, parser: ToolParser, context: MatchContext) -> None:
        self._parser = parser
        self._context = context
        self._buffer = ""
        self._at_start = True
        self._pending_space = ""
        self._num_calls = 0
        self._finished = False
        self._out: list[OutputDelta] = []

    def feed(self, delta: str) -> list[OutputDelta]:
        if self._finished:
            raise RuntimeError("feed() after finish(): start a new stream for a new answer")
        self._buffer += delta
        self._drain(final=False)
        return self._flush()

    def finish(self) -> list[OutputDelta]:
        """Decide everything still held back; the answer is complete."""
        if not self._finished:
            self._finished = True
            self._drain(final=True)
            if self._buffer:  # a matcher could not decide: keep the text rather than lose it
                self._content(self._buffer)
                self._buffer = ""
            if not self._num_calls and self._pending_space:
                self._out.append(OutputDelta(content=self._pending_space))
            self._pending_space = ""
        return self._flush()

    def _drain(self, final: bool) -> None:
        while self._buffer:
            if self._at_start:
                if not self._drain_start(final):
                    return
                continue
            index = earliest_marker(self._buffer, self._parser.markers)
            if index == -1:
                index = len(self._buffer)
            if index > 0:
                self._content(self._buffer[:index])
                self._buffer = self._buffer[index:]
                self._context.scanner.reset()
                continue
            if self._is_partial_marker():
                if not final:
                    return
                match: Match | None = Match(len(self._buffer))
            else:
                match = self._parser.match_marker(self._buffer, final, self._context)
            if match is None or (match.end == 0 and not match.calls):
                return
            self._take(match)

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
            self._buffer = stripped
            self._context.scanner.reset()
        if not stripped:
            return False
        match = self._parser.match_start(stripped, final, self._context)
        if match is None:
            return False
        self._at_start = False
        if match.end or match.calls:
            self._take(match)
        return True

    def _take(self, match: Match) -> None:
        region, self._buffer = self._buffer[: match.end], self._buffer[match.end :]
        self._context.scanner.reset()
        if not match.calls:
            self._content(region)
            return
        self._pending_space = ""
        pieces = []
        for call in match.calls:
            call_id = call.call_id or new_call_id()
            pieces.append(ToolCallDelta(self._num_calls, call_id, call.name, call.arguments))
            self._num_calls += 1
        self._out.append(OutputDelta(tool_calls=pieces))

    def _content(self, text: str) -> None:
        body = text.rstrip()
        if not body:
            self._pending_space += text
            return
        self._out.append(OutputDelta(content=self._pending_space + body))
        self._pending_space = text[len(body) :]

    def _flush(self) -> list[OutputDelta]:
        out, self._out = merge_deltas(self._out), []
        return out
