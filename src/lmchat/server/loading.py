"""Serving while the model loads, as llama.cpp's server does: the port is bound first, and until the model is
ready every request (``/health`` included) gets llama.cpp's 503 ``{"error": {"code": 503, "message": "Loading
model", "type": "unavailable_error"}}``; then lmchat's app answers (``/health``: 200 ``{"status": "ok"}``).

Supervisors and load balancers (Kubernetes probes, llama.cpp's and vLLM's clients polling ``/health``) can thus
tell "still loading" from "not there".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

LOADING_BODY = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}


class LoadingApp:
    """The ASGI app uvicorn serves: the loading answer until :meth:`ready` hands it lmchat's app."""

    def __init__(self) -> None:
        self.app: Any = None

    def ready(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            body = json.dumps(LOADING_BODY).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1")]})
            await send({"type": "http.response.body", "body": body})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # try again later


class ModelLoader:
    """Loads the model on a thread of its own while the server already answers; ``on_ready(chat_model)`` runs
    once it is loaded, ``on_failure(exc)`` if loading fails (the exception is kept in ``error``)."""

    def __init__(self, load: Callable[[], Any], on_ready: Callable[[Any], None],
                 on_failure: Callable[[BaseException], None]) -> None:
        self.chat_model: Any = None
        self.error: BaseException | None = None
        self._load, self._on_ready, self._on_failure = load, on_ready, on_failure
        self._thread = threading.Thread(target=self._run, name="lmchat-model-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.chat_model = self._load()
            self._on_ready(self.chat_model)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller once the server has stopped
            self.error = exc
            self._on_failure(exc)

    def join(self) -> None:
        self._thread.join()
