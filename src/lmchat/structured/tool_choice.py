"""OpenAI's ``tool_choice`` and ``parallel_tool_calls``: which tools the prompt shows and, for a forced call, the
constraint that guarantees it and the parser that reads it back as ``tool_calls``.

As vLLM does it: ``required`` constrains the answer to a JSON list of calls, ``[{"name": ..., "arguments":
{...}}, ...]``, each entry one of the tools with arguments valid against its ``parameters`` schema (at least one
entry; exactly one with ``parallel_tool_calls: false``); a named function constrains the answer to that
function's arguments, and the whole answer is read as one call of it. The model's own tool-call markup is not used
for forced calls, so they work with every template and tool parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmchat.errors import InvalidRequestError
from lmchat.structured.constraint import Constraint

REQUIRED_PARSER = "tool_choice_required"
NAMED_PARSER = "tool_choice_named"
_NO_PARAMETERS = {"type": "object", "properties": {}}
_DEFS_KEYS = ("$defs", "definitions")


@dataclass(frozen=True)
class ToolChoice:
    """What ``tool_choice`` decides: the tools the template renders, and for a forced call its constraint, the
    parser that reads the answer and the tools it reads it against."""

    prompt_tools: list[dict[str, Any]] | None
    constraint: Constraint | None = None
    parser: str | None = None
    parser_tools: tuple[dict[str, Any], ...] = ()
    parallel_tool_calls: bool = True


def resolve_tool_choice(tools: list[dict[str, Any]] | None, tool_choice: Any,
                        parallel_tool_calls: Any = None) -> ToolChoice:
    """``tools``: normalised OpenAI function tools (``{"type": "function", "function": {...}}``) or None."""
    if parallel_tool_calls not in (None, True, False):
        raise InvalidRequestError("parallel_tool_calls must be true or false.", param="parallel_tool_calls")
    parallel = parallel_tool_calls is not False
    if tool_choice in (None, "auto"):
        return ToolChoice(tools, parallel_tool_calls=parallel)
    if tool_choice == "none":
        return ToolChoice(None)
    named = _named(tool_choice)
    if tool_choice != "required" and named is None:
        raise InvalidRequestError(
            "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}.",
            param="tool_choice")
    if not tools:
        raise InvalidRequestError("tool_choice asks for a tool call but no tools were given.", param="tool_choice")
    if named is None:
        schema = calls_schema(tools, parallel)
        return ToolChoice(tools, Constraint.from_schema(schema, param="tool_choice"), REQUIRED_PARSER, tuple(tools),
                          parallel)
    tool = next((tool for tool in tools if tool["function"]["name"] == named), None)
    if tool is None:
        names = ", ".join(repr(tool["function"]["name"]) for tool in tools)
        raise InvalidRequestError(f"tool_choice names the function {named!r}, which is not among the tools "
                                  f"({names}).", param="tool_choice")
    constraint = Constraint.from_schema(tool["function"].get("parameters") or _NO_PARAMETERS, param="tool_choice")
    return ToolChoice(tools, constraint, NAMED_PARSER, (tool,), False)


def _named(tool_choice: Any) -> str | None:
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") != "function":
        return None
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("tool_choice of type function needs {'function': {'name': ...}}.",
                                  param="tool_choice.function.name")
    return name


def calls_schema(tools: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """The JSON schema of a list of calls of ``tools`` (definitions lifted to the root, where refs point)."""
    definitions: dict[str, dict[str, Any]] = {}
    entries = []
    for tool in tools:
        function = tool["function"]
        parameters = dict(function.get("parameters") or _NO_PARAMETERS)
        for key in _DEFS_KEYS:
            for name, definition in (parameters.pop(key, None) or {}).items():
                if definitions.setdefault(f"{key}/{name}", definition) != definition:
                    raise InvalidRequestError(
                        f"Two tools define {key} '{name}' differently; a forced call needs one definition per name.",
                        param="tools")
        entries.append({"type": "object",
                        "properties": {"name": {"type": "string", "enum": [function["name"]]},
                                       "arguments": parameters},
                        "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = {"type": "array", "minItems": 1,
                              "items": entries[0] if len(entries) == 1 else {"anyOf": entries}}
    if not parallel:
        schema["maxItems"] = 1
    for path, definition in definitions.items():
        key, name = path.split("/", 1)
        schema.setdefault(key, {})[name] = definition
    return schema
