"""What the request's tools say about argument types, for formats that write arguments as bare strings (GLM-4.5)."""

from __future__ import annotations

import ast
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
    """A bare argument string as the declared type; without a declared type, as JSON when it parses, else text.

    The declared type is the schema's ``type`` (a name or a list) or the types of its ``anyOf``/``oneOf``
    alternatives (Pydantic's ``Optional[T]``); when the first non-null one is ``string`` the text is kept as is.
    Objects and arrays written as Python literals, and ``True``/``False``, are read too.
    """
    types = declared_types(schema)
    if types[:1] == ["string"]:
        return raw
    text = raw.strip()
    value = loads(text) if text else None
    if value is None and text != "null":
        value = _lenient(text, types)
        if value is None:
            return raw
    if types and not _fits(value, set(types)):
        return raw
    return value


def declared_types(schema: Any) -> list[str]:
    """The JSON-schema type names ``schema`` allows, in order, ``null`` last (``float`` read as ``number``)."""
    if not isinstance(schema, Mapping):
        return []
    declared = schema.get("type")
    names = list(declared) if isinstance(declared, list) else [declared] if isinstance(declared, str) else []
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            names += declared_types(option)
    names = ["number" if name == "float" else name for name in names if isinstance(name, str)]
    unique = list(dict.fromkeys(names))
    return [name for name in unique if name != "null"] + (["null"] if "null" in unique else [])


def _lenient(text: str, types: list[str]) -> Any:
    """What a model writes for a declared type in a form JSON does not read: ``True``, ``{'a': 1}``."""
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if {"object", "array"} & set(types) and text[:1] in "[{":
        try:
            return ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return None


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
