"""Hand one request's events from an engine's model thread to the caller's event loop.

Engines that run the model on their own thread create an :class:`EventChannel` in ``generate`` (on the caller's
loop), give :meth:`EventChannel.emit` to the model thread, and ``yield`` from :meth:`EventChannel.events`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from lmchat.engines.events import EngineEvent, Finished


class EventChannel:
    """A thread-safe event queue bound to the running loop; ``on_abandon`` runs when the request must stop early
    (the consumer left before ``Finished``, or its loop is gone)."""

    def __init__(self, on_abandon: Callable[[], Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[EngineEvent | BaseException] = asyncio.Queue()
        self._on_abandon = on_abandon

    def emit(self, event: EngineEvent | BaseException) -> None:
        """Called from the model thread: an event, or an exception to raise in the consumer."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the caller's loop is gone: stop generating for it
            self._on_abandon()

    async def events(self) -> AsyncIterator[EngineEvent]:
        """The events up to and including ``Finished``; leaving early abandons the request."""
        finished = False
        try:
            while not finished:
                event = await self._queue.get()
                if isinstance(event, BaseException):
                    raise event
                finished = isinstance(event, Finished)
                yield event
        finally:
            if not finished:
                result = self._on_abandon()
                if asyncio.iscoroutine(result):
                    await result
