"""The sync bridge: a background event loop thread that runs the async core for synchronous callers."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class LoopThread:
    """One daemon thread running an event loop; ``run`` and ``iterate`` block the caller, never the loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lmchat-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """Iterate ``stream`` on the loop. Leaving early (break, Ctrl-C, close) cancels it there."""
        items: queue.Queue[Any] = queue.Queue()
        finished = threading.Event()

        async def pump() -> None:
            try:
                async for item in stream:
                    items.put((item, None))
                items.put((_END, None))
            except Exception as exc:  # handed over to the caller's thread, re-raised there
                items.put((_END, exc))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
                finished.set()

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while True:
                item, error = items.get()
                if error is not None:
                    raise error
                if item is _END:
                    return
                yield item
        finally:
            if not future.done():
                future.cancel()
                finished.wait(timeout=30)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
