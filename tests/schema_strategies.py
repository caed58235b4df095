"""Hypothesis strategies from the server's published OpenAPI document (no tests here).

:func:`valid_values` turns a JSON Schema (as pydantic writes it: ``$ref``, ``anyOf``/``oneOf`` with discriminators,
``const``, ``enum``, numeric bounds, ``additionalProperties``) into a strategy of values it accepts, built once per
schema so that drawing is cheap. :func:`invalid_bodies` breaks a valid body in one place the schema forbids (a
wrong type, an unknown or missing key, a number out of range or not finite, an unknown union tag, a lone
surrogate, nesting too deep), the inputs a client gets wrong.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

TEXT = st.text(max_size=12)  # any Unicode but lone surrogates (the default alphabet), drawn without a filter
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False,
                                                                                  allow_infinity=False) | TEXT
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner,
                                                                                                  max_size=3),
                        max_leaves=6)


class SchemaStrategies:
    """Strategies for the schemas of one OpenAPI document (``components.schemas``), cached by reference."""

    def __init__(self, document: dict[str, Any], overrides: dict[str, st.SearchStrategy] | None = None) -> None:
        self.components = document.get("components", {}).get("schemas", {})
        self.overrides = overrides or {}  # property name -> strategy (e.g. "model": the served names)
        self._cache: dict[str, st.SearchStrategy] = {}

    def valid_values(self, schema: dict[str, Any]) -> st.SearchStrategy:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self._cache:
                self._cache[name] = st.deferred(lambda: self.valid_values(self.components[name]))
            return self._cache[name]
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return st.one_of([self.valid_values(option) for option in schema[key]])
        kind = schema.get("type")
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            items = self.valid_values(schema.get("items", {}))
            return st.lists(items, min_size=schema.get("minItems", 0), max_size=max(schema.get("minItems", 0), 3))
        if kind == "string":
            return st.text(min_size=schema.get("minLength", 0),
                           max_size=max(schema.get("minLength", 0), 12))
        if kind == "integer":
            low, high = _bounds(schema, integer=True)
            return st.integers(low, high)
        if kind == "number":
            low, high = _bounds(schema, integer=False)
            return st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_min="exclusiveMinimum" in schema,
                             exclude_max="exclusiveMaximum" in schema)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        return ANY_JSON

    def _object(self, schema: dict[str, Any]) -> st.SearchStrategy:
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fields = {name: self.overrides.get(name, self.valid_values(spec)) for name, spec in properties.items()}
        optional = [name for name in properties if name not in required]

        @st.composite
        def build(draw: Any) -> dict[str, Any]:
            value = {name: draw(fields[name]) for name in properties if name in required}
            for name in draw(st.lists(st.sampled_from(optional), unique=True, max_size=4)) if optional else ():
                value[name] = draw(fields[name])
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) or (extra is True and not properties):
                value.update(draw(st.dictionaries(TEXT, ANY_JSON if extra is True else self.valid_values(extra),
                                                  max_size=2)))
            return value

        return build()


def _bounds(schema: dict[str, Any], integer: bool) -> tuple[Any, Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if integer:
        low = None if low is None else math.floor(low) + (1 if "exclusiveMinimum" in schema else 0)
        high = None if high is None else math.ceil(high) - (1 if "exclusiveMaximum" in schema else 0)
        return (low if low is not None else -(2**70)), (high if high is not None else 2**70)
    return low, high


# --- breaking a valid body --------------------------------------------------------------------------------
WRONG_VALUES = st.sampled_from([
    "8", True, 1.5, -1, 10**30, [], {}, None, {"type": {}}, ["user"], "a\ud800", float("inf"), float("nan"),
])


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every place (path) in a JSON value."""
    places = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            places += _places(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            places += _places(child, (*path, index))
    return places


def _set(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = _set(value[head], rest, new)
    return copy


def _delete(value: Any, path: tuple) -> Any:
    container = _get(value, path[:-1])
    copy = dict(container) if isinstance(container, dict) else list(container)
    del copy[path[-1]]
    return _set(value, path[:-1], copy)


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


@st.composite
def invalid_bodies(draw: Any, valid: st.SearchStrategy) -> Any:
    """A valid body broken in one place."""
    body = draw(valid)
    places = _places(body)
    path = draw(st.sampled_from(places))
    how = draw(st.sampled_from(["replace", "extra", "delete", "nest", "not_an_object"]))
    if how == "not_an_object" and not path:
        return draw(st.sampled_from([[], "text", 3, None, [body]]))
    if how == "delete" and path:
        return _delete(body, path)
    if how == "extra":
        target = path if isinstance(_get(body, path), dict) else ()
        extra = dict(_get(body, target))
        extra[draw(st.sampled_from(["unknown_field", "functions", "x"]))] = draw(JSON_SCALARS)
        return _set(body, target, extra)
    if how == "nest":
        return _set(body, path, _nested(draw(st.integers(40, 250))))
    return _set(body, path, draw(WRONG_VALUES))


def _get(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value
