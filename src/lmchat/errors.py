"""One error hierarchy for lmchat.

Every error a user can cause or meet is an :class:`LmchatError`. Each boundary maps it once: the server to an
OpenAI error body (``http_status``, ``error_type``, ``param``), the CLI to one readable line.
"""

from __future__ import annotations

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


def close_names(name: str, candidates: Iterable[str], limit: int = 2) -> list[str]:
    """Up to ``limit`` candidates a typo away from ``name``: the fewest edits (case, ``-`` and ``_`` aside), within
    one edit per four characters (at least one, at most three). A far name gets no suggestion, not a wrong one."""
    key = _normal(name)
    budget = max(1, min(3, len(key) // 4))
    scored = sorted((distance, candidate) for candidate in set(candidates)
                    if (distance := _distance(key, _normal(candidate), budget)) <= budget + 0.5)
    best = scored[0][0] if scored else 0
    return [candidate for distance, candidate in scored if distance == best][:limit]


def _distance(key: str, candidate: str, budget: int) -> float:
    """Edits from ``key`` to ``candidate``; past the budget, a word of four letters or more that the other starts
    with (``/regen`` for ``/regenerate``) still counts, after every real typo."""
    distance = edit_distance(key, candidate)
    shorter, longer = sorted((key.strip("/-_"), candidate.strip("/-_")), key=len)
    if distance > budget and len(shorter) >= 4 and longer.startswith(shorter):
        return budget + 0.5
    return distance


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, if one is a typo away."""
    names = close_names(name, candidates, limit=1)
    return names[0] if names else None


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) that turn ``a`` into ``b``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


def unknown_name_message(kind: str, name: str, candidates: Iterable[str], where: str | None = None) -> str:
    """One line: ``Unknown option 'tempreature'; did you mean 'temperature'? All options: lmchat --help.``

    ``where`` says where the full list is; without it a short list (up to 12 names) is spelled out."""
    candidates = sorted(set(candidates))
    guesses = close_names(name, candidates)
    line = f"Unknown {kind} '{name}'"
    if guesses:
        line += "; did you mean " + " or ".join(f"'{guess}'" for guess in guesses) + "?"
    else:
        line += "."
    if where:
        return f"{line} {where}"
    if not guesses and len(candidates) <= 12:
        return f"{line} Valid {kind}s: {', '.join(candidates)}."
    return line


def require(module: str, extra: str) -> None:
    """Raise MissingDependencyError with the install command when ``module`` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(
            f"The Python package '{module}' is not installed. Install it with: pip install 'lmchat[{extra}]'"
        )
