"""Map lmchat's :class:`SamplingParams` to what KTransformers honours, as plain dicts (no ktransformers import).

KTransformers' ``prefill_and_generate`` samples with the model's ``GenerationConfig``; the engine sets one per
request (requests are serialised), so only the options a ``GenerationConfig`` warper applies are supported.
"""

from __future__ import annotations

from typing import Any

from lmchat.generation.sampling import SamplingParams

# What the engine can honour; the facade rejects everything else before any work starts. ``n`` is run by
# repetition, ``stop`` strings by the facade, the budget by ``max_new_tokens``.
SUPPORTED_OPTIONS = frozenset(
    {"n", "max_new_tokens", "max_length", "do_sample", "temperature", "top_p", "top_k", "stop",
     "include_stop_str_in_output"}  # the last is applied by lmchat itself (chat.sequences), for every engine
)

# LLaMA-Factory's KTransformers keys (ModelConfig settings); ``ktransformers_config`` may add ``gguf_path``.
KT_KEYS = ("kt_optimize_rule", "cpu_infer", "chunk_size", "kt_maxlen", "kt_use_cuda_graph", "kt_mode", "kt_force_think")


def kt_settings(config: Any) -> dict[str, Any]:
    """The engine's settings: the config's kt_* keys, overridden by ``ktransformers_config`` entries."""
    settings: dict[str, Any] = {"gguf_path": None, **{key: getattr(config, key) for key in KT_KEYS}}
    settings.update(getattr(config, "ktransformers_config", None) or {})
    return settings


def to_ktransformers_generation_config(params: SamplingParams) -> dict[str, Any]:
    """``transformers.GenerationConfig`` fields for one request."""
    if params.is_greedy:
        return {"do_sample": False}
    return {
        "do_sample": True,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,  # 0 disables top-k in transformers too
    }


def to_ktransformers_generate_kwargs(settings: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """Keyword arguments of ``prefill_and_generate`` besides the model, tokenizer and input ids."""
    return {
        "max_new_tokens": max_new_tokens,
        "use_cuda_graph": settings["kt_use_cuda_graph"],
        "mode": settings["kt_mode"],
        "force_think": settings["kt_force_think"],
        "chunk_size": settings["chunk_size"],
    }


def piece_finish_reason(aborted: bool, generated: int, budget: int) -> str:
    """Why a ``prefill_and_generate`` answer ended: an abort, the token budget, or else its end of turn."""
    if aborted:
        return "abort"
    return "length" if generated >= budget else "stop"
