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


def from_validation_errors(errors: Sequence[dict[str, Any]]) -> InvalidRequestError:
    """The first problem of a request's validation, phrased for the client, naming the parameter."""
    err = errors[0]
    loc = [part for part in err.get("loc", ()) if part != "body"]
    param = _param_name(loc)
    kind = err.get("type", "")
    if kind == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request: send a JSON object with Content-Type: "
            "application/json."
        )
    if not loc and kind in ("model_attributes_type", "dict_type", "model_type", "missing"):
        return InvalidRequestError("The request body must be a JSON object (send Content-Type: application/json).")
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param)
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if not param:
        return InvalidRequestError(message)
    return InvalidRequestError(f"Invalid value for '{param}': {message}", param=param)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "tuple"})


def _param_name(loc: Sequence[Any]) -> str | None:
    """``messages[0].role`` from pydantic's location, without its union tags (``str``, ``list[str]``, ...)."""
    name = ""
    for part in loc:
        if isinstance(part, str) and (part in _TYPE_TAGS or not part.isidentifier()):
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None
