"""The llama.cpp engine's model thread: continuous batching over one context.

Every step: new requests join (an id and room from :class:`~lmchat.engines.llamacpp.kv_cells.KvCells`, the cells
of the longest prompt prefix another sequence holds copied with ``llama_memory_seq_cp``), aborted ones leave, then
ONE ``llama_decode`` evaluates each running sequence's last sampled token plus up to ``prefill_chunk_tokens`` of
waiting prompts, each token with its own ``seq_id`` and position; each sequence then samples from its own row of
logits with its own sampler chain. A finished sequence leaves at once; its cells stay as a cached prompt.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from dataclasses import dataclass

import llama_cpp

from lmchat.engines.events import Finished
from lmchat.engines.llamacpp.kv_cells import Admission, KvCells
from lmchat.engines.llamacpp.model import LoadedModel
from lmchat.engines.llamacpp.sampler import build_sampler
from lmchat.engines.llamacpp.sampling import to_llamacpp_kwargs
from lmchat.engines.llamacpp.sequence import Sequence
from lmchat.engines.threaded import delivered_together
from lmchat.errors import EngineClosedError, EngineError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Row:
    """One token of a step's batch."""

    sequence: Sequence
    token: int
    position: int
    wants_logits: bool


class BatchWorker:
    def __init__(self, model: LoadedModel, cells: KvCells, *, max_running: int, prefill_chunk_tokens: int,
                 max_batch_tokens: int) -> None:
        self.model, self.cells = model, cells
        self.max_running, self.prefill_chunk_tokens = max_running, prefill_chunk_tokens
        self.max_batch_tokens = max_batch_tokens
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.finished: collections.deque[tuple[str, str, int]] = collections.deque(maxlen=256)  # id, reason, tokens
        self.prefix_reuse: collections.deque[tuple[str, int]] = collections.deque(maxlen=256)  # id, reused tokens
        self.largest_batch = 0  # the most sequences one step decoded together (for tests and logs)
        self._inbox: queue.SimpleQueue[Sequence | None] = queue.SimpleQueue()
        self._stopping = False
        self._closed = False  # set, under the lock, once the thread takes nothing more
        self._lock = threading.Lock()
        self._batch = llama_cpp.llama_batch_init(max_batch_tokens, 0, 1)
        self._thread = threading.Thread(target=self._loop, name="lmchat-llamacpp", daemon=True)
        self._thread.start()

    # --- called from other threads ----------------------------------------------------------------------
    def submit(self, sequence: Sequence) -> None:
        with self._lock:
            if self._closed:
                raise EngineClosedError("The llamacpp engine is closed.")
            self._inbox.put(sequence)

    def stop(self) -> None:
        """Abort every request (each gets its Finished event) and end the thread; returns once it has ended."""
        self._stopping = True
        self._inbox.put(None)
        self._thread.join()

    # --- the model thread --------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stopping:
                self._receive(block=not (self.running or self.waiting))
                if self._stopping:
                    break
                self.step()
        except Exception as exc:  # noqa: BLE001  (every waiting caller gets a typed error, none hangs)
            logger.exception("The llamacpp engine's model thread failed.")
            for sequence in [*self.running, *self.waiting]:
                sequence.emit(EngineError(f"The llamacpp engine failed: {exc}"))
            self.running, self.waiting = [], collections.deque()
        finally:
            with self._lock:
                self._closed = True
                self._receive(block=False)
            for sequence in [*self.running, *self.waiting]:
                self._end(sequence, "abort")
            llama_cpp.llama_batch_free(self._batch)

    def _receive(self, block: bool) -> None:
        try:
            item = self._inbox.get(block=block)
            while True:
                if item is not None:
                    self.waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass

    def step(self) -> None:
        """One step: drop aborted requests, admit waiting ones, evaluate one batch, sample."""
        for sequence in [s for s in [*self.running, *self.waiting] if s.is_aborted()]:
            self._end(sequence, "abort")
        self._resolve_follows()
        self._admit()
        rows = self._plan()
        if rows and self._decode(rows):
            with delivered_together():  # every row's token: one wake-up of each consumer loop
                self._sample(rows)

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_running:
            sequence = self.waiting[0]
            admission = self.cells.admit(sequence.prompt, sequence.request.max_tokens)
            if admission is None:
                if not self.running:  # it cannot fit even alone: the facade's context check should prevent this
                    self.waiting.popleft()
                    sequence.emit(EngineError(f"The request needs {len(sequence.prompt)} prompt and "
                                              f"{sequence.request.max_tokens} answer tokens; the KV cache holds "
                                              f"{self.cells.num_cells} (kv_cache_tokens)."))
                return
            self.waiting.popleft()
            self._start(sequence, admission)

    def _start(self, sequence: Sequence, admission: Admission) -> None:
        for victim in admission.evicted:
            llama_cpp.llama_memory_seq_rm(self.model.memory, victim.seq_id, -1, -1)
        sequence.entry = admission.entry
        sequence.sampler = build_sampler(self.model, to_llamacpp_kwargs(sequence.request.params))
        self.running.append(sequence)
        if admission.source is not None and admission.reuse:
            sequence.follow = (admission.source, admission.reuse)
            self._resolve_follow(sequence)

    def _resolve_follows(self) -> None:
        for sequence in self.running:
            if sequence.follow is not None:
                self._resolve_follow(sequence)

    def _resolve_follow(self, sequence: Sequence) -> None:
        """Copy the prefix cells of the sequence's source once the source holds them (or has stopped)."""
        source, length = sequence.follow
        if source.running and source.length < length and source in self.cells.entries:
            return
        shared = self.cells.copy_prefix(sequence.entry, source, length) if source in self.cells.entries else 0
        if shared:
            llama_cpp.llama_memory_seq_cp(self.model.memory, source.seq_id, sequence.entry.seq_id, 0, shared)
        sequence.follow, sequence.reused = None, shared

    def _plan(self) -> list[Row]:
        """This step's batch: every decoding sequence's last token, then prompt pieces of prefilling ones."""
        rows = [Row(s, s.next_token, s.entry.length, True) for s in self.running if s.next_token is not None]
        room = min(self.prefill_chunk_tokens, self.max_batch_tokens - len(rows))
        for sequence in self.running:
            if room <= 0:
                break
            if not sequence.is_prefilling:
                continue
            start, tokens = sequence.prompt_chunk(room)
            last = len(sequence.prompt) - 1
            rows += [Row(sequence, token, start + i, start + i == last) for i, token in enumerate(tokens)]
            room -= len(tokens)
        return rows

    def _decode(self, rows: list[Row]) -> bool:
        """Evaluate the rows in one llama_decode; on failure, end the sequences in it with an error."""
        batch = self._batch
        for i, row in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = row.token, row.position, 1
            batch.seq_id[i][0], batch.logits[i] = row.sequence.entry.seq_id, row.wants_logits
        batch.n_tokens = len(rows)
        status = llama_cpp.llama_decode(self.model.ctx, batch)
        if status != 0:
            self._failed(rows, status)
            return False
        written: dict[Sequence, list[int]] = {}
        for row in rows:
            written.setdefault(row.sequence, []).append(row.token)
        for sequence, tokens in written.items():
            self.cells.wrote(sequence.entry, tokens)
            sequence.next_token = None
        self.largest_batch = max(self.largest_batch, len(written))
        return True

    def _failed(self, rows: list[Row], status: int) -> None:
        error = EngineError(f"llama.cpp could not evaluate a batch of {len(rows)} tokens (llama_decode returned "
                            f"{status}{': no room in the KV cache' if status == 1 else ''}).")
        for sequence in dict.fromkeys(row.sequence for row in rows):
            first = min(row.position for row in rows if row.sequence is sequence)
            llama_cpp.llama_memory_seq_rm(self.model.memory, sequence.entry.seq_id, first, -1)
            sequence.emit(error)
            self._leave(sequence, keep=False)

    def _sample(self, rows: list[Row]) -> None:
        for index, row in enumerate(rows):
            if row.wants_logits:
                finished = row.sequence.take_token(self.model, index)
                if finished is not None:
                    self._done(row.sequence, finished)

    def _end(self, sequence: Sequence, reason: str) -> None:
        self._done(sequence, sequence.finish(reason))

    def _done(self, sequence: Sequence, finished: Finished) -> None:
        """Record the finished sequence and take it out of the batch, then hand its caller the Finished event."""
        self._record(sequence, finished.reason)
        self._leave(sequence)
        sequence.emit(finished)

    def _record(self, sequence: Sequence, reason: str) -> None:
        self.finished.append((sequence.request_id, reason, sequence.generated))
        self.prefix_reuse.append((sequence.request_id, sequence.reused))

    def _leave(self, sequence: Sequence, keep: bool = True) -> None:
        """Take a sequence out of the batch; its cells stay as a cached prompt when worth keeping."""
        if sequence in self.waiting:
            self.waiting.remove(sequence)
            return
        self.running.remove(sequence)
        if sequence.sampler is not None:
            sequence.sampler.close()
            sequence.sampler = None
        entry = sequence.entry
        if not keep:
            self.cells.remove(entry)
            llama_cpp.llama_memory_seq_rm(self.model.memory, entry.seq_id, -1, -1)
        elif not self.cells.release(entry):
            llama_cpp.llama_memory_seq_rm(self.model.memory, entry.seq_id, -1, -1)
