"""Where the constraint of a reasoning model's answer starts: after its reasoning, read from the request's
reasoning parser (the one the facade's parsing plan chose) and the rendered prompt."""

from __future__ import annotations

from lmchat.parsing import get_reasoning_parser
from lmchat.structured.constraint import ReasoningGate

HARMONY_FINAL = "<|channel|>final<|message|>"
"""gpt-oss: the header of the final answer; everything before it (analysis, headers) is free."""


def reasoning_gate(reasoning_parser: str | None, prompt: str, starts_in_reasoning: bool) -> ReasoningGate | None:
    """None when the constraint applies from the answer's first token."""
    if reasoning_parser is None:
        return None
    parser = get_reasoning_parser(reasoning_parser)
    if not hasattr(parser, "end_tags"):  # harmony channels: the answer always starts with a header
        return ReasoningGate(end_markers=(HARMONY_FINAL,), in_reasoning=True)
    ends = parser.end_tags()
    if not starts_in_reasoning and prompt.rstrip().endswith(ends):
        return None  # the prompt closed the reasoning itself (Qwen3 with enable_thinking off)
    return ReasoningGate(end_markers=ends, start_markers=parser.start_tags(), in_reasoning=starts_in_reasoning)
