"""Which parsers split an answer into reasoning, content and tool calls, chosen once per request, and the special
tokens the engine must keep in the answer's text for them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lmchat.parsing import OutputDelta, OutputParser, reasoning_opens_in, special_tokens_read
from lmchat.templates.detect import detect_reasoning_parser, detect_tool_parser
from lmchat.templates.registry import ChatTemplate
from lmchat.templates.tool_fallback import FALLBACK_TOOL_PARSER

logger = logging.getLogger("lmchat.chat")


@dataclass(frozen=True)
class ParsingPlan:
    """The parsers for one request's answers (``None``: that part is not parsed)."""

    reasoning_parser: str | None = None
    tool_parser: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    starts_in_reasoning: bool = False
    max_tool_calls: int | None = None  # parallel_tool_calls: false keeps the first call (as vLLM does)
    keep_special_tokens: tuple[str, ...] = ()
    """Special tokens the parsers read: every engine keeps them in the decoded text (``GenerationRequest``), while
    the other special tokens are still dropped; the parsers consume them, so the visible content has none."""

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
                 prompt: str, tool_fallback: bool = False, skip_special_tokens: bool | None = None) -> ParsingPlan:
    """The parsers of one request: the configured tool parser, else the named template's spec, else the markers
    of the model's own template. ``tool_fallback``: the template ignored the tools, which LLaMA-Factory's default
    tool prompt described (templates/tool_fallback.py), so its ``default`` parser reads the calls.
    ``skip_special_tokens``: the value the user set, None when not set."""
    reasoning = template.reasoning_parser if template.named else detect_reasoning_parser(template.source)
    tool_parser = None
    if tools and tool_fallback:
        tool_parser = FALLBACK_TOOL_PARSER
    elif tools:
        own = template.tool_parser if template.named else detect_tool_parser(template.source)
        tool_parser = configured_tool_parser or own
    keep = _kept_special_tokens(reasoning, tool_parser, skip_special_tokens)
    return ParsingPlan(reasoning, tool_parser, tuple(tools or ()), reasoning_opens_in(reasoning, prompt),
                       keep_special_tokens=keep)


_warned: set[tuple[str | None, str | None]] = set()


def _kept_special_tokens(reasoning: str | None, tool_parser: str | None, skip: bool | None) -> tuple[str, ...]:
    """The parsers' special tokens, unless the user set skip_special_tokens (false keeps every special token; an
    explicit true is honoured, and said once, since the parsers then cannot see their markup)."""
    needed = special_tokens_read(reasoning, tool_parser)
    if skip is None:
        return needed
    if skip and needed and (reasoning, tool_parser) not in _warned:
        _warned.add((reasoning, tool_parser))
        parsers = " and ".join(f"the {name} parser" for name in (reasoning, tool_parser) if name)
        logger.warning(
            "skip_special_tokens is set to true, so the engine drops the special tokens %s reads (%s): those tool "
            "calls or that reasoning will not be parsed. Leave skip_special_tokens unset to keep just those tokens.",
            parsers, " ".join(needed))
    return ()

