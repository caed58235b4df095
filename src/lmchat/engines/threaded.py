"""Hand one request's events from an engine's model thread to the caller's event loop.

Engines that run the model on their own thread create an :class:`EventChannel` in ``generate`` (on the caller's
loop), give :meth:`EventChannel.emit` to the model thread, and ``yield`` from :meth:`EventChannel.events`. A model
thread that emits many events in one step (one token per running request) wraps the step in
:func:`delivered_together`: each consumer loop then wakes once per step, not once per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from lmchat.engines.events import EngineEvent, Finished


class EventChannel:
    """A thread-safe event queue bound to the running loop; ``on_abandon`` runs when the request must stop early
    (the consumer left before ``Finished``, or its loop is gone). The loop side is a deque and one waiter future
    (an asyncio.Queue's getter bookkeeping cost a tenth of a busy server's loop: one event per token per stream)."""

    def __init__(self, on_abandon: Callable[[], Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[EngineEvent | BaseException] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_abandon = on_abandon

    def emit(self, event: EngineEvent | BaseException) -> None:
        """Called from the model thread: an event, or an exception to raise in the consumer."""
        if _held.events is not None:  # within delivered_together: sent at its end
            _held.events.append((self, event))
            return
        _hand_over(self._loop, [(self, event)])

    def _deliver(self, event: EngineEvent | BaseException) -> None:
        """On the loop: queue ``event`` and wake the consumer if it waits."""
        self._pending.append(event)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def events(self) -> AsyncIterator[EngineEvent]:
        """The events up to and including ``Finished``; leaving early abandons the request."""
        finished = False
        try:
            while not finished:
                if not self._pending:
                    self._waiter = self._loop.create_future()
                    await self._waiter
                    continue
                event = self._pending.popleft()
                if isinstance(event, BaseException):
                    raise event
                finished = isinstance(event, Finished)
                yield event
        finally:
            if not finished:
                result = self._on_abandon()
                if asyncio.iscoroutine(result):
                    await result


class _Held(threading.local):
    events: list[tuple[EventChannel, EngineEvent | BaseException]] | None = None


_held = _Held()


# How long a model thread waits, after a step's hand-over, for the consumer loops to take its events (see
# delivered_together): a bound, so that a blocked or busy loop only slows the model, never stops it.
SETTLE_TIMEOUT_S = 0.05


@contextlib.contextmanager
def delivered_together(settle: bool = False) -> Iterator[None]:
    """Within (on a model thread): the events emitted to every channel are held, then handed over at the end,
    one wake-up per consumer loop, each channel's in the order emitted (nested: the outermost block sends).

    ``settle``: then wait (at most SETTLE_TIMEOUT_S) until each loop has run its consumers once with them, before
    the model thread goes on to its next step. On a machine whose cores all run the model's threads, a consumer
    loop that runs during a step takes a core from one of them and the others wait for it at their next barrier
    (its work costs twice); run between steps it costs its own time only."""
    if _held.events is not None:
        yield
        return
    _held.events = []
    try:
        yield
    finally:
        held, _held.events = _held.events, None
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[EventChannel, Any]]] = {}
        for channel, event in held:
            by_loop.setdefault(channel._loop, []).append((channel, event))
        settled = [threading.Event() for _ in by_loop] if settle else [None] * len(by_loop)
        for (loop, items), done in zip(by_loop.items(), settled):
            _hand_over(loop, items, done)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        for done in settled:
            if done is not None:
                done.wait(max(0.0, deadline - time.monotonic()))


def _hand_over(loop: asyncio.AbstractEventLoop, items: list[tuple[EventChannel, Any]],
               settled: threading.Event | None = None) -> None:
    """Queue ``items`` on ``loop`` in one callback (``settled`` is set once the consumers it woke have run); if that
    loop is gone, stop generating for their requests."""
    try:
        loop.call_soon_threadsafe(_put_all, items, settled)
    except RuntimeError:
        if settled is not None:
            settled.set()
        for channel, _ in items:
            channel._on_abandon()


def _put_all(items: list[tuple[EventChannel, Any]], settled: threading.Event | None = None) -> None:
    for channel, event in items:
        channel._deliver(event)
    if settled is not None:  # after the consumer tasks just woken (each waiter's wake-up is already queued)
        asyncio.get_running_loop().call_soon(settled.set)
