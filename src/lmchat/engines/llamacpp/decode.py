"""One request's decode loop, run on the engine's single model thread.

Prefill (optionally reusing the longest cached prefix of the previous request), then one token per step:
sample, check the stop tokens and the budget, emit the token's text, evaluate it. The abort flag is read before
every step.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import Llama

from lmchat.engines.base import GenerationRequest
from lmchat.engines.events import EngineEvent, Finished, TextDelta, TokenLogprob
from lmchat.engines.llamacpp.sampler import build_sampler
from lmchat.engines.llamacpp.sampling import to_llamacpp_kwargs

Emit = Callable[[EngineEvent | BaseException], None]


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
    reuse_prefix: bool = False


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
        prefill(llm, job.prompt_ids, job.reuse_prefix)
        while generated < job.budget:
            if job.is_aborted():
                reason = "abort"
                break
            token = sampler.sample(llm._ctx, -1)
            generated += 1
            if token in job.stop_ids or (job.stop_at_end_of_generation and is_end_of_generation(llm, token)):
                reason, stop_token = "stop", piece(llm, token, special=True).decode("utf-8", "replace")
                break
            logprobs = token_logprobs(llm, token, params.top_logprobs) if params.logprobs else ()
            job.emit(TextDelta(utf8.decode(piece(llm, token, not params.skip_special_tokens)), 1, (token,), logprobs))
            if generated < job.budget:
                llm.eval([token])
    finally:
        sampler.close()
    tail = utf8.decode(b"", final=True)
    if tail:
        job.emit(TextDelta(tail, 0))
    job.emit(finished := Finished(reason, prompt_tokens, generated, stop_token))
    return finished


def prefill(llm: Llama, prompt_ids: Sequence[int], reuse_prefix: bool = False) -> None:
    """Evaluate the prompt. With ``reuse_prefix``, keep the cached tokens it shares with what the model saw last:
    faster, but llama.cpp's logits then depend on how the prompt was split into batches, so a greedy answer can
    differ between two identical requests. Off by default: the same request gives the same answer.
    """
    cached = common_prefix_length(llm.input_ids[: llm.n_tokens].tolist(), prompt_ids) if reuse_prefix else 0
    cached = min(cached, len(prompt_ids) - 1)  # re-evaluate at least the last token: its logits start the answer
    if cached and not llm._ctx.kv_cache_seq_rm(-1, cached, -1):
        cached = 0
    if not cached:
        llm.reset()
    llm.n_tokens = cached
    llm.eval(list(prompt_ids[cached:]))


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


def token_logprobs(llm: Llama, token: int, top: int) -> tuple[TokenLogprob, ...]:
    """The chosen token's log-probability under the model's raw logits, and the ``top`` best alternatives."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    logprobs = logits - np.logaddexp.reduce(logits.astype(np.float64))
    best = np.argsort(-logprobs)[:top] if top else ()
    text = _text(llm, token)
    alternatives = tuple((_text(llm, int(i)), int(i), float(logprobs[i])) for i in best)
    return (TokenLogprob(text, token, float(logprobs[token]), alternatives),)


def _text(llm: Llama, token: int) -> str:
    return piece(llm, token, special=True).decode("utf-8", "replace")
