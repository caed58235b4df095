"""API keys: ``Authorization: Bearer KEY`` (or llama.cpp's ``X-Api-Key: KEY``) on every route but ``/health``
and ``/ping`` (keys compared in constant time)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from lmchat.server.errors import AuthenticationError
from lmchat.server.responses import send_error

OPEN_PATHS = frozenset({"/health", "/ping"})


def key_forms(key: str) -> tuple[bytes, ...]:
    """The bytes a client may send for ``key`` in a header: its UTF-8 encoding (what curl, httpx and browsers
    send) and, where it has one, its Latin-1 encoding (what Python's http.client sends for a str header)."""
    forms = [key.encode("utf-8")]
    try:
        forms.append(key.encode("latin-1"))
    except UnicodeEncodeError:
        pass
    return tuple(dict.fromkeys(forms))


def is_valid_key(authorization: bytes | str | None, keys: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header value (its raw bytes) carries one of ``keys``; bytes are compared, in
    constant time, with every form of every key (no early exit, so timing tells nothing of a near match)."""
    raw = authorization.encode("utf-8") if isinstance(authorization, str) else (authorization or b"")
    scheme, _, token = raw.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return False
    token = token.strip()
    matches = [hmac.compare_digest(token, form) for key in keys for form in key_forms(key)]
    return any(matches)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_keys: Sequence[str]) -> None:
        self.app = app
        self.api_keys = tuple(api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.api_keys or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"")
        if not authorization and headers.get(b"x-api-key"):  # llama.cpp's server accepts this header too
            authorization = b"Bearer " + headers[b"x-api-key"]
        if not is_valid_key(authorization, self.api_keys):
            message = ("Missing API key: send it as 'Authorization: Bearer KEY' (or 'X-Api-Key: KEY')."
                       if not authorization else "Incorrect API key provided.")
            await send_error(send, AuthenticationError(message))
            return
        await self.app(scope, receive, send)
