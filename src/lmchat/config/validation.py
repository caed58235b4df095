"""Turn pydantic validation errors into one clear lmchat error."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import ValidationError

from lmchat.errors import LmchatError, unknown_name_message

SETTINGS_HELP = "Every setting: lmchat --help-config (or docs/configuration.md)."


def explain(exc: ValidationError, *, kind: str, valid_names: Iterable[str], error_cls: type[LmchatError],
            where: str | None = None) -> LmchatError:
    """The first problem of ``exc`` as ``error_cls``: one line naming the key and what is allowed."""
    valid_names = list(valid_names)
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, LmchatError):  # a validator's own complete message
        return error_cls(cause.message, param=cause.param or key)
    if err["type"] == "extra_forbidden":
        return error_cls(unknown_name_message(kind, key, valid_names, where), param=key)
    if not key:  # a check across settings: it names them itself
        return error_cls(f"Invalid {kind}s: {message}.", param=_first_name(message, valid_names))
    return error_cls(f"Invalid value for '{key}': {message} (got {err.get('input')!r}).", param=key)


def _first_name(message: str, names: list[str]) -> str | None:
    """The name that comes first in ``message`` (as a whole word)."""
    found = [(match.start(), name) for name in names if (match := re.search(rf"\b{re.escape(name)}\b", message))]
    return min(found)[1] if found else None
