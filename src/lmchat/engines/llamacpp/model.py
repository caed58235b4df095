"""A GGUF model and one llama.cpp context for many sequences: a unified KV cache of ``kv_cells`` cells shared by up
to ``num_seq_ids`` sequence ids, created through llama.cpp's own API (``llama-cpp-python``'s ``Llama`` class runs
one sequence per context and has no way to ask for more).

:class:`LoadedModel` offers the few calls the rest of the engine needs, named as ``Llama`` names them
(``tokenize``, ``detokenize``, ``n_vocab``, ``n_ctx``, ``token_bos``, ``token_eos``, ``metadata``, ``model``,
``ctx``), so the sampler chain builders take either.
"""

from __future__ import annotations

import functools

import contextlib
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
from llama_cpp import _internals

from lmchat.engines.llamacpp.settings import GGML_TYPES, LlamaCppSettings, default_threads
from lmchat.errors import EngineError, ModelNotFoundError


@dataclass(frozen=True)
class ContextShape:
    """The context's size, decided by the engine from the model config and the settings."""

    kv_cells: int  # cells of the unified KV cache (kv_cache_tokens)
    num_seq_ids: int  # sequence ids: running sequences plus cached prompts
    n_batch: int  # most tokens in one llama_decode: llamacpp_config.n_batch, at most kv_cells


class LoadedModel:
    def __init__(self, path: Path, settings: LlamaCppSettings, shape: ContextShape) -> None:
        self._stack = contextlib.ExitStack()
        try:
            self._model = _internals.LlamaModel(path_model=str(path), params=model_params(settings),
                                                verbose=settings.verbose)
        except ValueError as exc:  # "Failed to load model from file"
            raise ModelNotFoundError(f"llama.cpp could not load {path}: {exc}") from None
        self._stack.callback(self._model.close)
        self.n_ctx_train = self._model.n_ctx_train()
        self.context_length = min(settings.n_ctx or self.n_ctx_train, shape.kv_cells)
        try:
            self._context = _internals.LlamaContext(model=self._model, params=context_params(settings, shape),
                                                    verbose=settings.verbose)
        except ValueError as exc:
            self.close()
            raise EngineError(f"llama.cpp could not create a context of {shape.kv_cells} KV cells for {path}: "
                              f"{exc}; lower kv_cache_tokens.") from None
        self._stack.callback(self._context.close)
        self.threads = (self._context.params.n_threads, self._context.params.n_threads_batch)
        self._n_vocab = self._model.n_vocab()
        self.metadata = self._model.metadata()

    @property
    def model(self):
        return self._model.model

    @property
    def llama_model(self) -> _internals.LlamaModel:
        """The model's wrapper (a second context, for embeddings, is made on it)."""
        return self._model

    @property
    def ctx(self):
        return self._context.ctx

    @property
    def memory(self):
        return self._context.memory

    def n_vocab(self) -> int:
        return self._n_vocab

    def n_ctx(self) -> int:
        """The longest context of one sequence (prompt plus answer)."""
        return self.context_length

    def token_bos(self) -> int:
        return self._model.token_bos()

    def token_eos(self) -> int:
        return self._model.token_eos()

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = True) -> list[int]:
        return self._model.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return self._model.detokenize(tokens, special=special)

    @functools.cached_property
    def end_of_generation_ids(self) -> frozenset[int]:
        """Every token that ends a generation (llama.cpp's end-of-generation tokens), read once."""
        return frozenset(t for t in range(self.n_vocab()) if llama_cpp.llama_vocab_is_eog(self._model.vocab, t))

    def is_end_of_generation(self, token: int) -> bool:
        """True for the model's end-of-sequence and end-of-turn tokens (llama.cpp's "EOG" set)."""
        return bool(llama_cpp.llama_vocab_is_eog(self._model.vocab, token))

    def close(self) -> None:
        self._stack.close()


def model_params(settings: LlamaCppSettings) -> llama_cpp.llama_model_params:
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if settings.n_gpu_layers == -1 else settings.n_gpu_layers
    params.main_gpu = settings.main_gpu
    params.use_extra_bufts = settings.repack
    return params


def context_params(settings: LlamaCppSettings, shape: ContextShape) -> llama_cpp.llama_context_params:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = shape.kv_cells
    params.n_batch = shape.n_batch
    params.n_ubatch = min(settings.n_ubatch, shape.n_batch)
    params.n_seq_max = shape.num_seq_ids
    params.kv_unified = True
    return _with_shared_settings(params, settings)


def _with_shared_settings(params: llama_cpp.llama_context_params,
                          settings: LlamaCppSettings) -> llama_cpp.llama_context_params:
    """What every context on the model takes from the settings alike: threads, flash attention, K/V types, RoPE."""
    threads = settings.n_threads or default_threads()
    params.n_threads, params.n_threads_batch = threads, settings.n_threads_batch or threads
    params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn
                              else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    params.type_k, params.type_v = GGML_TYPES[settings.type_k], GGML_TYPES[settings.type_v]
    params.rope_freq_base, params.rope_freq_scale = settings.rope_freq_base, settings.rope_freq_scale
    params.no_perf = True
    return params


def side_context(llm: LoadedModel, settings: LlamaCppSettings, n_ctx: int, n_batch: int, purpose: str,
                 **extra: object) -> _internals.LlamaContext:
    """A second context on ``llm``'s model for one sequence at a time (embeddings, prompt scoring), with what the
    generation context has in common with it: threads, flash attention, K/V types, RoPE; ``extra``: more
    ``llama_context_params`` fields (``embeddings``, ``pooling_type``). ``purpose`` names it in errors."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
    params.n_seq_max = 1
    _with_shared_settings(params, settings)
    for name, value in extra.items():
        setattr(params, name, value)
    try:
        return _internals.LlamaContext(model=llm.llama_model, params=params, verbose=settings.verbose)
    except ValueError as exc:
        raise EngineError(f"llama.cpp could not create {purpose} context of {n_ctx} tokens: {exc}") from None
