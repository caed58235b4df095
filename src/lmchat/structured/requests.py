"""Every request form of structured output, turned into one :class:`Constraint` (or none).

The forms, by the names their clients send: OpenAI's ``response_format`` (``text``, ``json_object``,
``json_schema`` with ``strict``; vLLM's ``structural_tag``; llama.cpp's ``json_object`` with a ``schema``), vLLM's
``structured_outputs`` and its older ``guided_json``/``guided_regex``/``guided_choice``/``guided_grammar``
(with ``guided_decoding_backend``, ``guided_whitespace_pattern``), llama.cpp's ``grammar`` and ``json_schema``.
``tool_choice`` is read by :mod:`lmchat.structured.tool_choice`. A request may ask for one constraint; two are an
error that names both, and so is every malformed or unknown part.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lmchat.errors import InvalidRequestError, UnsupportedError
from lmchat.structured.constraint import Constraint

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
OPTION_FIELDS = ("guided_decoding_backend", "guided_whitespace_pattern")
REQUEST_FIELDS = ("response_format", "structured_outputs", *GUIDED_FIELDS, *OPTION_FIELDS, "grammar", "json_schema")
"""The generation options :func:`pop_constraint` takes (the facade pops them before the sampling options)."""

BACKEND_NAMES = ("auto", "guidance", "llguidance", "xgrammar")
"""``guided_decoding_backend`` values accepted: lmchat has one grammar library, chosen in structured/backend.py."""

_STRUCTURED_OUTPUTS_KEYS = {"json", "regex", "choice", "grammar", "json_object", "structural_tag",
                            "disable_any_whitespace", "disable_additional_properties", "whitespace_pattern",
                            "disable_fallback", "backend"}


def pop_constraint(options: dict[str, Any]) -> Constraint | None:
    """Take the structured-output fields out of ``options``; the one constraint they ask for, if any."""
    given = {name: options.pop(name) for name in REQUEST_FIELDS if name in options}
    given = {name: value for name, value in given.items() if value is not None}
    _check_backend(given.get("guided_decoding_backend"))
    found = [(name, constraint) for name, constraint in (_read(name, value) for name, value in given.items()
                                                         if name not in OPTION_FIELDS) if constraint is not None]
    if len(found) > 1:
        names = " and ".join(name for name, _ in found)
        raise InvalidRequestError(f"The request asks for two output constraints ({names}); send one of them.",
                                  param=found[1][0])
    if not found:
        return None
    pattern = _optional_text(given.get("guided_whitespace_pattern"), "guided_whitespace_pattern")
    return found[0][1].model_copy(update={"whitespace_pattern": pattern}) if pattern else found[0][1]


def _read(name: str, value: Any) -> tuple[str, Constraint | None]:
    if name == "response_format":
        return name, from_response_format(value)
    if name == "structured_outputs":
        return name, from_structured_outputs(value)
    if name == "grammar":
        return name, grammar_constraint(_text(value, name), param=name)
    if name == "json_schema":
        return name, Constraint.from_schema(_schema(value, name), param=name)
    return name, _guided(name, value)


def _check_backend(backend: Any) -> None:
    if backend is not None and (not isinstance(backend, str) or backend.split(":")[0] not in BACKEND_NAMES):
        raise UnsupportedError(
            f"guided_decoding_backend {backend!r} is not available; lmchat constrains decoding with its own grammar "
            f"library (accepted: {', '.join(BACKEND_NAMES)}), or leave it out.", param="guided_decoding_backend")


def from_response_format(value: Any) -> Constraint | None:
    """OpenAI's ``response_format`` (and vLLM's / llama.cpp's extensions of it)."""
    param = "response_format"
    if hasattr(value, "model_dump"):
        value = value.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise InvalidRequestError("response_format must be an object with a type: 'text', 'json_object' or "
                                  "'json_schema'.", param=param)
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":  # llama.cpp also takes a schema here
        schema = value.get("schema")
        if schema is not None:
            return Constraint.from_schema(_schema(schema, "response_format.schema"), param=param)
        return Constraint(kind="json_object", param=param)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidRequestError("response_format of type json_schema needs a json_schema object "
                                      "({'name': ..., 'schema': {...}}).", param="response_format.json_schema")
        schema = spec.get("schema", spec.get("schema_"))
        if schema is None:
            return Constraint(kind="json_object", param=param)
        return Constraint.from_schema(_schema(schema, "response_format.json_schema.schema"), param=param)
    if kind == "structural_tag":
        return Constraint(kind="structural_tag", structural_tag=json.dumps(dict(value)), param=param)
    raise InvalidRequestError(
        f"response_format type {kind!r} is not one of 'text', 'json_object', 'json_schema', 'structural_tag'.",
        param="response_format.type")


def from_structured_outputs(value: Any) -> Constraint | None:
    """vLLM's ``structured_outputs``: one of json, regex, choice, grammar, json_object, structural_tag."""
    param = "structured_outputs"
    if hasattr(value, "__dataclass_fields__"):  # vllm.sampling_params.StructuredOutputsParams itself
        value = {name: getattr(value, name) for name in value.__dataclass_fields__ if not name.startswith("_")}
    if not isinstance(value, Mapping):
        raise InvalidRequestError("structured_outputs must be an object (json, regex, choice, grammar, "
                                  "json_object or structural_tag).", param=param)
    unknown = sorted(set(value) - _STRUCTURED_OUTPUTS_KEYS)
    if unknown:
        raise InvalidRequestError(f"structured_outputs has unknown field(s) {', '.join(unknown)}.",
                                  param=f"{param}.{unknown[0]}")
    kinds = [key for key in ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
             if value.get(key) is not None]
    if len(kinds) != 1:
        raise InvalidRequestError(
            f"structured_outputs needs exactly one of json, regex, choice, grammar, json_object, structural_tag "
            f"(got {', '.join(kinds) or 'none'}).", param=param)
    options = {"whitespace_flexible": not value.get("disable_any_whitespace", False),
               "whitespace_pattern": _optional_text(value.get("whitespace_pattern"), f"{param}.whitespace_pattern"),
               "additional_properties": not value.get("disable_additional_properties", False), "param": param}
    key = kinds[0]
    field = f"{param}.{key}"
    if key == "json":
        return Constraint.from_schema(_schema(value[key], field), **options)
    if key == "json_object":
        if value[key] is not True:
            raise InvalidRequestError("structured_outputs.json_object must be true when given.", param=field)
        return Constraint(kind="json_object", **options)
    if key == "structural_tag":
        tag = value[key] if isinstance(value[key], str) else json.dumps(value[key])
        return Constraint(kind="structural_tag", structural_tag=tag, **options)
    return _simple(key, value[key], field, options)


def _guided(name: str, value: Any) -> Constraint:
    """vLLM's older ``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar``."""
    if name == "guided_json":
        return Constraint.from_schema(_schema(value, name), param=name)
    return _simple(name.removeprefix("guided_"), value, name, {"param": name})


def _simple(key: str, value: Any, field: str, options: dict[str, Any]) -> Constraint:
    if key == "regex":
        return Constraint(kind="regex", regex=_text(value, field), **options)
    if key == "choice":
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value):
            raise InvalidRequestError(f"{field} must be a non-empty list of non-empty strings.", param=field)
        return Constraint(kind="choice", choices=tuple(value), **options)
    return grammar_constraint(_text(value, field), **options)


def grammar_constraint(grammar: str, **options: Any) -> Constraint:
    """A grammar, GBNF when it writes rules with ``::=`` (llama.cpp's and vLLM's form), else Lark."""
    syntax = "gbnf" if "::=" in grammar else "lark"
    return Constraint(kind="grammar", grammar=grammar, grammar_syntax=syntax, **options)


def _optional_text(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{field} must be a non-empty string.", param=field)
    return value


def _schema(value: Any, field: str) -> dict[str, Any] | bool:
    """A JSON schema given as an object, as JSON text, or as a pydantic model class."""
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        value = value.model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{field} is not valid JSON: {exc}.", param=field) from None
    if isinstance(value, bool):
        value = {} if value else {"not": {}}
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{field} must be a JSON schema object.", param=field)
    return dict(value)
