"""Which llama.cpp sequences hold which cells of the unified KV cache: sequence ids, prefix reuse, room.

Pure bookkeeping (no llama_cpp): the worker asks this module what to do and does it with ``llama_memory_seq_cp``
and ``llama_memory_seq_rm``.

Every live *entry* is one llama.cpp sequence id and the tokens whose keys/values it holds (positions
``0 .. len(tokens) - 1``). A running request owns an entry; when the request ends the entry stays as a cached
prompt until its id or its cells are needed (least recently used first). A new request copies the longest prefix
any live entry shares with its prompt: ``seq_cp`` makes the cells shared, nothing is copied or recomputed.

Cells are counted exactly: an entry's positions are segments ``(origin, start, end)``, the cells that ``origin``
(an entry, by a number never reused) wrote. A cell stays in use while any live entry refers to it, so the cells
in use are, per origin, from its start to the furthest end any live entry refers to. A running entry also
*reserves* the cells it may still write (the rest of its prompt plus its answer budget); a request is admitted
only when its reservation fits beside everything used and reserved, so a decode never runs out of cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class Entry:
    """One llama.cpp sequence id and the tokens its cells hold."""

    seq_id: int
    origin: int  # names the cells this entry writes itself
    tokens: list[int] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)  # [origin, start, end], covering 0 .. len(tokens)
    reserved: int = 0  # cells it may still write (running entries)
    running: bool = True
    last_used: int = 0

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Admission:
    """What admitting a request takes: ``evicted`` entries to remove first (``seq_rm``), then ``reuse`` tokens of
    ``source`` to copy into ``entry`` (``seq_cp``); the entry then evaluates ``prompt[reuse:]``. A source still
    evaluating its prompt is copied from once it holds ``reuse`` tokens (:meth:`KvCells.copy_prefix`)."""

    entry: Entry
    source: Entry | None
    reuse: int
    evicted: tuple[Entry, ...]


class KvCells:
    def __init__(self, num_seq_ids: int, num_cells: int, *, reuse_prefix: bool = True) -> None:
        self.num_seq_ids, self.num_cells, self.reuse_prefix = num_seq_ids, num_cells, reuse_prefix
        self.entries: list[Entry] = []
        self.targets: dict[int, Sequence[int]] = {}  # seq id -> the prompt a running entry is evaluating
        self._origins = itertools.count()
        self._clock = itertools.count(1)

    # --- what is used ------------------------------------------------------------------------------------
    def used_cells(self) -> int:
        """Cells some live entry refers to."""
        return self._used_by(self.entries)

    def committed_cells(self) -> int:
        """Cells in use plus the cells running entries may still write."""
        return self.used_cells() + self._reserved()

    @property
    def cached(self) -> list[Entry]:
        """Entries of finished requests, least recently used first."""
        return sorted((entry for entry in self.entries if not entry.running), key=lambda entry: entry.last_used)

    # --- admission ---------------------------------------------------------------------------------------
    def best_prefix(self, prompt: Sequence[int]) -> tuple[Entry | None, int]:
        """The live entry sharing the longest prefix with ``prompt`` (a running entry counts with the prompt it is
        still evaluating), and that length; at most ``len(prompt) - 1``: the last prompt token is always
        evaluated, its logits start the answer."""
        if not self.reuse_prefix:
            return None, 0
        best, best_length = None, 0
        for entry in self.entries:
            target = self.targets.get(entry.seq_id)
            tokens = target if target is not None and len(target) > entry.length else entry.tokens
            length = common_prefix_length(tokens, prompt)
            if length > best_length:
                best, best_length = entry, length
        return best, min(best_length, len(prompt) - 1)

    def admit(self, prompt: Sequence[int], budget: int) -> Admission | None:
        """Room and an id for a request that evaluates ``prompt`` and then writes up to ``budget`` answer tokens;
        None while it does not fit beside what runs. Cached entries are evicted (least recently used first) only
        when that makes it fit."""
        source, reuse = self.best_prefix(prompt)
        need = len(prompt) - reuse + budget
        keep = [entry for entry in self.entries if entry.running or entry is source]
        if len(keep) >= self.num_seq_ids or self._used_by(keep) + self._reserved() + need > self.num_cells:
            return None
        evicted = []
        for victim in self.cached:
            if self._free_seq_id() is not None and self.committed_cells() + need <= self.num_cells:
                break
            if victim is not source:
                self.remove(victim)
                evicted.append(victim)
        entry = Entry(self._free_seq_id(), next(self._origins), reserved=need)
        self.entries.append(entry)
        self.targets[entry.seq_id] = list(prompt)
        if source is not None:
            self.touch(source)
        return Admission(entry, source, reuse, tuple(evicted))

    def _used_by(self, entries: list[Entry]) -> int:
        furthest: dict[int, tuple[int, int]] = {}
        for entry in entries:
            for origin, start, end in entry.segments:
                low, high = furthest.get(origin, (start, start))
                furthest[origin] = (min(low, start), max(high, end))
        return sum(high - low for low, high in furthest.values())

    def _reserved(self) -> int:
        return sum(entry.reserved for entry in self.entries if entry.running)

    def _free_seq_id(self) -> int | None:
        taken = {entry.seq_id for entry in self.entries}
        return next((seq_id for seq_id in range(self.num_seq_ids) if seq_id not in taken), None)

    # --- changes the worker made -------------------------------------------------------------------------
    def copy_prefix(self, entry: Entry, source: Entry, length: int) -> int:
        """``entry`` now shares the first ``length`` cells of ``source``, or what ``source`` holds if less (a
        source that stopped early); returns how many it shares. Cells it must now evaluate itself are reserved."""
        shared = min(length, source.length)
        entry.tokens = list(source.tokens[:shared])
        entry.segments = clip_segments(source.segments, shared)
        entry.reserved += length - shared
        return shared

    def wrote(self, entry: Entry, tokens: Sequence[int]) -> None:
        """``entry`` evaluated ``tokens`` at its next positions."""
        start = entry.length
        entry.tokens.extend(tokens)
        if entry.segments and entry.segments[-1][0] == entry.origin:
            entry.segments[-1][2] = entry.length
        else:
            entry.segments.append([entry.origin, start, entry.length])
        entry.reserved = max(0, entry.reserved - len(tokens))

    def release(self, entry: Entry) -> bool:
        """The request ended: its entry stays as a cached prompt (False: nothing worth keeping, removed)."""
        self.targets.pop(entry.seq_id, None)
        entry.running, entry.reserved = False, 0
        self.touch(entry)
        if not entry.length or not self.reuse_prefix:
            self.remove(entry)
            return False
        return True

    def touch(self, entry: Entry) -> None:
        entry.last_used = next(self._clock)

    def remove(self, entry: Entry) -> None:
        self.targets.pop(entry.seq_id, None)
        self.entries.remove(entry)


def clip_segments(segments: list[list[int]], length: int) -> list[list[int]]:
    clipped = []
    for origin, start, end in segments:
        if start >= length:
            break
        clipped.append([origin, start, min(end, length)])
    return clipped


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length
