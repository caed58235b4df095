"""Throttling of the web chat's login form: after a few wrong passwords a client waits, twice as long each time.

Gradio checks ``--username``/``--password`` at ``POST /login`` and answers a wrong pair with 400. This ASGI
middleware counts those failures per client address: after ``free_attempts`` of them, each further attempt must
wait ``base_delay_s`` seconds, then twice that, and so on up to ``max_delay_s``; an attempt that comes too early
gets 429 with ``Retry-After`` and never reaches the password check. A successful login clears the client's count.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FREE_ATTEMPTS = 5
BASE_DELAY_S = 1.0
MAX_DELAY_S = 900.0
_MAX_CLIENTS = 10_000  # tracked addresses; the oldest are forgotten beyond this


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0


class LoginThrottle:
    """Per-client exponential back-off on failed logins (thread-safe; the clock is injectable for tests)."""

    def __init__(self, free_attempts: int = FREE_ATTEMPTS, base_delay_s: float = BASE_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.free_attempts, self.base_delay_s, self.max_delay_s = free_attempts, base_delay_s, max_delay_s
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def wait_s(self, client: str) -> float:
        """Seconds the client must still wait before its next attempt (0: it may try now)."""
        with self._lock:
            record = self._records.get(client)
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def failed(self, client: str) -> None:
        with self._lock:
            record = self._records.pop(client, None) or _Record()
            self._records[client] = record  # most recent last
            record.failures += 1
            extra = record.failures - self.free_attempts
            if extra >= 0:
                record.locked_until = self.clock() + min(self.max_delay_s, self.base_delay_s * 2**extra)
            while len(self._records) > _MAX_CLIENTS:
                self._records.pop(next(iter(self._records)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._records.pop(client, None)


class LoginThrottleMiddleware:
    """Applies a :class:`LoginThrottle` to ``POST .../login`` (Gradio's login route)."""

    def __init__(self, app: ASGIApp, throttle: LoginThrottle | None = None) -> None:
        self.app = app
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.throttle.wait_s(client)
        if wait > 0:
            await _too_many(send, wait)
            return
        status = {"code": 500}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status["code"] == 200:
            self.throttle.succeeded(client)
        elif status["code"] in (400, 401, 403):
            self.throttle.failed(client)


async def _too_many(send: Send, wait: float) -> None:
    seconds = max(1, int(wait + 0.999))
    body = json.dumps({"detail": f"Too many failed logins from this address; try again in {seconds} s."}).encode()
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(seconds).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
