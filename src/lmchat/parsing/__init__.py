"""Turn answer text into typed output: visible content, reasoning and tool calls, in one piece or streamed.

``OutputParser(reasoning_parser="think", tool_parser="hermes", tools=...)`` is the entry point; parsers are chosen
by name from two registries (:func:`get_tool_parser`, :func:`get_reasoning_parser`). Pure Python, no torch.
"""

from lmchat.parsing.pipeline import OutputParser, reasoning_opens_in, special_tokens_read
from lmchat.parsing.reasoning import get_reasoning_parser, reasoning_parser_names, register_reasoning_parser
from lmchat.parsing.tool_parsers import get_tool_parser, register_tool_parser, tool_parser_names
from lmchat.parsing.types import OutputDelta, ParsedOutput, ToolCall, ToolCallDelta, collect, new_call_id

__all__ = [
    "OutputDelta",
    "OutputParser",
    "ParsedOutput",
    "ToolCall",
    "ToolCallDelta",
    "collect",
    "get_reasoning_parser",
    "get_tool_parser",
    "new_call_id",
    "reasoning_opens_in",
    "reasoning_parser_names",
    "register_reasoning_parser",
    "register_tool_parser",
    "special_tokens_read",
    "tool_parser_names",
]
