"""Map lmchat's :class:`SamplingParams` to llama.cpp's sampler settings (no llama_cpp import needed)."""

from __future__ import annotations

from typing import Any

from lmchat.generation.sampling import SamplingParams

# llama.cpp reads this seed as "pick a random seed"; a request's own seed must never collide with it.
LLAMA_RANDOM_SEED = 0xFFFFFFFF


def to_llamacpp_kwargs(params: SamplingParams) -> dict[str, Any]:
    """The sampler settings for one request, named as ``Llama.create_completion`` names them.

    Stop strings, ``n``, the token budget and stop tokens are handled outside the sampler (by the facade and
    the engine's decode loop), so they are not part of this mapping. ``temperature == 0`` means greedy.
    """
    return {
        "temperature": 0.0 if params.is_greedy else params.temperature,
        "top_k": params.top_k,  # 0 keeps all tokens, in both lmchat and llama.cpp
        "top_p": params.top_p,
        "min_p": params.min_p,
        "repeat_penalty": params.repetition_penalty,
        "frequency_penalty": params.frequency_penalty,
        "presence_penalty": params.presence_penalty,
        "logit_bias": dict(params.logit_bias) if params.logit_bias else None,
        "seed": _llama_seed(params.seed),
    }


def _llama_seed(seed: int | None) -> int:
    if seed is None:
        return LLAMA_RANDOM_SEED
    seed &= 0xFFFFFFFF  # llama.cpp seeds are uint32
    return seed - 1 if seed == LLAMA_RANDOM_SEED else seed
