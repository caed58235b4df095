"""Choose the next token of one sequence from its logits: penalties, bias, temperature, top-k/p, min-p, seed.

Every step keeps the logits usable whatever the options: values that overflow become the largest float (NaN
becomes -inf), the most likely token always survives top-p and min-p, and a row with nothing left to sample from
falls back to its argmax. Options that get through validation can therefore never make ``torch.multinomial`` fail
("probability tensor contains inf/nan") and stop the engine.
"""

from __future__ import annotations

import torch

from lmchat.engines.events import TokenLogprob
from lmchat.generation.sampling import SamplingParams


def apply_penalties(logits: torch.Tensor, params: SamplingParams, seen_ids: torch.Tensor,
                    generated_counts: torch.Tensor | None) -> torch.Tensor:
    """``logits`` (vocab,) float32 -> penalised copy. ``seen_ids``: prompt + answer ids (for repetition_penalty,
    transformers' meaning); ``generated_counts`` (vocab,): answer-token counts (OpenAI presence/frequency)."""
    logits = logits.clone()
    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), dtype=torch.long)
        logits[ids] += torch.tensor(list(params.logit_bias.values()), dtype=logits.dtype)
    if params.repetition_penalty != 1.0 and seen_ids.numel():
        unique = torch.unique(seen_ids)
        picked = logits[unique]
        logits[unique] = torch.where(picked < 0, picked * params.repetition_penalty,
                                     picked / params.repetition_penalty)
    if generated_counts is not None and (params.presence_penalty or params.frequency_penalty):
        counts = generated_counts.to(logits.dtype)
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(logits.dtype)
    return finite(logits)


def mask_tokens(logits: torch.Tensor, banned: list[int], allowed: torch.Tensor | None) -> None:
    """In place: the ``banned`` ids and, with an ``allowed`` mask (vocab,) bool, every id outside it at -inf
    (:class:`~lmchat.generation.token_rules.TokenRules`). Should nothing be left, the row's argmax is taken."""
    if allowed is not None:
        logits.masked_fill_(~allowed[: logits.numel()], float("-inf"))
    if banned:
        logits[banned] = float("-inf")


def finite(logits: torch.Tensor) -> torch.Tensor:
    """NaN -> -inf (never chosen), +inf -> the dtype's largest value (so softmax stays defined)."""
    top = torch.finfo(logits.dtype).max
    return torch.nan_to_num(logits, nan=float("-inf"), posinf=top, neginf=float("-inf"))


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p masking (masked entries become -inf)."""
    logits = finite(logits / params.temperature)
    if params.top_k and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        remove = cumulative - torch.softmax(sorted_logits, dim=-1) >= params.top_p  # keep the token crossing top_p
        remove[0] = False  # the most likely token stays, however small top_p is
        logits = logits.masked_fill(torch.zeros_like(remove).scatter(0, order, remove), float("-inf"))
    if params.min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    return logits


def choose_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Greedy argmax, or a sample drawn with this request's own generator."""
    if params.is_greedy:
        return int(torch.argmax(logits))
    filtered = filter_logits(logits, params)
    if not torch.isfinite(filtered).any():  # nothing left to sample from (every logit was NaN or -inf)
        return int(torch.argmax(logits))
    probs = torch.softmax(filtered, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def make_generator(seed: int | None) -> torch.Generator:
    """A private generator: seeded for reproducibility, else from OS entropy. The global seed is never touched."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def vocabulary_texts(tokenizer, vocab_size: int) -> list[str]:
    """Every token id's text (ids past the tokenizer's own, in a padded vocabulary, as empty strings)."""
    size = min(vocab_size, len(tokenizer))
    return list(tokenizer.batch_decode([[i] for i in range(size)])) + [""] * (vocab_size - size)


def logprob_event(tokenizer, raw_logits: torch.Tensor, token_id: int, k: int, texts: list[str] | None) -> TokenLogprob:
    """The chosen token's log-probability and its ``k`` best alternatives (-1: the whole vocabulary, named by
    ``texts``, every token's text)."""
    if k == -1:
        logprob, top = top_logprobs(raw_logits, token_id, raw_logits.numel())
        return TokenLogprob(texts[token_id], token_id, logprob, tuple((texts[i], i, value) for i, value in top))
    logprob, top = top_logprobs(raw_logits, token_id, k)
    alternatives = tuple((tokenizer.decode([i]), i, value) for i, value in top)
    return TokenLogprob(tokenizer.decode([token_id]), token_id, logprob, alternatives)


def top_logprobs(raw_logits: torch.Tensor, token_id: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's log-probability under the model, and the k most likely alternatives."""
    logprobs = torch.log_softmax(raw_logits.float(), dim=-1)
    top = torch.topk(logprobs, k) if k else None
    alternatives = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
    return float(logprobs[token_id]), alternatives
