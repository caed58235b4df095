"""Which parsers split an answer into reasoning, content and tool calls, chosen once per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmchat.parsing import OutputDelta, OutputParser, reasoning_opens_in
from lmchat.templates.detect import detect_reasoning_parser, detect_tool_parser
from lmchat.templates.registry import ChatTemplate


@dataclass(frozen=True)
class ParsingPlan:
    """The parsers for one request's answers (``None``: that part is not parsed)."""

    reasoning_parser: str | None = None
    tool_parser: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    starts_in_reasoning: bool = False
    max_tool_calls: int | None = None  # parallel_tool_calls: false keeps the first call (as vLLM does)

    def new_parser(self) -> OutputParser | None:
        if self.reasoning_parser is None and self.tool_parser is None:
            return None
        parser = OutputParser(self.reasoning_parser, self.tool_parser, list(self.tools) or None,
                              self.starts_in_reasoning)
        if self.max_tool_calls is not None and self.tool_parser is not None:
            return FirstCalls(parser, self.max_tool_calls)
        return parser


class FirstCalls:
    """An output parser that passes on only the first ``limit`` tool calls of an answer."""

    def __init__(self, parser: OutputParser, limit: int) -> None:
        self._parser, self._limit = parser, limit

    def feed(self, delta: str) -> list[OutputDelta]:
        return self._keep(self._parser.feed(delta))

    def finish(self) -> list[OutputDelta]:
        return self._keep(self._parser.finish())

    def _keep(self, deltas: list[OutputDelta]) -> list[OutputDelta]:
        return [OutputDelta(d.content, d.reasoning, [c for c in d.tool_calls if c.index < self._limit])
                for d in deltas]


def plan_parsing(template: ChatTemplate, configured_tool_parser: str | None, tools: list[dict[str, Any]] | None,
                 prompt: str) -> ParsingPlan:
    reasoning = template.reasoning_parser or detect_reasoning_parser(template.source)
    tool_parser = None
    if tools:
        tool_parser = configured_tool_parser or template.tool_parser or detect_tool_parser(template.source)
    return ParsingPlan(reasoning, tool_parser, tuple(tools or ()), reasoning_opens_in(reasoning, prompt))
