"""One function maps every exception to an OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``.

Validation problems are 400 (as OpenAI answers them), never FastAPI's 422: a body that is not JSON at all, a
missing or unknown field and a bad value all come back as ``invalid_request_error`` naming the parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lmchat.errors import (
    ContextLengthError,
    EngineClosedError,
    InvalidRequestError,
    LmchatError,
    ModelNotFoundError,
    QueueFullError,
    RequestTimeoutError,
    UnsupportedError,
)
from lmchat.server.logs import current_request_id

logger = logging.getLogger("lmchat.server")


class AuthenticationError(LmchatError):
    """No API key, or a wrong one."""

    http_status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class BodyTooLargeError(LmchatError):
    """The request body exceeds ``--max-body-bytes``."""

    http_status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RouteNotFoundError(LmchatError):
    http_status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(LmchatError):
    http_status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; nobody reads the response."""


_CODES: Sequence[tuple[type[LmchatError], str]] = (
    (ContextLengthError, "context_length_exceeded"),
    (UnsupportedError, "unsupported_parameter"),
    (QueueFullError, "rate_limit_exceeded"),
    (ModelNotFoundError, "model_not_found"),
    (EngineClosedError, "service_unavailable"),
    (RequestTimeoutError, "request_timeout"),
)


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def to_openai_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, body, headers)`` for any exception; unexpected ones are logged here and never shown to clients."""
    if not isinstance(exc, LmchatError):
        logger.error("Unexpected error while serving a request", exc_info=exc)
        message = f"The server had an error while processing your request (request id {current_request_id()})."
        return 500, error_body(message, "server_error"), {}
    code = getattr(exc, "code", None) or next((c for cls, c in _CODES if isinstance(exc, cls)), None)
    headers = {}
    if exc.http_status == 429:
        headers["Retry-After"] = str(getattr(exc, "retry_after", 1))
    elif exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status >= 500:
        logger.error("%s: %s", type(exc).__name__, exc.message)
    return exc.http_status, error_body(exc.message, exc.error_type, exc.param, code), headers


def from_validation_errors(errors: Sequence[dict[str, Any]], body: Any = None) -> InvalidRequestError:
    """The most specific problem of a request's validation, phrased for the client, naming the parameter
    (``messages[0].content[1].type``) as the body spells it; ``body`` is the parsed request body."""
    if any(err.get("type") == "json_invalid" for err in errors):
        return InvalidRequestError(
            "We could not parse the JSON body of your request: send a JSON object with Content-Type: "
            "application/json."
        )
    err = max(errors, key=lambda e: len(_param_parts(e.get("loc", ()), body)))  # the first of the deepest
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    loc = [part for part in err.get("loc", ()) if part != "body"]
    if kind == "lmchat_input":
        return InvalidRequestError(str(ctx.get("message")), param=ctx.get("param"))
    if not loc and kind in ("model_attributes_type", "dict_type", "model_type", "missing"):
        return InvalidRequestError("The request body must be a JSON object (send Content-Type: application/json).")
    parts = _param_parts(loc, body)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(str(ctx.get("discriminator", "type")).strip("'"))
    param = _format(parts)
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {param}", param=param)
    if kind in ("missing", "union_tag_not_found"):
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    if kind == "union_tag_invalid":
        message = f"{ctx.get('tag')} is not one of {ctx.get('expected_tags')}"
    else:
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if not param:
        return InvalidRequestError(message)
    return InvalidRequestError(f"Invalid value for '{param}': {message}", param=param)


def _param_parts(loc: Sequence[Any], body: Any) -> list[str | int]:
    """The parts of ``loc`` that name places in ``body``: pydantic's union and tag names are left out (a tag is the
    ``role``/``type`` of the object it stands at; a part that is not a key of the value it should be in is a union
    name, unless it is the last: a missing or unknown key)."""
    loc = [part for part in loc if part != "body"]
    parts: list[str | int] = []
    value = body
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            parts.append(part)
            value = value[part]
        elif isinstance(value, dict) and not last and _is_tag(value, part, loc[i + 1]):
            continue  # the tag of a message or content-part union
        elif isinstance(value, dict) and part in value:
            parts.append(part)
            value = value[part]
        elif last and isinstance(value, dict) and isinstance(part, str):
            parts.append(part)  # a missing or unknown key of this object
        elif body is None and isinstance(part, (str, int)) and (isinstance(part, int) or part.isidentifier()):
            parts.append(part)  # no body to look at: keep what looks like a name
    return parts


def _is_tag(value: dict, part: Any, following: Any) -> bool:
    """Whether ``part`` is the union tag of ``value`` (its role or type), not one of its fields: the part after a
    tag is a field of ``value`` itself."""
    if part not in (value.get("role"), value.get("type")):
        return False
    inner = value.get(part)
    return not (isinstance(inner, dict) and following in inner) and (following in value or part not in value)


def _format(parts: Sequence[str | int]) -> str | None:
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None
