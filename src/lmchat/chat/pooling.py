"""Embeddings and pair scores through any engine that pools: what the facade decides once for every engine.

The inputs' token ids (special tokens added, ``truncate_prompt_tokens``, the context check), ``dimensions``
(matryoshka truncation, refused for a model not trained for it) and the normalisation are decided here; engines
return raw pooled vectors and raw pair scores (:mod:`lmchat.engines.pooling`).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmchat.chat.prepare import kept_prompt_tokens
from lmchat.engines.pooling import EmbedRequest, PairScoreRequest, PoolingInfo
from lmchat.errors import ContextLengthError, InvalidRequestError, UnsupportedError

if TYPE_CHECKING:
    from lmchat.engines.base import BaseEngine

EmbeddingInput = str | Sequence[int] | Sequence[str | Sequence[int]]


@dataclass(frozen=True)
class EmbedOptions:
    """One embedding call's options: ``normalize`` (L2, after ``dimensions``; default on), ``dimensions`` (keep the
    first N values: matryoshka models only), ``truncate_prompt_tokens`` (keep each input's last N tokens; -1: the
    context length), ``add_special_tokens`` (what the tokenizer adds to a text, as the model was trained)."""

    normalize: bool = True
    dimensions: int | None = None
    truncate_prompt_tokens: int | None = None
    add_special_tokens: bool = True


@dataclass(frozen=True)
class Embeddings:
    """One vector per input, in input order, and the tokens each input took."""

    vectors: list[list[float]]
    token_counts: tuple[int, ...]

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True)
class PairScoreResult:
    """One score per pair, in pair order, and the tokens the pairs took."""

    scores: list[float]
    prompt_tokens: int


def embedding_inputs(value: Any, param: str = "input") -> list[str | list[int]]:
    """OpenAI's ``input``: a string, a list of token ids, or a list of either; never empty."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence) or isinstance(value, bytes) or not value:
        raise InvalidRequestError(f"{param} must be a string, a list of token ids, or a non-empty list of either.",
                                  param=param)
    if all(_is_token(token) for token in value):
        return [list(value)]
    items: list[str | list[int]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            items.append(item)
        elif isinstance(item, Sequence) and item and all(_is_token(token) for token in item):
            items.append(list(item))
        else:
            raise InvalidRequestError(f"{param}[{i}] must be a string or a non-empty list of token ids.",
                                      param=f"{param}[{i}]")
    return items


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_dimensions(info: PoolingInfo, dimensions: int | None, model: str) -> None:
    """``dimensions`` only for a matryoshka model (trained so that a vector's first values are an embedding of
    their own), and one of its trained sizes when it lists them; vLLM's rule."""
    if dimensions is None:
        return
    if info.matryoshka_dimensions is None:
        raise UnsupportedError(f"The model '{model}' does not support matryoshka representation: changing the output "
                               "dimensions would give poor embeddings; leave dimensions out.", param="dimensions")
    if not 1 <= dimensions <= info.embedding_size:
        raise InvalidRequestError(f"dimensions must be from 1 to the model's {info.embedding_size}.",
                                  param="dimensions")
    if info.matryoshka_dimensions and dimensions not in info.matryoshka_dimensions:
        sizes = ", ".join(map(str, info.matryoshka_dimensions))
        raise InvalidRequestError(f"The model '{model}' gives embeddings of {sizes} dimensions only, not "
                                  f"{dimensions}.", param="dimensions")


def token_limit(engine: BaseEngine, truncate: int | None) -> tuple[int | None, bool]:
    """The most tokens an input may have and whether a longer one is cut (``truncate_prompt_tokens``) or refused."""
    context = engine.info.context_length
    if truncate is None:
        return context, False
    return kept_prompt_tokens(truncate, context), True


def _input_ids(engine: BaseEngine, items: list[str | list[int]], options: EmbedOptions) -> list[tuple[int, ...]]:
    limit, truncate = token_limit(engine, options.truncate_prompt_tokens)
    vocab = engine.info.vocab_size
    result = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = engine.tokenize(item, add_special_tokens=options.add_special_tokens)
        else:
            ids = item
            bad = next((token for token in ids if token < 0 or (vocab is not None and token >= vocab)), None)
            if bad is not None:
                raise InvalidRequestError(f"input[{i}] holds the token id {bad}, outside the vocabulary (0 to "
                                          f"{(vocab or 0) - 1}).", param=f"input[{i}]")
        if limit is not None and len(ids) > limit:
            if not truncate:
                raise ContextLengthError(f"input[{i}] is {len(ids)} tokens, too large for the model's context of "
                                         f"{limit} tokens; shorten it or set truncate_prompt_tokens.",
                                         param="input")
            ids = _cut_text(engine, item, limit, options) if isinstance(item, str) else ids[len(ids) - limit:]
        if not ids:
            raise InvalidRequestError(f"input[{i}] is empty (no tokens to pool).", param=f"input[{i}]")
        result.append(tuple(ids))
    return result


def _cut_text(engine: BaseEngine, text: str, limit: int, options: EmbedOptions) -> list[int]:
    """A text's last tokens, within the special tokens the tokenizer puts around it (a CLS token stays first)."""
    plain = engine.tokenize(text)
    if not options.add_special_tokens:
        return plain[len(plain) - limit:]
    probe, marked = engine.tokenize("a"), engine.tokenize("a", add_special_tokens=True)
    start = next((j for j in range(len(marked) - len(probe) + 1) if marked[j:j + len(probe)] == probe), 0)
    prefix, suffix = marked[:start], marked[start + len(probe):]
    keep = max(limit - len(prefix) - len(suffix), 0)
    return [*prefix, *plain[len(plain) - keep:], *suffix] if keep else (prefix + suffix)[:limit]


async def embed(engine: BaseEngine, value: Any, options: EmbedOptions) -> Embeddings:
    """Embeddings of ``value`` (``input`` as OpenAI has it) with the engine's pooling."""
    label = engine.label or engine.name
    engine.capabilities.check_pooling("embed", label)
    info = engine.info.pooling
    if info is None:
        raise UnsupportedError(f"The {label} engine with this model cannot compute embeddings.", param="model")
    check_dimensions(info, options.dimensions, engine.info.name)
    items = embedding_inputs(value)
    ids = await asyncio.to_thread(_input_ids, engine, items, options)  # tokenizing: off the caller's loop
    raw = await engine.embed(EmbedRequest(f"embd-{uuid.uuid4().hex}", tuple(ids)))
    return Embeddings([finish_vector(vector, options) for vector in raw], tuple(len(item) for item in ids))


def finish_vector(vector: Sequence[float], options: EmbedOptions) -> list[float]:
    """``dimensions`` (the first N values), then L2 normalisation when ``normalize``."""
    values = [float(x) for x in (vector[:options.dimensions] if options.dimensions else vector)]
    if not options.normalize:
        return values
    norm = math.sqrt(sum(x * x for x in values))
    return [x / norm for x in values] if norm > 0 else values


def text_pairs(text_1: Any, text_2: Any) -> list[tuple[str, str]]:
    """vLLM's pairing: one text and one, one and N (each of the N with the one), or N and N (pairwise)."""
    first = [text_1] if isinstance(text_1, str) else _texts(text_1, "text_1")
    second = [text_2] if isinstance(text_2, str) else _texts(text_2, "text_2")
    if len(first) == 1:
        return [(first[0], text) for text in second]
    if len(first) != len(second):
        raise InvalidRequestError(f"text_1 has {len(first)} texts and text_2 {len(second)}: give one text_1, or as "
                                  "many as text_2.", param="text_2")
    return list(zip(first, second))


def _texts(value: Any, param: str) -> list[str]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value \
            or not all(isinstance(text, str) for text in value):
        raise InvalidRequestError(f"{param} must be a string or a non-empty list of strings.", param=param)
    return list(value)


async def score_pairs(engine: BaseEngine, pairs: Sequence[tuple[str, str]], truncate_prompt_tokens: int | None,
                      use_activation: bool | None) -> PairScoreResult:
    """One relevance score per pair: a classifier's (cross-encoder's or reward model's) head on the pair, with a
    sigmoid unless ``use_activation`` is false (vLLM's and sentence-transformers' default), or the cosine of two
    embeddings for an embedding model."""
    label = engine.label or engine.name
    engine.capabilities.check_pooling("score", label)
    info = engine.info.pooling
    if not pairs:
        raise InvalidRequestError("There are no text pairs to score.", param="text_2")
    if info is not None and info.pair_scores == "cosine":
        return await _cosine_scores(engine, pairs, truncate_prompt_tokens)
    if info is None or info.pair_scores != "classifier":
        raise UnsupportedError(f"The {label} engine with this model cannot score text pairs (it needs a "
                               "cross-encoder, a reward model or an embedding model).", param="model")
    limit, truncate = token_limit(engine, truncate_prompt_tokens)
    request = PairScoreRequest(f"score-{uuid.uuid4().hex}", tuple(pairs), limit or 2**31 - 1, truncate)
    raw = await engine.score_pairs(request)
    scores = [_sigmoid(score) for score in raw.scores] if use_activation is not False else list(raw.scores)
    return PairScoreResult(scores, raw.prompt_tokens)


async def _cosine_scores(engine: BaseEngine, pairs: Sequence[tuple[str, str]], truncate: int | None
                         ) -> PairScoreResult:
    texts = list(dict.fromkeys(text for pair in pairs for text in pair))
    embeddings = await embed(engine, texts, EmbedOptions(truncate_prompt_tokens=truncate))
    vectors = dict(zip(texts, embeddings.vectors))
    counts = dict(zip(texts, embeddings.token_counts))
    scores = [sum(a * b for a, b in zip(vectors[one], vectors[two])) for one, two in pairs]
    return PairScoreResult(scores, sum(counts[one] + counts[two] for one, two in pairs))


def _sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value)) if value >= 0 else math.exp(value) / (1 + math.exp(value))
