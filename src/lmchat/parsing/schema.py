"""What the request's tools say about argument types, for formats that write arguments as bare strings (GLM-4.5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lmchat.parsing.scan import loads

ToolSchemas = dict[str, dict[str, Any]]
"""Function name -> its parameters' JSON-schema ``properties``."""


def tool_schemas(tools: Sequence[Mapping[str, Any]] | None) -> ToolSchemas:
    """Index OpenAI-style tools (``{"type": "function", "function": {...}}`` or the bare function) by name."""
    schemas: ToolSchemas = {}
    for tool in tools or ():
        if hasattr(tool, "model_dump"):
            tool = tool.model_dump()
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        schemas[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return schemas


def coerce_value(raw: str, schema: Any) -> Any:
    """A bare argument string as the declared type; without a declared type, as JSON when it parses, else text."""
    declared = schema.get("type") if isinstance(schema, Mapping) else None
    types = set(declared) if isinstance(declared, list) else {declared} if declared else set()
    if types == {"string"}:
        return raw
    value = loads(raw) if raw.strip() else None
    if value is None and raw.strip() != "null":
        return raw
    if types and not _fits(value, types):
        return raw
    return value


def _fits(value: Any, types: set[str]) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "null": lambda v: v is None,
    }
    return any(checks.get(name, lambda v: True)(value) for name in types)
