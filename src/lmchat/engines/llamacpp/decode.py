"""One request's decode loop, run on the engine's single model thread.

Prefill (reusing the cached blocks of the prompt the previous request shares, see :class:`PromptCache`), then one
token per step: sample, check the stop tokens and the budget, emit the token's text, evaluate it. The abort flag is
read before every step.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

from lmchat.engines.base import GenerationRequest
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.llamacpp.sampler import build_sampler
from lmchat.engines.llamacpp.sampling import to_llamacpp_kwargs

Emit = Callable[[EngineEvent | BaseException], None]
PREFILL_BLOCK = 32  # prompts are evaluated in aligned blocks of this many tokens


@dataclass
class PromptCache:
    """Which prompt tokens' keys/values in the llama.cpp context can be reused, bit for bit.

    llama.cpp's numbers depend on how tokens are grouped into ``llama_decode`` batches, so reusing an arbitrary
    cached prefix could flip a greedy answer. Every prompt is therefore evaluated in aligned blocks of ``block``
    tokens (``[0, block)``, ``[block, 2 * block)``, ...), and only whole blocks are kept for the next request: a
    kept block was computed exactly as a fresh evaluation computes it, so reuse never changes an answer. Tokens
    decoded one at a time (the answer) and the prompt's last, partial block are not reused.
    """

    block: int = PREFILL_BLOCK
    enabled: bool = True
    tokens: list[int] = field(default_factory=list)  # the reusable prefix: whole blocks of the last prompt
    reused: int = 0  # tokens the last prefill took from the cache (for tests and logs)


@dataclass
class DecodeJob:
    """What the model thread needs to run one request."""

    request: GenerationRequest
    prompt_ids: list[int]
    budget: int
    stop_ids: frozenset[int]
    stop_at_end_of_generation: bool
    emit: Emit
    is_aborted: Callable[[], bool]
    cache: PromptCache = field(default_factory=lambda: PromptCache(enabled=False))
    mask: Any = None  # lmchat.engines.llamacpp.structured.LogitsMask of a constrained request


def run_job(llm: Llama, job: DecodeJob) -> Finished:
    """Generate one sequence, emitting TextDelta events and one Finished (also returned)."""
    prompt_tokens = len(job.prompt_ids)
    if job.is_aborted():
        job.emit(finished := Finished("abort", prompt_tokens, 0))
        return finished
    params = job.request.params
    sampler = build_sampler(llm, to_llamacpp_kwargs(params))
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    generated, reason, stop_token = 0, "length", None
    try:
        prefill(llm, job.prompt_ids, job.cache)
        while generated < job.budget:
            if job.is_aborted():
                reason = "abort"
                break
            raw = job.mask.apply(llm) if job.mask is not None else None  # a constrained step: logits masked
            token = sampler.sample(llm._ctx, -1)
            generated += 1
            if token in job.stop_ids or (job.stop_at_end_of_generation and is_end_of_generation(llm, token)):
                reason, stop_token = "stop", piece(llm, token, special=True).decode("utf-8", "replace")
                break
            logprobs = token_logprobs(llm, token, params.top_logprobs, raw) if params.logprobs else ()
            job.emit(TextDelta(utf8.decode(piece(llm, token, not params.skip_special_tokens)), 1, (token,), logprobs))
            if job.mask is not None and job.mask.guide.accept(token):
                reason = "stop"  # the constraint is complete
                break
            if generated < job.budget:
                llm.eval([token])
    finally:
        sampler.close()
    tail = utf8.decode(b"", final=True)
    if tail:
        job.emit(TextDelta(tail, 0))
    job.emit(finished := Finished(reason, prompt_tokens, generated, stop_token))
    return finished


def prefill(llm: Llama, prompt_ids: Sequence[int], cache: PromptCache) -> None:
    """Evaluate the prompt in aligned blocks, skipping the whole blocks ``cache`` holds (see :class:`PromptCache`)."""
    reusable = common_prefix_length(cache.tokens, prompt_ids) if cache.enabled else 0
    reusable = min(reusable, len(prompt_ids) - 1)  # re-evaluate at least the last token: its logits start the answer
    start = reusable // cache.block * cache.block
    cache.tokens, cache.reused = [], 0  # the context changes from here on; a failure leaves nothing reusable
    if start and not llm._ctx.kv_cache_seq_rm(-1, start, -1):
        start = 0
    if not start:
        llm.reset()
    llm.n_tokens = start
    for block_start in range(start, len(prompt_ids), cache.block):
        llm.eval(list(prompt_ids[block_start : block_start + cache.block]))
    cache.tokens = list(prompt_ids[: len(prompt_ids) // cache.block * cache.block])
    cache.reused = start


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def is_end_of_generation(llm: Llama, token: int) -> bool:
    """True for the model's end-of-sequence and end-of-turn tokens (llama.cpp's "EOG" set)."""
    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token))


def piece(llm: Llama, token: int, special: bool) -> bytes:
    return llm.detokenize([token], special=special)


def token_logprobs(llm: Llama, token: int, top: int, raw: np.ndarray | None = None) -> tuple[TokenLogprob, ...]:
    """The chosen token's log-probability under the model's raw logits (``raw``: their copy from before a
    constraint's mask), and the ``top`` best alternatives."""
    logits = raw if raw is not None else np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                                                shape=(llm.n_vocab(),))
    logprobs = logits - np.logaddexp.reduce(logits.astype(np.float64))
    best = np.argsort(-logprobs)[:top] if top else ()
    text = _text(llm, token)
    alternatives = tuple((_text(llm, int(i)), int(i), float(logprobs[i])) for i in best)
    return (TokenLogprob(text, token, float(logprobs[token]), alternatives),)


def _text(llm: Llama, token: int) -> str:
    return piece(llm, token, special=True).decode("utf-8", "replace")
