"""Request ids in every log line, and prompts kept out of the logs unless asked for (never base64 media)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from typing import Any

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("lmchat_request_id", default="-")
_DATA_URL = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")
_LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(request_id: str) -> contextvars.Token:
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token) -> None:
    _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def configure_logging(level: str = "info") -> None:
    """Log ``lmchat.*`` records to stderr with their request id (once per process)."""
    logger = logging.getLogger("lmchat")
    logger.setLevel(level.upper())
    if any(getattr(handler, "_lmchat_server", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler._lmchat_server = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def redact_media(value: Any) -> str:
    """``value`` as JSON text with base64 data URLs replaced by their size."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _DATA_URL.sub(lambda m: f"<data url, {len(m.group(0))} chars>", text)
