"""The parser the facade uses: reasoning first, then tool calls in what remains visible.

One :class:`OutputParser` parses one answer: either :meth:`OutputParser.parse` on the whole text, or
:meth:`OutputParser.feed` for each text delta and :meth:`OutputParser.finish` at the end. Both give the same result
(:func:`lmchat.parsing.types.collect` of the streamed deltas equals ``parse``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmchat.errors import ConfigError
from lmchat.parsing.reasoning import get_reasoning_parser
from lmchat.parsing.stream import TextStream
from lmchat.parsing.tool_parsers import get_tool_parser
from lmchat.parsing.tool_parsers.base import ToolStream
from lmchat.parsing.types import OutputDelta, ParsedOutput, collect, merge_deltas


class _Streams:
    """The reasoning stream and tool stream of one answer (either may be absent)."""

    def __init__(self, reasoning: TextStream | None, tools: ToolStream | None) -> None:
        self.reasoning = reasoning
        self.tools = tools

    def feed(self, text: str) -> list[OutputDelta]:
        split = self.reasoning.feed(text) if self.reasoning else [OutputDelta(content=text)]
        return self._route(split)

    def finish(self) -> list[OutputDelta]:
        deltas = self._route(self.reasoning.finish()) if self.reasoning else []
        if self.tools is not None:
            deltas += self.tools.finish()
        return merge_deltas(deltas)

    def _route(self, deltas: list[OutputDelta]) -> list[OutputDelta]:
        """Pass reasoning through; send content through the tool parser when there is one."""
        out: list[OutputDelta] = []
        for delta in deltas:
            if delta.reasoning:
                out.append(OutputDelta(reasoning=delta.reasoning))
            if delta.content:
                out.extend(self.tools.feed(delta.content) if self.tools else [OutputDelta(content=delta.content)])
        return merge_deltas(out)


def special_tokens_read(reasoning_parser: str | None, tool_parser: str | None) -> tuple[str, ...]:
    """The special tokens the named parsers read (their ``special_tokens``), which the engine must keep in the
    answer's text: gpt-oss's harmony tokens, Kimi-K2's tool-call tokens, ..."""
    classes = [get_reasoning_parser(reasoning_parser) if reasoning_parser else None,
               get_tool_parser(tool_parser) if tool_parser else None]
    tokens = [token for cls in classes if cls is not None for token in getattr(cls, "special_tokens", ())]
    return tuple(dict.fromkeys(tokens))


def reasoning_opens_in(reasoning_parser: str | None, prompt: str) -> bool:
    """Whether the generation prompt left the named parser's reasoning block open (the answer starts in it)."""
    return reasoning_parser is not None and get_reasoning_parser(reasoning_parser).opens_in(prompt)


class OutputParser:
    """Split an answer into reasoning, content and tool calls with parsers chosen by name (None: not parsed)."""

    def __init__(
        self,
        reasoning_parser: str | None = None,
        tool_parser: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        starts_in_reasoning: bool = False,
    ) -> None:
        if starts_in_reasoning and reasoning_parser is None:
            raise ConfigError(
                "starts_in_reasoning=True needs a reasoning parser (e.g. reasoning_parser='think').",
                param="reasoning_parser",
            )
        self._reasoning = get_reasoning_parser(reasoning_parser)() if reasoning_parser else None
        self._tool_parser = get_tool_parser(tool_parser)() if tool_parser else None
        self._tools = list(tools) if tools else None
        self._starts_in_reasoning = starts_in_reasoning
        self._streams = self._new_streams()

    def parse(self, text: str) -> ParsedOutput:
        """The whole answer at once (independent of any stream in progress)."""
        streams = self._new_streams()
        return collect([*streams.feed(text), *streams.finish()])

    def feed(self, delta: str) -> list[OutputDelta]:
        """Deltas ready after this piece of answer text (possibly none: text that may be markup is held back)."""
        return self._streams.feed(delta)

    def finish(self) -> list[OutputDelta]:
        """Everything still held back, decided now that the answer is complete."""
        return self._streams.finish()

    def _new_streams(self) -> _Streams:
        reasoning = None
        if self._reasoning is not None:
            ends = self._tool_parser.ends_reasoning if self._tool_parser is not None else ()
            reasoning = self._reasoning.start_stream(starts_in_reasoning=self._starts_in_reasoning, ends=ends)
        tools = self._tool_parser.start_stream(self._tools) if self._tool_parser else None
        return _Streams(reasoning, tools)
