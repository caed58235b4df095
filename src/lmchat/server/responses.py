"""Writing responses: JSON bodies, OpenAI errors (also from plain ASGI middleware) and server-sent events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from lmchat.server.errors import to_openai_error
from lmchat.server.protocol import OpenAIResponse

DONE_EVENT = "data: [DONE]\n\n"


def json_response(model: OpenAIResponse | dict[str, Any], status: int = 200) -> JSONResponse:
    body = model.model_dump(mode="json") if isinstance(model, OpenAIResponse) else model
    return JSONResponse(body, status_code=status)


def error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = to_openai_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(send: Send, exc: BaseException) -> None:
    """Answer with an OpenAI error from ASGI middleware (before the app runs)."""
    status, body, headers = to_openai_error(exc)
    raw = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    raw_headers += [(key.lower().encode(), value.encode()) for key, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": raw})


def sse_event(payload: OpenAIResponse | dict[str, Any]) -> str:
    body = payload.model_dump(mode="json") if isinstance(payload, OpenAIResponse) else payload
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"


class EventTemplate:
    """The SSE event of a stream chunk whose one variable part is a string (a content delta): rendered once by
    ``render`` (through the protocol's models, as every other event) around a marker and split there, then filled
    per chunk by concatenation. The bytes are those the models would give for that string (tested); it spares the
    busiest event of a stream the models' construction, dump and JSON encoding of the whole chunk."""

    _MARKER = "\x00lmchat\x00"

    def __init__(self, render: Callable[[str], str]) -> None:
        encoded = _json_string(self._MARKER)
        self._head, found, self._tail = render(self._MARKER).partition(encoded)
        if not found or encoded in self._tail:
            raise ValueError("the event template's marker must appear exactly once")

    def __call__(self, value: str) -> str:
        return self._head + _json_string(value) + self._tail


def _json_string(value: str) -> str:
    """A JSON string's inside, encoded as sse_event encodes it."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def sse_error(exc: BaseException) -> str:
    """An error that happens after the stream started: an event carrying the OpenAI error body."""
    return sse_event(to_openai_error(exc)[1])


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` whose generator is always closed, whichever way the response ends."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str]) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
