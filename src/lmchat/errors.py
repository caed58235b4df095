"""One error hierarchy for lmchat.

Every error a user can cause or meet is an :class:`LmchatError`. Each boundary maps it once: the server to an
OpenAI error body (``http_status``, ``error_type``, ``param``), the CLI to one readable line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmchatError(Exception):
    """Base class. The message is written for the user: what was wrong and what to do."""

    http_status: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(LmchatError, ValueError):
    """A configuration key or value is wrong (ChatModel args, YAML file, CLI flags)."""

    http_status = 400
    error_type = "invalid_request_error"


class InvalidRequestError(LmchatError, ValueError):
    """A request (messages, generation options) is malformed."""

    http_status = 400
    error_type = "invalid_request_error"


class UnsupportedError(InvalidRequestError):
    """The request asks for something the chosen engine or model cannot honour."""


class ContextLengthError(InvalidRequestError):
    """The prompt (plus the requested answer) does not fit the model's context."""


class TemplateError(InvalidRequestError):
    """The chat template could not render the conversation."""


class ModelNotFoundError(LmchatError):
    """The model (or adapter) path or id cannot be found."""

    http_status = 404
    error_type = "not_found_error"


class MissingDependencyError(LmchatError, ImportError):
    """An optional dependency is not installed; the message names the install command."""

    http_status = 500
    error_type = "internal_error"


class EngineError(LmchatError):
    """The engine failed while running a request."""


class EngineClosedError(LmchatError):
    """The engine is closed or shutting down."""

    http_status = 503
    error_type = "service_unavailable"


class EngineDeadError(EngineClosedError):
    """The engine stopped after an internal failure and serves no more requests; restart the process."""


class QueueFullError(LmchatError):
    """Too many requests are waiting; retry later. ``retry_after``: the seconds the server expects it takes."""

    http_status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, param: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, param=param)
        self.retry_after = retry_after


class RequestTimeoutError(LmchatError):
    """The request ran past its deadline and was stopped."""

    http_status = 408
    error_type = "timeout_error"


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, if any is reasonably close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: str, candidates: Iterable[str]) -> str:
    """``Unknown option 'tempreature'; did you mean 'temperature'?`` or a list of valid names."""
    candidates = sorted(candidates)
    guess = closest(name, candidates)
    if guess:
        return f"Unknown {kind} '{name}'; did you mean '{guess}'?"
    return f"Unknown {kind} '{name}'. Valid {kind}s: {', '.join(candidates)}."


def require(module: str, extra: str) -> None:
    """Raise MissingDependencyError with the install command when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"The Python package '{module}' is not installed. Install it with: pip install 'lmchat[{extra}]'"
        )
