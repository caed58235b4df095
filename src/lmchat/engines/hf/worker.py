"""The one thread that owns the model: continuous batching.

Every step: (1) prompt chunks of new requests are prefilled, up to ``prefill_chunk_tokens`` tokens, so running
streams keep flowing while others join; a new request first copies the keys/values of the longest prompt prefix it
shares with a running one (the system prompt, usually); (2) one forward pass decodes one token for every running
sequence; (3) each sequence samples with its own options and generator, emits its event, and leaves the batch when
it stops. Aborted requests leave at the next step; scoring jobs run between steps. Which request runs when is the
:class:`Scheduler`'s business; the forward passes are the runner's.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from lmchat.engines.events import Finished, TextDelta, TokenLogprob
from lmchat.engines.hf.multimodal import prefill_media_chunk, shareable_length
from lmchat.engines.hf.lora import LoraBank
from lmchat.engines.hf.native_switch import NativeSwitch
from lmchat.engines.hf.runner import DynamicRunner, pick_runner
from lmchat.engines.hf.sampler import apply_penalties, choose_token, logprob_event, vocabulary_texts
from lmchat.engines.hf.scheduler import Scheduler
from lmchat.engines.hf.sequence import RequestState
from lmchat.engines.threaded import delivered_together
from lmchat.errors import (
    ContextLengthError,
    EngineClosedError,
    EngineDeadError,
    EngineError,
    InvalidRequestError,
)
from lmchat.structured.masks import StepMasks

logger = logging.getLogger(__name__)
MIN_SHARED_PREFIX = 4  # shorter common prefixes are recomputed rather than copied


class ModelWorker:
    """Runs every forward pass of one model on its own thread."""

    def __init__(self, *, max_batch_size: int, kv_cache_tokens: int, prefill_chunk_tokens: int,
                 packed_weights: str, native_decode: str, max_lora_rank: int = 64, max_loras: int = 8,
                 quantized_activations: str = "off") -> None:
        """The limits and settings come from :class:`~lmchat.config.model_config.ModelConfig` (its defaults)."""
        self.model: Any = None
        self.tokenizer: Any = None
        self.runner: Any = None
        self.scheduler = Scheduler(max_batch_size, kv_cache_tokens)
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.packed_weights = packed_weights
        self.native_decode = native_decode
        self.quantized_activations = quantized_activations
        self.native: NativeSwitch | None = None  # the way onto the native kernels, once a model is attached
        self.lora: LoraBank | None = None  # the named adapters, from the first one loaded (load_adapter)
        self.lora_limits = (max_lora_rank, max_loras)
        self._inbox: queue.Queue[RequestState | tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._aborted: dict[str, int] = {}  # request id -> the step count when its abort arrived
        self._lock = threading.Lock()
        self._closed: tuple[type[EngineClosedError], str] | None = None  # once the thread stops serving
        self.failure: BaseException | None = None  # what stopped the thread, when it was not asked to stop
        self.num_steps = 0
        self.finished: collections.deque[tuple[str, str, int]] = collections.deque(maxlen=256)
        self.abort_delays: collections.deque[int] = collections.deque(maxlen=1024)  # steps from abort to leaving
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=4096)  # decode rows, per step
        self.peak_cache_bytes = 0
        self._masks = StepMasks()  # constrained rows' token masks (structured output)
        self._vocabulary_texts: list[str] | None = None  # every token's text, for top_logprobs -1
        self._thread = threading.Thread(target=self._run, name="lmchat-hf-worker", daemon=True)
        self._thread.start()

    def attach(self, model: Any, tokenizer: Any, device: torch.device, generative: bool = True) -> None:
        """Serve this model. Call it through :meth:`call`, like the loading itself: every torch call for the model
        runs on this one thread, because a second thread running torch work makes libgomp (PyTorch's OpenMP) give up
        spin-waiting (more OpenMP threads than cores), which slows every small operation on a small CPU (measured in
        docs/architecture-hf-engine.md)."""
        self.model, self.tokenizer = model, tokenizer
        self.native = NativeSwitch(self.native_decode if generative else "off", model, self.quantized_activations)
        self.native.before_runner()
        self.runner = pick_runner(model, device, self.packed_weights) if generative else DynamicRunner(model, device)
        self.native.start(self.runner)

    @property
    def native_build(self) -> Any:
        """The native kernels' build while it is awaited (None once in use or given up)."""
        return self.native.build if self.native is not None else None

    def load_adapter(self, name: str, path: str) -> Any:
        """Read and install a named adapter (through :meth:`call`, between steps)."""
        if self.lora is None:
            self.lora = LoraBank.for_runner(self.model, self.runner, *self.lora_limits)
        return self.lora.load(name, path)

    def unload_adapter(self, name: str) -> None:
        self.lora.unload(name)

    def _adapter_rows(self, sequences: list[RequestState]) -> Any:
        """The block runs a forward pass of ``sequences``' rows, each with its adapter."""
        if self.lora is None:
            return contextlib.nullcontext()
        return self.lora.step.running([s.adapter_slot for s in sequences])

    # --- called from other threads ------------------------------------------------------------------
    def submit(self, sequence: RequestState) -> None:
        """Queue a request; once the thread has stopped (closed, or dead after a failure) it fails at once."""
        with self._lock:
            if self._closed is None:
                self._inbox.put(sequence)
                return
        sequence.emit(self._closed_error())

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.setdefault(request_id, self.num_steps)

    def call(self, job: Callable[[], Any]) -> Future:
        """Run ``job`` on the worker thread between steps."""
        future: Future = Future()
        with self._lock:
            if self._closed is None:
                self._inbox.put((job, future))
                return future
        future.set_exception(self._closed_error())
        return future

    def check_health(self) -> None:
        """Raise :class:`EngineDeadError` once the thread has stopped after a failure."""
        if self.failure is not None:
            raise self._closed_error()

    def _closed_error(self) -> EngineClosedError:
        error_class, message = self._closed or (EngineClosedError, "The transformers engine is closed.")
        return error_class(message)

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=60)

    @property
    def num_active(self) -> int:
        """Requests running or waiting for a place in the batch."""
        return self.scheduler.num_active

    # --- the worker thread: scheduling ------------------------------------------------------------------
    def _run(self) -> None:
        """Serve until asked to stop. Whatever escapes the per-request and per-step guards stops the thread for
        good: every request it holds, and every later one, then fails at once with :class:`EngineDeadError`."""
        failure: BaseException | None = None
        closed: tuple[type[EngineClosedError], str] = (EngineClosedError, "The transformers engine is closed.")
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - reported to every waiting and later request
            logger.critical("The transformers engine's worker thread stopped after an internal error; it serves "
                            "no more requests", exc_info=exc)
            failure, closed = exc, (EngineDeadError, (
                f"The transformers engine stopped after an internal error ({type(exc).__name__}: {exc}) and serves "
                "no more requests; restart lmchat."))
        with self._lock:
            self._closed, self.failure = closed, failure
        self._fail_everything()

    @torch.inference_mode()
    def _serve(self) -> None:
        while self._take_inbox(block=self.scheduler.is_idle):
            self._drop_aborted()
            if not self.scheduler.is_idle:
                self._guarded_step()

    def _fail_everything(self) -> None:
        """Fail the requests still held and those left in the inbox (nothing is left hanging)."""
        for sequence in list(self.scheduler):
            sequence.emit(self._closed_error())
        self.scheduler.running.clear()
        self.scheduler.waiting.clear()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, RequestState):
                item.emit(self._closed_error())
            elif item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(self._closed_error())

    def _take_inbox(self, block: bool) -> bool:
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
            if isinstance(item, RequestState):
                self._queue(item)
            else:
                self._run_job(*item)

    def _queue(self, sequence: RequestState) -> None:
        if sequence.request.adapter is not None:
            try:
                sequence.adapter_slot = LoraBank.slot_in(self.lora, sequence.request.adapter)
            except InvalidRequestError as exc:
                return sequence.emit(exc)
        if not sequence.prompt_tokens:
            sequence.emit(InvalidRequestError("The prompt is empty: nothing to continue.", param="messages"))
        elif not self.scheduler.add(sequence):
            sequence.emit(ContextLengthError(
                f"The prompt has {sequence.prompt_tokens} tokens; the KV cache holds "
                f"{self.scheduler.kv_cache_tokens} (kv_cache_tokens).", param="messages"))

    def _run_job(self, job: Callable[[], Any], future: Future) -> None:
        if future.set_running_or_notify_cancel():
            try:
                with torch.inference_mode(False):  # jobs (loading, scoring) choose their own mode
                    future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)

    def _drop_aborted(self) -> None:
        """Aborted requests leave before the next step (ids of requests already gone are forgotten)."""
        with self._lock:
            if not self._aborted:
                return
            requested, self._aborted = self._aborted, {}
        for sequence in [s for s in self.scheduler if s.request_id in requested]:
            self.abort_delays.append(self.num_steps - requested[sequence.request_id])
            self._finish(sequence, "abort")

    def _guarded_step(self) -> None:
        """One step; a failure outside the per-request guards ends the running requests with an error (the KV
        cache they share may be inconsistent) and the engine goes on with the waiting ones."""
        try:
            self._step()
        except Exception as exc:  # noqa: BLE001 - reported to the requests it cost
            failed = list(self.scheduler.running)
            logger.exception("A step of the transformers engine failed; %d running request(s) end with an error",
                             len(failed), exc_info=exc)
            for sequence in failed:
                self.scheduler.remove(sequence)
            self.runner.release()
            for sequence in failed:
                sequence.emit(EngineError(f"The transformers engine failed during this request "
                                          f"({type(exc).__name__}: {exc}); other requests go on."))

    def _step(self) -> None:
        self.num_steps += 1
        if self.native is not None and self.native.build is not None:
            self.native.poll(self.runner)
        self._prefill_step()
        self._decode_step()
        self.peak_cache_bytes = max(self.peak_cache_bytes, self.runner.num_bytes)
        if self.scheduler.is_idle:
            self.runner.release()

    # --- prefill ----------------------------------------------------------------------------------------
    def _prefill_step(self) -> None:
        """Prefill prompt chunks, oldest request first, up to ``prefill_chunk_tokens`` tokens in all. Chunks of
        text prompts without adapters go together in one forward pass where the runner takes several rows'
        chunks at once (the native step: one multiply per weight for all their tokens); the others one by one."""
        budget = self.prefill_chunk_tokens
        together: list[tuple[RequestState, int, int]] = []
        while budget > 0 and (sequence := self._next_to_prefill(together)) is not None:
            try:
                if self._joins_others(sequence):
                    if self._waits_for_prefix(sequence, together):
                        break  # next step it copies the prefix a chunk planned now is about to compute
                    start, end = self._plan_chunk(sequence, budget)
                    together.append((sequence, start, end))
                    budget -= end - start
                else:
                    budget -= self._prefill(sequence, budget)
            except Exception as exc:  # noqa: BLE001 - this request fails with an EngineError; the batch goes on
                self._fail([sequence], exc)
        if together:
            self._prefill_together(together)

    def _next_to_prefill(self, planned: list[tuple[RequestState, int, int]]) -> RequestState | None:
        taken = {id(sequence) for sequence, _, _ in planned}
        partial = next((s for s in self.scheduler.running if s.is_prefilling and id(s) not in taken), None)
        return partial or self.scheduler.admit()

    def _joins_others(self, sequence: RequestState) -> bool:
        return (sequence.request.media_inputs is None and not sequence.adapter_slot
                and self.runner.takes_prompt_rows)

    def _waits_for_prefix(self, sequence: RequestState, planned: list[tuple[RequestState, int, int]]) -> bool:
        """Whether a new prompt shares a longer prefix with a chunk planned in this step (not computed yet) than
        with what the cache holds: it then waits a step and copies it instead of computing it again."""
        if sequence.num_cached or not self.runner.can_share_prefix or not planned:
            return False
        held = max((_shared_prefix(sequence, other, other.num_cached) for other in self.scheduler.running), default=0)
        coming = max(_shared_prefix(sequence, other, end) for other, _, end in planned)
        return coming >= MIN_SHARED_PREFIX and coming > held

    def _plan_chunk(self, sequence: RequestState, budget: int) -> tuple[int, int]:
        """The cache made ready for ``sequence``'s next chunk (its shared prefix copied) -> the chunk's span."""
        self.runner.reserve(len(self.scheduler.running), sequence.prompt_tokens)
        if sequence.num_cached == 0:
            self._share_prefix(sequence)
        start = sequence.num_cached
        return start, min(start + budget, sequence.prompt_tokens)

    def _prefill(self, sequence: RequestState, budget: int) -> int:
        """Prefill one chunk of ``sequence``'s prompt; returns the tokens computed."""
        start, end = self._plan_chunk(sequence, budget)
        with self._adapter_rows([sequence]):
            if sequence.request.media_inputs is not None:  # images/video/audio: the prompt's embeddings, by chunk
                logits, end = prefill_media_chunk(self.runner, self.model, sequence, start, end)
            else:
                logits = self.runner.prefill(sequence.slot, sequence.ids[start:end], start)
        sequence.num_cached = end
        if not sequence.is_prefilling:
            self._accept([sequence], logits[None])
        return end - start

    def _prefill_together(self, planned: list[tuple[RequestState, int, int]]) -> None:
        """The planned chunks of several rows in one forward pass; the prompts they complete take their first
        token together."""
        sequences = [sequence for sequence, _, _ in planned]
        try:
            logits = self.runner.prefill_rows([(s.slot, s.ids[start:end], start) for s, start, end in planned])
        except Exception as exc:  # noqa: BLE001 - these requests fail with an EngineError; the batch goes on
            return self._fail(sequences, exc)
        done = []
        for (sequence, _, end), row in zip(planned, logits):
            sequence.num_cached = end
            if not sequence.is_prefilling:
                done.append((sequence, row))
        if done:
            self._accept([sequence for sequence, _ in done], torch.stack([row for _, row in done]))

    def _share_prefix(self, sequence: RequestState) -> None:
        """Copy the keys/values of the longest prompt prefix a running sequence already holds."""
        if not self.runner.can_share_prefix:
            return
        best, length = None, MIN_SHARED_PREFIX - 1
        for other in self.scheduler.running:
            shared = _shared_prefix(sequence, other, other.num_cached)
            shared = shareable_length(self.model, sequence.request.media_inputs, other.request.media_inputs, shared)
            if shared > length:
                best, length = other, shared
        if best is not None:
            self.runner.copy_prefix(best.slot, sequence.slot, length)
            sequence.num_cached = sequence.reused = length

    # --- decode -----------------------------------------------------------------------------------------
    def _decode_step(self) -> None:
        """One forward pass: one new token for every running sequence that has finished its prefill."""
        rows = list(self.scheduler.running)
        active = [s.is_decoding for s in rows]
        if not any(active):
            return
        tokens = [s.ids[-1] if is_active else 0 for s, is_active in zip(rows, active)]
        positions = [s.num_cached for s in rows]
        self.runner.reserve(len(rows), max(positions) + 1)
        try:
            with self._adapter_rows(rows):
                logits = self.runner.decode(tokens, positions, active, [s.position_offset for s in rows])  # [B, V]
        except Exception as exc:  # noqa: BLE001 - the decoding requests fail with an EngineError
            return self._fail([s for s, is_active in zip(rows, active) if is_active], exc)
        decoding = [i for i, is_active in enumerate(active) if is_active]
        for i in decoding:
            rows[i].num_cached += 1
        self.batch_sizes.append(len(decoding))
        with delivered_together(settle=True):  # every row's token: one wake-up of each consumer loop, then theirs
            self._accept([rows[i] for i in decoding], logits[decoding])

    # --- sampling and events ----------------------------------------------------------------------------
    def _accept(self, sequences: list[RequestState], logits: torch.Tensor) -> None:
        """Choose each sequence's next token from its logits row [n, vocab] and emit it (the batch-wide argmax for
        plain-greedy rows, their own sampling otherwise), after the constrained rows' masks."""
        raw = logits.float().cpu().contiguous()
        unmasked = {}
        if any(s.guide for s in sequences):  # constrained rows: their masks written into their logits
            logprobs = [s.request.params.logprobs for s in sequences]
            unmasked = self._masks.apply([s.guide for s in sequences], raw, logprobs)
        greedy = raw.argmax(dim=-1).tolist()
        for row, sequence in enumerate(sequences):
            try:
                token_id = greedy[row] if is_plain_greedy(sequence) else self._sample(sequence, raw[row])
                self._emit_token(sequence, unmasked.get(row, raw[row]), token_id)
            except Exception as exc:  # noqa: BLE001 - this request ends with an EngineError; the batch goes on
                self._fail([sequence], exc)

    def _sample(self, sequence: RequestState, raw: torch.Tensor) -> int:
        params = sequence.request.params
        needs_counts = params.presence_penalty or params.frequency_penalty
        if needs_counts and sequence.counts is None:
            sequence.counts = torch.zeros(raw.numel(), dtype=torch.int32)
        logits = apply_penalties(raw, params, torch.tensor(sequence.ids), sequence.counts)
        if sequence.rules is not None:
            sequence.mask_by_rules(logits)
        return choose_token(logits, params, sequence.generator)

    def _emit_token(self, sequence: RequestState, raw: torch.Tensor, token_id: int) -> None:
        sequence.ids.append(token_id)
        sequence.generated += 1
        if sequence.counts is not None:
            sequence.counts[token_id] += 1
        if token_id in sequence.stop_ids:
            sequence.last_token = self.tokenizer.convert_ids_to_tokens(token_id)
            return self._finish(sequence, "stop")
        text = sequence.detokenizer.add(token_id)
        sequence.emit(TextDelta(text, 1, (token_id,), self._logprobs(sequence, raw, token_id)))
        if sequence.guide is not None:  # a constrained answer ends as soon as its constraint is complete
            try:
                complete = sequence.guide.accept(token_id)
            except EngineError as exc:
                return self._fail([sequence], exc)
            if complete:
                return self._finish(sequence, "stop")
        if sequence.generated >= sequence.budget:
            self._finish(sequence, "length")

    def _logprobs(self, sequence: RequestState, raw: torch.Tensor, token_id: int) -> tuple[TokenLogprob, ...]:
        params = sequence.request.params
        if not params.logprobs:
            return ()
        if params.top_logprobs == -1 and self._vocabulary_texts is None:  # every token's text, decoded once
            self._vocabulary_texts = vocabulary_texts(self.tokenizer, raw.numel())
        return (logprob_event(self.tokenizer, raw, token_id, params.top_logprobs, self._vocabulary_texts),)

    def _finish(self, sequence: RequestState, reason: str) -> None:
        tail = sequence.detokenizer.flush()
        if tail:
            sequence.emit(TextDelta(tail, 0))
        self._leave(sequence)
        self.finished.append((sequence.request_id, reason, sequence.generated))
        sequence.emit(Finished(reason, sequence.prompt_tokens, sequence.generated, sequence.last_token,
                               cached_tokens=sequence.reused))

    def _leave(self, sequence: RequestState) -> None:
        """Free the sequence's slot; the last running sequence's keys/values move into it."""
        moved = self.scheduler.remove(sequence)
        if moved is not None:
            other, old_slot = moved
            self.runner.move_row(old_slot, other.slot, other.num_cached)

    def _fail(self, sequences: list[RequestState], exc: Exception) -> None:
        logger.exception("Generation failed for %s", ", ".join(s.request_id for s in sequences), exc_info=exc)
        for sequence in sequences:
            self._leave(sequence)
            sequence.emit(EngineError(f"The transformers engine failed on this request ({type(exc).__name__}: "
                                      f"{exc}); other requests go on."))

    def _drain(self) -> None:
        for sequence in list(self.scheduler):
            self._finish(sequence, "abort")
        if self.runner is not None:
            self.runner.release()


def is_plain_greedy(sequence: RequestState) -> bool:
    """Greedy with nothing that changes the logits: the batch-wide argmax is this sequence's token."""
    params = sequence.request.params
    return params.is_greedy and sequence.rules is None and not (
        params.logit_bias or params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty)


def common_prefix(ids: list[int], other: list[int], other_length: int, limit: int) -> int:
    """Length of the common prefix of ``ids`` and ``other[:other_length]``, at most ``limit``."""
    length = min(limit, other_length)
    for i in range(length):
        if ids[i] != other[i]:
            return i
    return length


def _shared_prefix(sequence: RequestState, other: RequestState, other_length: int) -> int:
    """How many leading prompt tokens ``sequence`` could copy from ``other``'s first ``other_length`` positions:
    never its last prompt token (its logits are needed), and only under the same adapter (keys and values depend
    on it)."""
    if other is sequence or other.adapter_slot != sequence.adapter_slot:
        return 0
    return common_prefix(sequence.ids, other.ids, other_length, sequence.prompt_tokens - 1)
