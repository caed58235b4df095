"""The llama.cpp engine: GGUF models (the default SmolLM2 GGUF as-is) through ``llama-cpp-python``.

lmchat renders the prompt (the GGUF's own chat template or a named one) and tokenizes it with the GGUF's
tokenizer; this engine only decodes. Requests are **serialised**: one model thread runs them one after another,
in arrival order, so concurrent requests never share (and corrupt) the single llama.cpp context. ``n > 1`` is
run by repetition (the facade expands it into ``n`` requests). A prompt reuses the keys/values of the aligned
blocks it shares with the previous prompt (multi-turn chats, repeated system prompts, ``n > 1``) without changing
any answer (see :class:`lmchat.engines.llamacpp.decode.PromptCache`); ``llamacpp_config: {reuse_prefix: false}``
turns that off.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llama_cpp import Llama

from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.llamacpp.cpu_backend import load_cpu_backend
from lmchat.engines.events import EngineEvent
from lmchat.engines.threaded import EventChannel
from lmchat.engines.llamacpp.decode import PREFILL_BLOCK, DecodeJob, PromptCache, run_job
from lmchat.errors import EngineClosedError, EngineError, InvalidRequestError, ModelNotFoundError
from lmchat.generation.sampling import SamplingParams
from lmchat.models.default import default_gguf_path
from lmchat.structured import ALL_KINDS

# Llama() settings lmchat chooses; a ``llamacpp_config`` dict in the model config overrides them. Two keys are
# lmchat's own: ``reuse_prefix`` (default true) and ``prefill_block`` (default 32), see decode.PromptCache.
DEFAULT_LLAMA_SETTINGS: dict[str, Any] = {"n_ctx": 0, "verbose": False}  # n_ctx 0: the GGUF's trained context


class LlamaCppEngine(BaseEngine):
    name = "llamacpp"
    capabilities = Capabilities(sampling_options=frozenset(SamplingParams.model_fields), constraints=ALL_KINDS)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.llm: Llama | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._aborted: set[str] = set()
        self._closing = False
        self.prompt_cache = PromptCache()
        self._lock = threading.Lock()
        self.finished: collections.deque[tuple[str, str, int]] = collections.deque(maxlen=256)  # id, reason, tokens
        self._grammars: Any = None  # (TokenizerGrammars, end-of-generation ids), at the first constraint

    async def start(self) -> None:
        path = resolve_gguf_path(self.config.model_name_or_path)
        settings = {**DEFAULT_LLAMA_SETTINGS, **(self.config.llamacpp_config or {})}
        self.prompt_cache = prompt_cache_from(settings)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmchat-llamacpp")
        load_cpu_backend()
        try:
            self.llm = await self._call(lambda: Llama(model_path=str(path), **settings))
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            raise ModelNotFoundError(f"llama.cpp could not load {path}: {exc}") from None
        self._info = model_info(self.llm, path)


    # --- tokenizer (the GGUF's own; special tokens in the rendered prompt are parsed as such) ---------------
    def tokenize(self, text: str) -> list[int]:
        return self._require_llm().tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._require_llm().detokenize(list(token_ids), special=True).decode("utf-8", "replace")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    # --- generation -------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        llm = self._require_llm()
        params = request.params
        prompt_ids = list(request.prompt_token_ids)
        if not prompt_ids:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        mask = await self._call(lambda: self._mask(params)) if params.constraint is not None else None
        channel = EventChannel(lambda: self._mark_aborted(request.request_id))
        job = DecodeJob(
            request=request,
            prompt_ids=prompt_ids,
            budget=request.max_tokens,
            stop_ids=frozenset(params.stop_token_ids),
            stop_at_end_of_generation=not params.ignore_eos,
            emit=channel.emit,
            is_aborted=lambda: self._closing or request.request_id in self._aborted,
            cache=self.prompt_cache,
            mask=mask,
        )
        self._require_executor().submit(self._run, llm, job)
        async for event in channel.events():
            yield event

    def _mask(self, params: SamplingParams) -> Any:
        """A constrained request's logits mask (on the model thread; the grammars are built once)."""
        from lmchat.engines.llamacpp.structured import build_grammars, new_mask

        llm = self._require_llm()
        if self._grammars is None:
            self._grammars = build_grammars(llm)
        grammars, end_ids = self._grammars
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else end_ids)
        return new_mask(grammars, params.constraint, stop_ids, llm.n_vocab())

    def _run(self, llm: Llama, job: DecodeJob) -> None:
        try:
            finished = run_job(llm, job)
            self.finished.append((job.request.request_id, finished.reason, finished.completion_tokens))
        except Exception as exc:  # noqa: BLE001  (handed to the waiting caller as a typed error)
            job.emit(EngineError(f"The llamacpp engine failed: {exc}"))
        finally:
            with self._lock:
                self._aborted.discard(job.request.request_id)

    async def abort(self, request_id: str) -> None:
        self._mark_aborted(request_id)

    def _mark_aborted(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    # --- lifecycle --------------------------------------------------------------------------------------
    async def _call(self, job):
        return await asyncio.wrap_future(self._require_executor().submit(job))

    def _require_llm(self) -> Llama:
        if self.llm is None:
            raise EngineClosedError("The llamacpp engine is closed.")
        return self.llm

    def _require_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise EngineClosedError("The llamacpp engine is closed.")
        return self._executor

    async def close(self) -> None:
        """Abort every running and queued request (each still gets its Finished event), then free the model."""
        self._closing = True
        executor, self._executor = self._executor, None
        llm, self.llm = self.llm, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
        if llm is not None:
            llm.close()


def resolve_gguf_path(model_name_or_path: str | None) -> Path:
    """A .gguf file, or the embedded default model when none is given."""
    if not model_name_or_path:
        return default_gguf_path()
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if len(files) == 1:
            return files[0]
        raise ModelNotFoundError(
            f"The llamacpp engine needs one .gguf file; {path} holds {len(files)}. Name the file itself."
        )
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF file not found: {path} (the llamacpp engine loads local .gguf files).")
    return path


def model_info(llm: Llama, path: Path) -> ModelInfo:
    """Name, chat template, special tokens and context length, all from the GGUF."""
    metadata = llm.metadata
    special = {}
    for name, token_id in (("bos_token", llm.token_bos()), ("eos_token", llm.token_eos())):
        if token_id >= 0:
            special[name] = llm.detokenize([token_id], special=True).decode("utf-8", "replace")
    return ModelInfo(
        name=metadata.get("general.name") or path.stem,
        chat_template=metadata.get("tokenizer.chat_template"),
        special_tokens=special,
        context_length=llm.n_ctx(),
    )


def prompt_cache_from(settings: dict[str, Any]) -> PromptCache:
    """Take lmchat's own ``reuse_prefix`` / ``prefill_block`` keys out of the ``Llama()`` settings."""
    block = settings.pop("prefill_block", PREFILL_BLOCK)
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise InvalidRequestError(
            f"llamacpp_config.prefill_block must be a positive whole number of tokens, got {block!r}.",
            param="llamacpp_config",
        )
    return PromptCache(block=block, enabled=bool(settings.pop("reuse_prefix", True)))
