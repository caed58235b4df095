"""Embeddings for the llama.cpp engine: a second llama.cpp context on the same model, made at the first embedding
request with ``embeddings`` on and a pooling type, used by one request at a time (the generation context and its
batch worker are untouched).

Pooling: :func:`gguf_pooling`. A GGUF whose pooling is ``rank`` (a reranker) gives scores, not embeddings: the engine
does not declare embeddings for it, with the reason.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import llama_cpp
from llama_cpp import _internals

from lmchat.engines.llamacpp.model import LoadedModel, side_context
from lmchat.engines.llamacpp.settings import LlamaCppSettings
from lmchat.errors import EngineError, UnsupportedError

POOLING = {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
           "last": llama_cpp.LLAMA_POOLING_TYPE_LAST}


def gguf_pooling(metadata: dict[str, str], setting: str) -> str:
    """The pooling to run: the ``pooling_type`` setting, else the GGUF's own (``<arch>.pooling_type``: mean, cls,
    last, or rank for a reranker), else (a chat model) the last token's state."""
    if setting != "auto":
        return setting
    arch = metadata.get("general.architecture", "")
    value = metadata.get(f"{arch}.pooling_type")
    return {"1": "mean", "2": "cls", "3": "last", "4": "rank"}.get(str(value), "last")


class EmbeddingContext:
    """One embeddings context of ``n_ctx`` tokens (each input is one sequence, decoded in one batch)."""

    def __init__(self, llm: LoadedModel, settings: LlamaCppSettings, pooling_type: str) -> None:
        if pooling_type not in POOLING:
            raise UnsupportedError(f"This GGUF's pooling ({pooling_type}) gives no embeddings.", param="model")
        self.llm, self.n_ctx = llm, llm.n_ctx()
        self._lock = threading.Lock()
        self._context = _new_context(llm, settings, self.n_ctx, POOLING[pooling_type])
        self.n_embd = llama_cpp.llama_model_n_embd(llm.model)

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled vector per input (raw: llama.cpp's output before any normalisation)."""
        with self._lock:
            return [self._embed_one(list(ids)) for ids in inputs]

    def _embed_one(self, ids: list[int]) -> list[float]:
        ctx = self._context.ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch = _internals.LlamaBatch(n_tokens=len(ids), embd=0, n_seq_max=1, verbose=False)
        try:
            batch.add_sequence(ids, 0, True)
            status = llama_cpp.llama_decode(ctx, batch.batch)
            if status != 0:
                raise EngineError(f"llama.cpp could not compute the embedding (llama_decode returned {status}).")
            pointer = llama_cpp.llama_get_embeddings_seq(ctx, 0)
            if not pointer:
                raise EngineError("llama.cpp gave no pooled embedding for the input.")
            return [float(x) for x in pointer[:self.n_embd]]
        finally:
            batch.close()

    def close(self) -> None:
        self._context.close()


def _new_context(llm: LoadedModel, settings: LlamaCppSettings, n_ctx: int, pooling: int) -> _internals.LlamaContext:
    # a non-causal encoder needs its whole input in one ubatch: n_batch = n_ubatch = n_ctx
    return side_context(llm, settings, n_ctx, n_ctx, "an embeddings", embeddings=True, pooling_type=pooling)
