"""API keys: ``Authorization: Bearer KEY`` (or llama.cpp's ``X-Api-Key: KEY``) on every route but ``/health``
and ``/ping`` (keys compared in constant time)."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from lmchat.server.errors import AuthenticationError
from lmchat.server.responses import send_error

OPEN_PATHS = frozenset({"/health", "/ping"})


def is_valid_key(authorization: str | None, keys: Sequence[str]) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    token_bytes = token.strip().encode()
    # compare with every key (no early exit), so timing does not tell which key nearly matched
    matches = [hmac.compare_digest(token_bytes, key.encode()) for key in keys]
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
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if not authorization and headers.get(b"x-api-key"):  # llama.cpp's server accepts this header too
            authorization = "Bearer " + headers[b"x-api-key"].decode("latin-1")
        if not is_valid_key(authorization, self.api_keys):
            message = ("Missing API key: send it as 'Authorization: Bearer KEY' (or 'X-Api-Key: KEY')."
                       if not authorization else "Incorrect API key provided.")
            await send_error(send, AuthenticationError(message))
            return
        await self.app(scope, receive, send)
