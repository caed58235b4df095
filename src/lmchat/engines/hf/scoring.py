"""Reward scores with a sequence-classification model or a LLaMA-Factory value-head checkpoint, and the
log-probabilities of a prompt's tokens (completions' ``echo`` with ``logprobs``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmchat.engines.events import TokenLogprob
from lmchat.engines.hf.loading import LoadedModel
from lmchat.engines.hf.sampler import top_logprobs
from lmchat.errors import ContextLengthError


@torch.inference_mode()
def score_texts(loaded: LoadedModel, texts: Sequence[str], max_length: int | None) -> list[float]:
    """One score per text (each text is a fully rendered conversation; no special tokens are added)."""
    return [_score_one(loaded, text, max_length) for text in texts]


def _score_one(loaded: LoadedModel, text: str, max_length: int | None) -> float:
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ContextLengthError("Cannot score an empty text.", param="batch_input")
    limit = max_length or getattr(loaded.model.config, "max_position_embeddings", None)
    if limit:
        ids = ids[:limit]
    return head_score(loaded, {"input_ids": torch.tensor([ids], device=loaded.device)})


def head_score(loaded: LoadedModel, inputs: dict[str, torch.Tensor]) -> float:
    """The reward or relevance head on one encoded text (a batch of one): a one-label classifier's logit, or
    LLaMA-Factory's value head on the last token's state."""
    if loaded.kind == "sequence_classification":
        return float(loaded.model(**inputs).logits[0, 0])
    output = loaded.model(**inputs, output_hidden_states=True, use_cache=False)
    last_hidden = output.hidden_states[-1][0, -1]
    weight, bias = loaded.value_head
    return float(last_hidden.to(weight.dtype) @ weight[0] + bias[0])


@torch.inference_mode()
def prompt_logprobs(loaded: LoadedModel, token_ids: Sequence[int], top: int) -> list[TokenLogprob | None]:
    """Each prompt token's log-probability given the tokens before it (the first has none: ``None``), with the
    ``top`` most likely alternatives; from one forward pass over the raw logits, as generation reports them."""
    ids = list(token_ids)
    logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.device), use_cache=False).logits[0]
    decode = loaded.tokenizer.decode
    result: list[TokenLogprob | None] = [None]
    ranks = token_ranks(logits[:-1], ids[1:])
    for position, token_id in enumerate(ids[1:]):
        logprob, alternatives = top_logprobs(logits[position], token_id, top)
        result.append(TokenLogprob(decode([token_id]), token_id, logprob,
                                   tuple((decode([i]), i, value) for i, value in alternatives), rank=ranks[position]))
    return result


def token_ranks(logits: torch.Tensor, token_ids: Sequence[int]) -> list[int]:
    """Each token's rank in its row of logits [n, vocab] (1: the likeliest; ties rank alike)."""
    chosen = logits.float().gather(1, torch.tensor(token_ids, device=logits.device)[:, None])
    return ((logits.float() > chosen).sum(dim=1) + 1).tolist()
