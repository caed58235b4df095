"""The one thread that owns the model: it admits requests, steps each active sequence one token at a time
(round-robin, so every stream keeps flowing), and runs other model jobs (scoring) between steps."""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from lmchat.engines.base import GenerationRequest
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.errors import EngineError
from lmchat.generation.detokenize import IncrementalDetokenizer
from lmchat.engines.hf.sampler import apply_penalties, choose_token, make_generator, top_logprobs

logger = logging.getLogger(__name__)
Emit = Callable[[EngineEvent | BaseException], None]


@dataclass
class Sequence:
    """One request's state inside the worker."""

    request: GenerationRequest
    budget: int
    stop_ids: frozenset[int]
    emit: Emit
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator
    ids: list[int]
    generated: int = 0
    cache: Any = None
    counts: torch.Tensor | None = None
    last_token: str | None = field(default=None)

    @property
    def prompt_tokens(self) -> int:
        return len(self.ids) - self.generated


class ModelWorker:
    """Runs every forward pass of one model on its own thread."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self._inbox: queue.Queue[Sequence | tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._active: list[Sequence] = []
        self._aborted: set[str] = set()
        self._lock = threading.Lock()
        self.finished: collections.deque[tuple[str, str, int]] = collections.deque(maxlen=256)
        self._thread = threading.Thread(target=self._run, name="lmchat-hf-worker", daemon=True)
        self._thread.start()

    # --- called from other threads ------------------------------------------------------------------
    def submit(self, sequence: Sequence) -> None:
        self._inbox.put(sequence)

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    def call(self, job: Callable[[], Any]) -> Future:
        """Run ``job`` on the worker thread between steps."""
        future: Future = Future()
        self._inbox.put((job, future))
        return future

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=60)

    @property
    def num_active(self) -> int:
        return len(self._active)

    # --- the worker thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if not self._admit(block=not self._active):
                break
            for sequence in list(self._active):
                self._advance(sequence)

    def _admit(self, block: bool) -> bool:
        """Take new work from the inbox; False once asked to stop."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if item is None:
                self._drain()
                return False
            if isinstance(item, Sequence):
                self._active.append(item)
            else:
                self._run_job(*item)

    def _run_job(self, job: Callable[[], Any], future: Future) -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)

    def _advance(self, sequence: Sequence) -> None:
        request_id = sequence.request.request_id
        with self._lock:
            aborted = request_id in self._aborted
            self._aborted.discard(request_id) if aborted else None
        if aborted:
            return self._finish(sequence, "abort")
        try:
            self._step(sequence)
        except Exception as exc:
            logger.exception("Generation failed for request %s", request_id)
            self._active.remove(sequence)
            sequence.emit(EngineError(f"The transformers engine failed: {exc}"))

    @torch.inference_mode()
    def _step(self, sequence: Sequence) -> None:
        """One forward pass (prefill on the first step), one new token, one event."""
        new_ids = sequence.ids if sequence.cache is None else sequence.ids[-1:]
        inputs = torch.tensor([new_ids], device=self.device)
        output = self.model(input_ids=inputs, past_key_values=sequence.cache, use_cache=True, logits_to_keep=1)
        sequence.cache = output.past_key_values
        raw = output.logits[0, -1].float().cpu()
        self._emit_token(sequence, raw, self._sample(sequence, raw))

    def _sample(self, sequence: Sequence, raw: torch.Tensor) -> int:
        params = sequence.request.params
        needs_counts = params.presence_penalty or params.frequency_penalty
        if needs_counts and sequence.counts is None:
            sequence.counts = torch.zeros(raw.numel(), dtype=torch.int32)
        logits = apply_penalties(raw, params, torch.tensor(sequence.ids), sequence.counts)
        return choose_token(logits, params, sequence.generator)

    def _emit_token(self, sequence: Sequence, raw: torch.Tensor, token_id: int) -> None:
        sequence.ids.append(token_id)
        sequence.generated += 1
        if sequence.counts is not None:
            sequence.counts[token_id] += 1
        if token_id in sequence.stop_ids:
            sequence.last_token = self.tokenizer.convert_ids_to_tokens(token_id)
            return self._finish(sequence, "stop")
        text = sequence.detokenizer.add(token_id)
        sequence.emit(TextDelta(text, 1, (token_id,), self._logprobs(sequence, raw, token_id)))
        if sequence.generated >= sequence.budget:
            self._finish(sequence, "length")

    def _logprobs(self, sequence: Sequence, raw: torch.Tensor, token_id: int) -> tuple[TokenLogprob, ...]:
        params = sequence.request.params
        if not params.logprobs:
            return ()
        logprob, top = top_logprobs(raw, token_id, params.top_logprobs)
        token = self.tokenizer.decode([token_id])
        alternatives = tuple((self.tokenizer.decode([i]), i, lp) for i, lp in top)
        return (TokenLogprob(token, token_id, logprob, alternatives),)

    def _finish(self, sequence: Sequence, reason: str) -> None:
        tail = sequence.detokenizer.flush()
        if tail:
            sequence.emit(TextDelta(tail, 0))
        self._active.remove(sequence)
        sequence.cache = None
        self.finished.append((sequence.request.request_id, reason, sequence.generated))
        sequence.emit(Finished(reason, sequence.prompt_tokens, sequence.generated, sequence.last_token))

    def _drain(self) -> None:
        for sequence in list(self._active):
            self._finish(sequence, "abort")


def new_sequence(request: GenerationRequest, prompt_ids: list[int], budget: int, stop_ids: frozenset[int],
                 decode: Callable[[list[int]], str], emit: Emit) -> Sequence:
    return Sequence(
        request=request,
        budget=budget,
        stop_ids=stop_ids,
        emit=emit,
        detokenizer=IncrementalDetokenizer(decode, prompt_ids),
        generator=make_generator(request.params.seed),
        ids=list(prompt_ids),
    )
