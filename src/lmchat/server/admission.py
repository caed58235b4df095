"""Back-pressure: at most ``max_concurrent`` requests run, ``max_queue`` more wait, the rest get a 429."""

from __future__ import annotations

import asyncio

from lmchat.errors import QueueFullError


class Admission:
    """Counts running and waiting requests; :meth:`acquire` waits for a free slot or refuses at once."""

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(max_running)

    async def acquire(self) -> Lease:
        if self.running >= self.max_running and self.waiting >= self.max_waiting:
            raise QueueFullError(
                f"The server is busy ({self.running} requests running, {self.waiting} waiting); retry later."
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        return Lease(self)

    def _release(self) -> None:
        self.running -= 1
        self._slots.release()


class Lease:
    """One running slot; :meth:`release` is idempotent and synchronous (safe in a cancelled task)."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release()
