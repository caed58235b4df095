"""Checks every caller's input passes before any work: nesting depth and text that no tokenizer can encode.

JSON values from a client (messages, tools, chat-template arguments) reach recursive code (deep copies, Jinja,
JSON serialisers); nesting deeper than :data:`MAX_NESTING` is refused here instead of ending in a RecursionError.
A string with a lone UTF-16 surrogate (``"a\\ud800"``, valid JSON) cannot be encoded as UTF-8, so no tokenizer
takes it and no answer could be sent back; it is refused here too. The walk is iterative and linear in the size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lmchat.errors import InvalidRequestError

MAX_NESTING = 64  # containers inside containers; real tool schemas and messages stay far below
_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN_PARTS = 4  # a nesting error names the first parts of the path (the parameter, not its thousandth level)


def check_input(value: Any, param: str, max_depth: int = MAX_NESTING) -> None:
    """Raise :class:`InvalidRequestError` naming where ``value`` nests deeper than ``max_depth`` containers or
    holds a lone surrogate (in a string or a key); ``param`` is the value's name (``messages``, ``tools``, ...)."""
    stack: list[tuple[Any, int, tuple]] = [(value, 0, (param, ()))]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
            continue
        if isinstance(item, Mapping):
            children = item.items()
        elif isinstance(item, (list, tuple)):
            children = enumerate(item)
        else:
            continue
        if depth >= max_depth:
            where = format_path(path, limit=_SHOWN_PARTS)
            raise InvalidRequestError(
                f"{where} is nested more than {max_depth} levels deep; flatten it.", param=where)
        for key, child in children:
            if isinstance(key, str):
                _check_text(key, path)
            stack.append((child, depth + 1, (key, path)))


def _check_text(text: str, path: tuple) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        where = format_path(path)
        raise InvalidRequestError(
            f"{where} holds a lone UTF-16 surrogate (such as \\ud800), which is not text; send valid Unicode.",
            param=where,
        )


def format_path(path: tuple, limit: int | None = None) -> str:
    """``messages[0].content`` from the linked path ``(key, (parent key, (...)))``."""
    parts = []
    while path:
        parts.append(path[0])
        path = path[1]
    parts.reverse()
    if limit is not None:
        parts = parts[:limit]
    text = str(parts[0])
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if str(part).isidentifier() else f"[{part!r}]")
    return text
