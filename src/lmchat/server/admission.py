"""Back-pressure by the engine's real capacity: sequences and KV-cache tokens, not HTTP requests.

A request with ``n`` answers is ``n`` sequences; each reserves its prompt plus its answer budget (at most the whole
cache). Work is admitted while the running sequences and their reservations fit the engine's capacity (a request
larger than the whole capacity still runs, alone); the rest waits, first come first served, up to ``max_waiting``
sequences; beyond that the request gets a 429 whose ``Retry-After`` is estimated from recent throughput.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass, field

from lmchat.errors import LmchatError, QueueFullError

THROUGHPUT_WINDOW_S = 60.0  # finished sequences older than this no longer count towards the throughput
MAX_RETRY_AFTER_S = 600


@dataclass(eq=False)
class _Waiter:
    sequences: int
    tokens: int
    admitted: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Admission:
    """Counts running and waiting work; :meth:`acquire` admits, queues or refuses a request at once."""

    def __init__(self, max_sequences: int, max_waiting: int, kv_cache_tokens: int | None = None) -> None:
        self.max_sequences = max_sequences
        self.max_waiting = max_waiting
        self.kv_cache_tokens = kv_cache_tokens
        self.running = self.waiting = 0  # requests
        self.running_sequences = self.waiting_sequences = self.reserved_tokens = 0
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._finished: collections.deque[tuple[float, int]] = collections.deque(maxlen=512)
        self._closed: LmchatError | None = None

    async def acquire(self, sequences: int = 1, tokens: int = 0) -> Lease:
        """A lease for ``sequences`` sequences reserving ``tokens`` KV tokens in all; waits for room."""
        if self._closed is not None:
            raise self._closed
        tokens = min(tokens, self.kv_cache_tokens * sequences) if self.kv_cache_tokens else tokens
        if not self._queue and self._fits(sequences, tokens):
            return self._admit(sequences, tokens)
        if self.waiting_sequences + sequences > self.max_waiting:
            retry_after = self.retry_after(self.waiting_sequences + sequences - self.max_waiting)
            raise QueueFullError(
                f"The server is busy ({self.running_sequences} sequences running, {self.waiting_sequences} waiting; "
                f"this request needs {sequences}); retry in about {retry_after} s.", retry_after=retry_after,
            )
        waiter = _Waiter(sequences, tokens)
        self._queue.append(waiter)
        self.waiting += 1
        self.waiting_sequences += sequences
        try:
            return await waiter.admitted
        except BaseException:
            if waiter.admitted.done() and not waiter.admitted.cancelled() and waiter.admitted.exception() is None:
                waiter.admitted.result().release()  # admitted just as the caller gave up
            elif waiter in self._queue:
                self._queue.remove(waiter)
                self._leave_queue(waiter)
                self._admit_waiting()  # the head may have changed
            raise

    def close(self, error: LmchatError) -> None:
        """Refuse new work with ``error`` and fail every waiting request with it."""
        self._closed = error
        while self._queue:
            waiter = self._queue.popleft()
            self._leave_queue(waiter)
            if not waiter.admitted.done():
                waiter.admitted.set_exception(type(error)(error.message, param=error.param))

    def retry_after(self, sequences_ahead: int) -> int:
        """Seconds until ``sequences_ahead`` sequences have finished, at the recent rate (1 s per full batch when
        nothing has finished recently)."""
        now = time.monotonic()
        while self._finished and now - self._finished[0][0] > THROUGHPUT_WINDOW_S:
            self._finished.popleft()
        done = sum(count for _, count in self._finished)
        if done and len(self._finished) > 1 and now > self._finished[0][0]:
            seconds = sequences_ahead * (now - self._finished[0][0]) / done
        else:
            seconds = sequences_ahead / max(1, self.max_sequences)
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(seconds)))

    # --- bookkeeping -----------------------------------------------------------------------------------
    def _fits(self, sequences: int, tokens: int) -> bool:
        if self.running_sequences == 0:
            return True  # a request larger than the whole capacity still runs, alone
        if self.running_sequences + sequences > self.max_sequences:
            return False
        return self.kv_cache_tokens is None or self.reserved_tokens + tokens <= self.kv_cache_tokens

    def _admit(self, sequences: int, tokens: int) -> Lease:
        self.running += 1
        self.running_sequences += sequences
        self.reserved_tokens += tokens
        return Lease(self, sequences, tokens)

    def _leave_queue(self, waiter: _Waiter) -> None:
        self.waiting -= 1
        self.waiting_sequences -= waiter.sequences

    def _admit_waiting(self) -> None:
        while self._queue and self._fits(self._queue[0].sequences, self._queue[0].tokens):
            waiter = self._queue.popleft()
            self._leave_queue(waiter)
            if waiter.admitted.done():  # its caller gave up meanwhile
                continue
            waiter.admitted.set_result(self._admit(waiter.sequences, waiter.tokens))

    def _release(self, sequences: int, tokens: int) -> None:
        self.running -= 1
        self.running_sequences -= sequences
        self.reserved_tokens -= tokens
        self._finished.append((time.monotonic(), sequences))
        self._admit_waiting()


class Lease:
    """Admitted work; :meth:`release` is idempotent and synchronous (safe in a cancelled task)."""

    def __init__(self, admission: Admission, sequences: int, tokens: int) -> None:
        self._admission: Admission | None = admission
        self.sequences, self.tokens = sequences, tokens

    def release(self) -> None:
        admission, self._admission = self._admission, None
        if admission is not None:
            admission._release(self.sequences, self.tokens)
