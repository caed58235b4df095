"""The llama.cpp engine: GGUF models (the default SmolLM2 GGUF as-is) through ``llama-cpp-python``'s bindings of
llama.cpp's own API.

lmchat renders the prompt (the GGUF's own chat template or a named one) and tokenizes it with the GGUF's
tokenizer; this engine only decodes. Requests are batched continuously, the way llama-server's slots are: one
model thread (:mod:`~lmchat.engines.llamacpp.worker`) evaluates every running sequence in one ``llama_batch`` per
step, each with its own sequence id in one unified KV cache and its own sampler chain; sequences join and leave at
every step. A prompt reuses the cells of the longest prefix another sequence holds (multi-turn chats, repeated
system prompts, ``n > 1``). Settings: ``max_batch_size`` (sequences decoded together), ``kv_cache_tokens`` (cells
of the KV cache), ``prefill_chunk_tokens`` (prompt tokens per step), and ``llamacpp_config``
(:mod:`~lmchat.engines.llamacpp.settings`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import llama_cpp

from lmchat.engines.base import BaseEngine, Capabilities, GenerationRequest, ModelInfo
from lmchat.engines.pooling import EmbedRequest, PoolingInfo
from lmchat.engines.events import EngineEvent, TokenLogprob
from lmchat.engines.llamacpp.cpu_backend import load_cpu_backend
from lmchat.engines.llamacpp.kv_cells import KvCells
from lmchat.engines.llamacpp.model import ContextShape, LoadedModel
from lmchat.engines.llamacpp.native_log import route_native_logs
from lmchat.engines.llamacpp.sequence import LogitsHook, special_token_ids
from lmchat.engines.llamacpp.sequence import Sequence as BatchSequence
from lmchat.engines.llamacpp.settings import LlamaCppSettings, settings_from
from lmchat.engines.llamacpp.worker import BatchWorker
from lmchat.engines.threaded import EventChannel
from lmchat.errors import ConfigError, EngineClosedError, InvalidRequestError, ModelNotFoundError
from lmchat.generation.sampling import SamplingParams
from lmchat.generation.token_rules import TokenRules
from lmchat.models.default import default_gguf_path
from lmchat.structured import ALL_KINDS

logger = logging.getLogger(__name__)


class LlamaCppEngine(BaseEngine):
    name = "llamacpp"
    capabilities = Capabilities(sampling_options=frozenset(SamplingParams.model_fields), constraints=ALL_KINDS,
                                media_notes=tuple(
        (kind, f"llama.cpp reads {kind} only through the vision/audio projector GGUF of the model (its mmproj file, "
               "llama.cpp's mtmd library), which this engine does not load yet; for now use infer_backend huggingface "
               "with the original checkpoint")
        for kind in ("images", "videos", "audios")),
                                settings=frozenset({"pooling_type"}), pooling=frozenset({"embed"}),
                                pooling_notes=(("score", "the llamacpp engine does not score text pairs (reranker "
                                                "GGUFs) yet; use infer_backend huggingface with a cross-encoder"),))

    def __init__(self, config) -> None:
        super().__init__(config)
        self.settings: LlamaCppSettings = settings_from(config.llamacpp_config)
        self.llm: LoadedModel | None = None
        self.worker: BatchWorker | None = None
        self._aborted: set[str] = set()
        self._closing = False
        self._lock = threading.Lock()
        self._grammars: Any = None  # (TokenizerGrammars, end-of-generation ids), at the first constraint
        self._grammars_lock = asyncio.Lock()
        self._embedding: Any = None  # lmchat.engines.llamacpp.embedding.EmbeddingContext, at the first embedding
        self._embedding_lock = asyncio.Lock()  # also guards making the prompt scorer
        self._scorer: Any = None  # lmchat.engines.llamacpp.prompt_scoring.PromptScorer, at the first prompt scoring

    async def start(self) -> None:
        path = resolve_gguf_path(self.config.model_name_or_path)
        shape = context_shape(self.config, self.settings.n_batch)
        route_native_logs(self.settings.verbose)  # the one place, before llama.cpp's first line (backend load)
        load_cpu_backend()
        self.llm = await asyncio.to_thread(LoadedModel, path, self.settings, shape)
        cells = KvCells(shape.num_seq_ids, shape.kv_cells, reuse_prefix=self.settings.reuse_prefix)
        self.worker = BatchWorker(self.llm, cells, max_running=self.config.max_batch_size,
                                  prefill_chunk_tokens=self.config.prefill_chunk_tokens,
                                  max_batch_tokens=shape.n_batch)
        self._info = model_info(self.llm, path, self.config.pooling_type)
        if self._info.pooling.pooling_type == "rank":
            self.capabilities = dataclasses.replace(type(self).capabilities, pooling=frozenset(), pooling_notes=(
                ("embed", "this GGUF is a reranker (llama.cpp's rank pooling): it gives no embeddings"),
                *type(self).capabilities.pooling_notes))
        logger.info("llama.cpp: %s, up to %d sequences in one batch, a KV cache of %d cells (%s keys, %s values), "
                    "%d/%d threads.", path.name, self.config.max_batch_size, shape.kv_cells, self.settings.type_k,
                    self.settings.type_v, *self.llm.threads)

    # --- tokenizer (the GGUF's own; special tokens in the rendered prompt are parsed as such) ---------------
    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # add_bos adds the BOS token only where the GGUF's vocabulary asks for one, as llama.cpp's server does
        return self._require_llm().tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self._require_llm().detokenize(list(token_ids), special=True).decode("utf-8", "replace")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    # --- generation -------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        worker = self._require_worker()
        if not request.prompt_token_ids:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        request_id = request.request_id
        hook = await self._logits_hook(request)
        channel = EventChannel(lambda: self._mark_aborted(request_id))
        kept = special_token_ids(self._require_llm(), request.keep_special_tokens)
        worker.submit(BatchSequence(request, channel.emit, lambda: self._closing or request_id in self._aborted,
                                    logits_hook=hook, kept_ids=kept, rules=await self._token_rules(request)))
        try:
            async for event in channel.events():
                yield event
        finally:
            with self._lock:
                self._aborted.discard(request_id)

    async def _logits_hook(self, request: GenerationRequest) -> LogitsHook | None:
        """The request's own change to its logits before its sampler chain (see
        :class:`~lmchat.engines.llamacpp.sequence.LogitsHook`): a constrained request's grammar mask
        (:mod:`lmchat.engines.llamacpp.structured`); none for plain sampling. The vocabulary's grammars are built
        once (~1 s) and each request's matcher made off the caller's event loop."""
        params = request.params
        if params.constraint is None:
            return None
        from lmchat.engines.llamacpp.structured import build_grammars, new_mask

        llm = self._require_llm()
        async with self._grammars_lock:
            if self._grammars is None:
                self._grammars = await asyncio.to_thread(build_grammars, llm)
        grammars, end_ids = self._grammars
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else end_ids)
        return await asyncio.to_thread(new_mask, grammars, params.constraint, stop_ids, llm.n_vocab())

    async def _token_rules(self, request: GenerationRequest) -> TokenRules | None:
        """min_tokens, bad_words and allowed_token_ids; the vocabulary's end-of-generation ids are read once, off
        the caller's event loop, by the first request with min_tokens."""
        params = request.params
        end_ids: frozenset[int] = frozenset(params.stop_token_ids)
        if params.min_tokens and not params.ignore_eos:
            llm = self._require_llm()
            end_ids |= await asyncio.to_thread(lambda: llm.end_of_generation_ids)
        return TokenRules.of(params, end_ids, request.bad_words_ids)

    async def embed(self, request: EmbedRequest) -> list[list[float]]:
        """Pooled vectors from a second, embeddings-only context on the model (made at the first call)."""
        from lmchat.engines.llamacpp.embedding import EmbeddingContext

        llm = self._require_llm()
        async with self._embedding_lock:
            if self._embedding is None:
                self._embedding = await asyncio.to_thread(EmbeddingContext, llm, self.settings,
                                                          self.info.pooling.pooling_type)
        return await asyncio.to_thread(self._embedding.embed, request.inputs)

    async def prompt_logprobs(self, token_ids: Sequence[int], top: int = 0) -> list[TokenLogprob | None]:
        """From a second context on the model that keeps every position's logits (made at the first call; the
        batch worker's context is untouched), one prompt at a time, off the event loop."""
        from lmchat.engines.llamacpp.prompt_scoring import PromptScorer

        llm = self._require_llm()
        async with self._embedding_lock:
            if self._scorer is None:
                self._scorer = await asyncio.to_thread(PromptScorer, llm, self.settings)
        return await asyncio.to_thread(self._scorer.score, token_ids, top)

    async def abort(self, request_id: str) -> None:
        self._mark_aborted(request_id)

    def _mark_aborted(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    @property
    def finished(self):
        """(request id, finish reason, completion tokens) of the last requests, oldest first."""
        return self.worker.finished if self.worker is not None else ()

    # --- lifecycle --------------------------------------------------------------------------------------
    def _require_llm(self) -> LoadedModel:
        if self.llm is None:
            raise EngineClosedError("The llamacpp engine is closed.")
        return self.llm

    def _require_worker(self) -> BatchWorker:
        if self.worker is None or self._closing:
            raise EngineClosedError("The llamacpp engine is closed.")
        return self.worker

    async def close(self) -> None:
        """Abort every running and queued request (each still gets its Finished event), then free the model."""
        self._closing = True
        worker, llm = self.worker, self.llm
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        self.llm = None
        embedding, self._embedding = self._embedding, None
        scorer, self._scorer = self._scorer, None
        for context in (embedding, scorer):
            if context is not None:
                context.close()
        if llm is not None:
            llm.close()


def context_shape(config, n_batch: int) -> ContextShape:
    """The context's size from the engine-independent keys: ``max_batch_size`` sequences at once (at most
    llama.cpp's sequence ids, and what one llama_decode can hold), ``kv_cache_tokens`` cells. One llama_decode
    holds at most the whole cache, and llama.cpp sizes its output buffer for one token of each sequence id in one
    batch: more ids than ``n_batch`` abort the process (GGML_ASSERT), so the ids are at most ``n_batch``."""
    n_batch = min(n_batch, config.kv_cache_tokens)
    num_seq_ids = min(llama_cpp.llama_max_parallel_sequences(), n_batch)
    if config.max_batch_size > num_seq_ids:
        raise ConfigError(f"max_batch_size {config.max_batch_size} is more than the llamacpp engine can decode at "
                          f"once: at most {num_seq_ids} (llama.cpp's {llama_cpp.llama_max_parallel_sequences()} "
                          f"sequence ids, and the {n_batch} tokens one llama_decode holds: llamacpp_config.n_batch, "
                          "at most kv_cache_tokens).")
    return ContextShape(kv_cells=config.kv_cache_tokens, num_seq_ids=num_seq_ids, n_batch=n_batch)


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


def model_info(llm: LoadedModel, path: Path, pooling_type: str = "auto") -> ModelInfo:
    """Name, chat template, special tokens, context length and pooling, all from the GGUF."""
    from lmchat.engines.llamacpp.embedding import gguf_pooling

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
        vocab_size=llm.n_vocab(),
        pooling=PoolingInfo(embedding_size=llama_cpp.llama_model_n_embd(llm.model),
                            pooling_type=gguf_pooling(metadata, pooling_type),
                            embedding_model=f"{metadata.get('general.architecture')}.pooling_type" in metadata),
    )
