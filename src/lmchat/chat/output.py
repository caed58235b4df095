"""Which parsers split an answer into reasoning, content and tool calls, chosen once per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.parsing import OutputParser, reasoning_opens_in
from lmchat.templates.detect import detect_reasoning_parser, detect_tool_parser
from lmchat.templates.registry import ChatTemplate


@dataclass(frozen=True)
class ParsingPlan:
    """The parsers for one request's answers (``None``: that part is not parsed)."""

    reasoning_parser: str | None = None
    tool_parser: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    starts_in_reasoning: bool = False

    def new_parser(self) -> OutputParser | None:
        if self.reasoning_parser is None and self.tool_parser is None:
            return None
        return OutputParser(self.reasoning_parser, self.tool_parser, list(self.tools) or None,
                            self.starts_in_reasoning)


def plan_parsing(template: ChatTemplate, configured_tool_parser: str | None, tools: list[dict[str, Any]] | None,
                 prompt: str) -> ParsingPlan:
    """The parsers of one request: the configured tool parser, else the named template's spec, else the markers
    of the model's own template."""
    reasoning = template.reasoning_parser if template.named else detect_reasoning_parser(template.source)
    tool_parser = None
    if tools:
        own = template.tool_parser if template.named else detect_tool_parser(template.source)
        tool_parser = configured_tool_parser or own
    return ParsingPlan(reasoning, tool_parser, tuple(tools or ()), reasoning_opens_in(reasoning, prompt))


def apply_tool_choice(tools: list[dict[str, Any]] | None, tool_choice: Any, engine_name: str):
    """OpenAI's ``tool_choice``: ``auto`` (default) and ``none`` are honoured; a forced call is refused, since no
    engine here constrains decoding to guarantee it."""
    if tool_choice in (None, "auto"):
        return tools
    if tool_choice == "none":
        return None
    named = isinstance(tool_choice, dict) and tool_choice.get("type") == "function"
    if tool_choice == "required" or named:
        if not tools:
            raise InvalidRequestError("tool_choice asks for a tool call but no tools were given.", param="tool_choice")
        raise UnsupportedError(
            f"tool_choice={tool_choice!r} is not supported yet: it needs constrained decoding to guarantee a call, "
            f"which the {engine_name} engine does not offer; use 'auto' (the model decides) or 'none'.",
            param="tool_choice",
        )
    raise InvalidRequestError(
        "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}.",
        param="tool_choice",
    )
