"""Turn pydantic validation errors into one clear lmchat error."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from lmchat.errors import LmchatError, unknown_name_message


def explain(exc: ValidationError, *, kind: str, valid_names: Iterable[str], error_cls: type[LmchatError]) -> LmchatError:
    """The first problem of ``exc`` as ``error_cls``, naming the key and what is allowed."""
    problems = []
    param = None
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(root)"
        param = param or key
        if err["type"] == "extra_forbidden":
            problems.append(unknown_name_message(kind, key, valid_names))
        else:
            got = err.get("input")
            problems.append(f"Invalid value for '{key}': {err['msg']} (got {got!r}).")
    return error_cls(" ".join(problems), param=param)
