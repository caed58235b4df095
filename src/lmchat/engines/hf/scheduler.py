"""Who runs and who waits: batch slots and the KV-cache budget. Pure bookkeeping, no torch.

Running sequences hold slots ``0 .. num_running - 1`` (dense, so a decode step reads one contiguous block of the
cache). A sequence that leaves frees its slot and the last running sequence moves into it; ``remove`` says which
move to make. Waiting sequences are admitted first come, first served, when a slot is free and the budget allows:
``rows x longest reservation <= kv_cache_tokens``, where a sequence reserves its prompt plus its answer budget.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

from lmchat.engines.hf.sequence import RequestState


class Scheduler:
    def __init__(self, max_batch_size: int, kv_cache_tokens: int) -> None:
        self.max_batch_size, self.kv_cache_tokens = max_batch_size, kv_cache_tokens
        self.waiting: collections.deque[RequestState] = collections.deque()
        self.running: list[RequestState] = []

    @property
    def num_active(self) -> int:
        return len(self.running) + len(self.waiting)

    @property
    def is_idle(self) -> bool:
        return not self.running and not self.waiting

    def __iter__(self) -> Iterator[RequestState]:
        yield from list(self.running)
        yield from list(self.waiting)

    def add(self, sequence: RequestState) -> bool:
        """Queue a sequence; its answer budget is cut to what the whole cache can hold. False: the prompt alone
        does not fit."""
        room = self.kv_cache_tokens - sequence.prompt_tokens
        if room < 1:
            return False
        sequence.budget = min(sequence.budget, room)
        self.waiting.append(sequence)
        return True

    def reserved_tokens(self, extra: RequestState | None = None) -> int:
        """Tokens the cache may come to hold: rows x the longest reservation (rows are padded to one length)."""
        rows = self.running + ([extra] if extra is not None else [])
        return len(rows) * max((s.need for s in rows), default=0)

    def can_admit(self, sequence: RequestState) -> bool:
        return (len(self.running) < self.max_batch_size
                and self.reserved_tokens(sequence) <= self.kv_cache_tokens)

    def admit(self) -> RequestState | None:
        """The oldest waiting sequence, given the next slot, if it fits now."""
        if not self.waiting or not self.can_admit(self.waiting[0]):
            return None
        sequence = self.waiting.popleft()
        sequence.slot = len(self.running)
        self.running.append(sequence)
        return sequence

    def remove(self, sequence: RequestState) -> tuple[RequestState, int] | None:
        """Take a sequence out; returns ``(moved, old_slot)`` when the last running one moved into its slot."""
        if sequence.slot < 0:
            self.waiting.remove(sequence)
            return None
        slot, last = sequence.slot, self.running.pop()
        sequence.slot = -1
        if last is sequence:
            return None
        self.running[slot], last.slot = last, slot
        return last, len(self.running)
