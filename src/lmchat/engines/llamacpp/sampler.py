"""Build one request's llama.cpp sampler chain from :func:`~lmchat.engines.llamacpp.sampling.to_llamacpp_kwargs`.

The chain applies the options in lmchat's (and transformers') order: penalties, logit bias, temperature, then
top-k, top-p and min-p, then a seeded draw; a greedy request ends with argmax instead.
"""

from __future__ import annotations

from typing import Any

from llama_cpp import Llama
from llama_cpp._internals import LlamaSampler  # llama-cpp-python's own wrapper; it frees the chain on close()


def build_sampler(llm: Llama, settings: dict[str, Any]) -> LlamaSampler:
    sampler = LlamaSampler()
    if _has_penalties(settings):
        sampler.add_penalties(
            n_vocab=llm.n_vocab(),
            penalty_last_n=llm.n_ctx(),  # the whole answer, as transformers and vLLM do (llama.cpp defaults to 64)
            penalty_repeat=settings["repeat_penalty"],
            penalty_freq=settings["frequency_penalty"],
            penalty_present=settings["presence_penalty"],
        )
    if settings["logit_bias"]:
        sampler.add_logit_bias(llm.n_vocab(), settings["logit_bias"])
    if settings["temperature"] == 0:
        sampler.add_greedy()
        return sampler
    sampler.add_temp(settings["temperature"])
    if settings["top_k"] > 0:
        sampler.add_top_k(settings["top_k"])
    if settings["top_p"] < 1:
        sampler.add_top_p(settings["top_p"], 1)
    if settings["min_p"] > 0:
        sampler.add_min_p(settings["min_p"], 1)
    sampler.add_dist(settings["seed"])
    return sampler


def _has_penalties(settings: dict[str, Any]) -> bool:
    return (settings["repeat_penalty"], settings["frequency_penalty"], settings["presence_penalty"]) != (1, 0, 0)
