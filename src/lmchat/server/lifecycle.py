"""The server process's life under uvicorn: graceful shutdown that ends every stream properly, and an engine
watchdog that exits when the engine died, so that a supervisor (systemd, Kubernetes, Docker) restarts it.

Shutdown (SIGINT/SIGTERM): uvicorn stops accepting connections and new requests get 503; running requests have
``shutdown_grace`` seconds to finish. Then lmchat stops what is left itself: queued requests fail with 503 and
every running generation is aborted at the engine, so each open stream ends with an error event and ``[DONE]``
(a non-streamed request gets a 503 body). uvicorn's own cancellation, which would cut the connections mid-stream,
only comes ``ABORT_MARGIN_S`` later, for a request that still did not end.

The app may be a :class:`~lmchat.server.loading.LoadingApp` (``lmchat serve`` binds its port before the model
loads): the watchdog and the shutdown then act once lmchat's app is in place.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn

from lmchat.errors import EngineDeadError
from lmchat.server.settings import ServerSettings

logger = logging.getLogger("lmchat.server")
ABORT_MARGIN_S = 5.0  # after lmchat's own stop, the time uvicorn leaves the streams to end before cancelling them
HEALTH_INTERVAL_S = 0.5


class LmchatServer(uvicorn.Server):
    """uvicorn's server with lmchat's shutdown and engine watchdog. ``exit_code``: 0 after a clean shutdown, 1 when
    it could not start or the engine died."""

    def __init__(self, app: Any, settings: ServerSettings) -> None:
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
            timeout_graceful_shutdown=settings.shutdown_grace + ABORT_MARGIN_S, lifespan="off",
        )
        super().__init__(config)
        self._app = app
        self.grace = settings.shutdown_grace
        self.engine_died = False
        self._watchdog: asyncio.Task | None = None

    @property
    def state(self) -> Any:
        """lmchat's ServerState, once its app serves (None while a LoadingApp waits for the model)."""
        app = self._app.app if hasattr(self._app, "ready") else self._app
        return app.state.lmchat if app is not None else None

    @property
    def exit_code(self) -> int:
        return 1 if self.engine_died or not self.started else 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._watchdog = asyncio.create_task(self._watch_engine())

    async def _watch_engine(self) -> None:
        while not self.should_exit:
            try:
                if self.state is not None:
                    self.state.chat_model.check_health()
            except EngineDeadError as exc:
                logger.critical("%s Exiting with status 1 so that a supervisor can restart lmchat.", exc.message)
                self.engine_died = True
                self.should_exit = True
                return
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.state is not None:
            self.state.begin_shutdown()
        ender = asyncio.create_task(self._end_requests_after_grace())
        try:
            await super().shutdown(sockets)
        finally:
            ender.cancel()
            if self._watchdog is not None:
                self._watchdog.cancel()

    async def _end_requests_after_grace(self) -> None:
        await asyncio.sleep(self.grace)
        if self.state is None:
            return
        if self.state.live or self.state.admission.waiting:
            logger.warning("Shutdown grace period (%g s) over: stopping %d running request(s)", self.grace,
                           len(self.state.live))
        self.state.end_requests()
