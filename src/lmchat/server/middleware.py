"""Plain ASGI middleware (no BaseHTTPMiddleware, so streams and disconnects pass straight through)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmchat.errors import InvalidRequestError
from lmchat.server.errors import BodyTooLargeError
from lmchat.server.logs import reset_request_id, set_request_id
from lmchat.server.responses import send_error

logger = logging.getLogger("lmchat.server.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(scope: Scope) -> str:
    """The client's ``x-request-id`` when it is a sane token, else a new one."""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Outermost: gives each request its id (echoed as ``x-request-id``), logs and counts it, and turns any
    escaped exception into an OpenAI error without a stack trace."""

    def __init__(self, app: ASGIApp, on_response: Callable[[str, int], None]) -> None:
        self.app = app
        self.on_response = on_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = set_request_id(request_id)
        status, started, began = 500, False, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # the last line of defence: log it, never show it
            if started:
                logger.error("Error after the response started", exc_info=exc)
            else:
                await send_error(send_with_id, exc)
        finally:
            elapsed = time.perf_counter() - began
            logger.info("%s %s %d %.3fs", scope["method"], scope["path"], status, elapsed)
            self.on_response(scope["path"], status)
            reset_request_id(token)


class BodyLimitMiddleware:
    """Reads request bodies up to ``max_bytes`` (413 beyond), then replays them to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        try:
            if declared is not None and int(declared) > self.max_bytes:
                await send_error(send, self._too_large(int(declared)))
                return
        except ValueError:
            await send_error(send, InvalidRequestError("The Content-Length header is not a number."))
            return
        body, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            body.append(message.get("body", b""))
            size += len(body[-1])
            if size > self.max_bytes:
                await send_error(send, self._too_large(size))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(body), receive), send)

    def _too_large(self, size: int) -> BodyTooLargeError:
        return BodyTooLargeError(
            f"The request body has {size} bytes or more, over this server's limit of {self.max_bytes} bytes "
            "(--max-body-bytes)."
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the client's disconnect

    return replay
