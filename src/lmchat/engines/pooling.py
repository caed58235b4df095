"""The pooling part of the engine contract: embeddings and pair scores (cross-encoders, reward models).

An engine that pools declares the tasks it runs for the loaded model in ``Capabilities.pooling`` (``embed``,
``score``) and describes the model's vectors in ``ModelInfo.pooling``; the facade (:mod:`lmchat.chat.pooling`)
tokenizes, checks lengths, applies ``dimensions`` and normalisation, so engines return raw pooled vectors and raw
scores, in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

POOLING_TYPES = ("mean", "last", "cls")
POOLING_TASKS = ("embed", "score")


@dataclass(frozen=True)
class PoolingInfo:
    """The loaded model's pooling: ``embedding_size`` (the pooled vector's length), ``pooling_type`` (how token
    states become one vector), ``matryoshka_dimensions`` (None: the model was not trained to be truncated, so
    ``dimensions`` is refused; an empty tuple: any length from 1 up), ``embedding_model`` (the model is an
    encoder for embeddings only: it cannot chat), ``pair_scores`` (how a pair is scored: ``classifier``, the
    model's own head on the pair, or ``cosine`` of the two embeddings; None: it cannot score pairs)."""

    embedding_size: int
    pooling_type: str
    matryoshka_dimensions: tuple[int, ...] | None = None
    embedding_model: bool = False
    pair_scores: str | None = None


@dataclass(frozen=True)
class EmbedRequest:
    """Inputs to pool, each as the token ids the facade decided (special tokens added, cut to the context)."""

    request_id: str
    inputs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class PairScoreRequest:
    """Text pairs to score with the model's own head (the engine encodes each pair as its tokenizer pairs texts).
    A pair longer than ``max_tokens`` is cut to it when ``truncate``, else refused (ContextLengthError)."""

    request_id: str
    pairs: tuple[tuple[str, str], ...]
    max_tokens: int
    truncate: bool = False


@dataclass(frozen=True)
class PairScores:
    """One raw score per pair (the head's logit, before any activation) and the tokens the pairs took."""

    scores: tuple[float, ...]
    prompt_tokens: int
