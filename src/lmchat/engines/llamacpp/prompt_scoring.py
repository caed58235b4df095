"""Prompt log-probabilities for the llama.cpp engine (completions' ``echo`` with ``logprobs``, vLLM's
``prompt_logprobs``): a third llama.cpp context on the same model, made at the first such request, that decodes a
prompt with logits at every position (the generation context keeps only each step's last logits).

The prompt goes through in chunks of ``CHUNK`` tokens (each chunk's logits are read before the next, so the output
buffer holds ``CHUNK`` rows of the vocabulary, not the whole prompt's); log-probabilities are the raw logits'
log-softmax, as the engine reports them for generated tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import llama_cpp
import numpy as np
from llama_cpp import _internals

from lmchat.engines.events import TokenLogprob
from lmchat.engines.llamacpp.model import LoadedModel, side_context
from lmchat.engines.llamacpp.settings import LlamaCppSettings
from lmchat.errors import ContextLengthError, EngineError

CHUNK = 256


class PromptScorer:
    """One context of the model's length, used by one prompt at a time."""

    def __init__(self, llm: LoadedModel, settings: LlamaCppSettings) -> None:
        self.llm, self.n_ctx, self.n_vocab = llm, llm.n_ctx(), llm.n_vocab()
        self._lock = threading.Lock()
        self._context = _new_context(llm, settings, self.n_ctx)

    def score(self, token_ids: Sequence[int], top: int) -> list[TokenLogprob | None]:
        """Each prompt token's log-probability given those before it (``None`` for the first), its rank and the
        ``top`` likeliest tokens at its place."""
        ids = list(token_ids)
        if len(ids) > self.n_ctx:
            raise ContextLengthError(f"The prompt has {len(ids)} tokens; the model's context holds {self.n_ctx}.",
                                     param="prompt")
        with self._lock:
            rows = self._logits(ids)[:-1]  # row i predicts token i + 1
        targets = np.asarray(ids[1:])
        chosen = rows[np.arange(len(targets)), targets]
        ranks = (rows > chosen[:, None]).sum(axis=1) + 1
        peak = rows.max(axis=1, keepdims=True)
        norms = np.log(np.exp(rows - peak, dtype=np.float64).sum(axis=1)) + peak[:, 0]  # log-sum-exp per row
        best = np.argsort(-rows, axis=1, kind="stable")[:, :top] if top > 0 else np.zeros((len(targets), 0), int)
        entries: list[TokenLogprob | None] = [None]
        for i, token_id in enumerate(ids[1:]):
            alternatives = tuple((self._text(int(j)), int(j), float(rows[i, j] - norms[i])) for j in best[i])
            entries.append(TokenLogprob(self._text(token_id), token_id, float(chosen[i] - norms[i]), alternatives,
                                        rank=int(ranks[i])))
        return entries

    def _logits(self, ids: list[int]) -> np.ndarray:
        """float32 logits ``[len(ids), n_vocab]``: row i predicts token i + 1."""
        ctx = self._context.ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        rows = np.empty((len(ids), self.n_vocab), dtype=np.float32)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            batch = _internals.LlamaBatch(n_tokens=len(chunk), embd=0, n_seq_max=1, verbose=False)
            try:
                batch.set_batch(chunk, n_past=start, logits_all=True)
                status = llama_cpp.llama_decode(ctx, batch.batch)
                if status != 0:
                    raise EngineError(f"llama.cpp could not score the prompt (llama_decode returned {status}).")
                for i in range(len(chunk)):
                    pointer = llama_cpp.llama_get_logits_ith(ctx, i)
                    rows[start + i] = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
            finally:
                batch.close()
        return rows

    def _text(self, token_id: int) -> str:
        return self.llm.detokenize([token_id], special=True).decode("utf-8", errors="replace")

    def close(self) -> None:
        self._context.close()


def _new_context(llm: LoadedModel, settings: LlamaCppSettings, n_ctx: int) -> _internals.LlamaContext:
    return side_context(llm, settings, n_ctx, CHUNK, "a prompt-scoring")
