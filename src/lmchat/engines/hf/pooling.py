"""Embeddings and pair scores for the transformers engine (run on its worker thread, between steps).

Pooling of the last layer's token states: ``mean``, ``last`` or ``cls`` (the ``pooling_type`` setting; ``auto``
reads the folder's sentence-transformers pooling, ``1_Pooling/config.json`` through ``modules.json``, else ``cls``
for a tokenizer that starts texts with its CLS token and ``last`` otherwise). Each input runs alone (no padding),
so a vector equals the one a direct forward pass gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmchat.engines.hf.loading import LoadedModel
from lmchat.engines.hf.scoring import head_score
from lmchat.engines.pooling import PairScoreRequest, PairScores, PoolingInfo
from lmchat.errors import ConfigError, ContextLengthError

SENTENCE_TRANSFORMERS_MODULES = "modules.json"
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "last"}


def sentence_transformers_pooling(folder: Path) -> str | None:
    """The pooling a sentence-transformers folder declares (None: the folder has no pooling module)."""
    modules_file = folder / SENTENCE_TRANSFORMERS_MODULES
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    pooling = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling is None:
        return None
    config_file = folder / pooling.get("path", "") / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{folder}: modules.json names the pooling module {pooling.get('path')!r}, which has no "
                          "config.json.", param="model_name_or_path")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    modes = [mode for key, mode in _ST_MODES.items() if config.get(key)]
    others = sorted(key for key, value in config.items() if key.startswith("pooling_mode_") and value
                    and key not in _ST_MODES)
    if others or len(modes) != 1:
        raise ConfigError(f"{folder}: its sentence-transformers pooling ({', '.join(others or modes) or 'none'}) is "
                          "not one lmchat runs (mean, last token or CLS token); set pooling_type to override it.",
                          param="pooling_type")
    return modes[0]


def matryoshka_dimensions(model_config: Any) -> tuple[int, ...] | None:
    """vLLM's rule: ``matryoshka_dimensions`` in config.json lists the trained sizes, ``is_matryoshka: true``
    allows any; otherwise ``dimensions`` is refused."""
    sizes = getattr(model_config, "matryoshka_dimensions", None)
    if sizes:
        return tuple(int(size) for size in sizes)
    return () if getattr(model_config, "is_matryoshka", False) else None


def pooling_info(loaded: LoadedModel, source: str, pooling_type: str) -> PoolingInfo:
    """How the loaded model pools (``pooling_type``: the config's setting, ``auto`` by default)."""
    config = loaded.model.config.get_text_config()
    if pooling_type == "auto":
        pooling_type = sentence_transformers_pooling(Path(source)) or _default_pooling(loaded.tokenizer)
    pair_scores = {"embedding": "cosine", "generative": None}.get(loaded.kind, "classifier")
    return PoolingInfo(embedding_size=int(config.hidden_size), pooling_type=pooling_type,
                       matryoshka_dimensions=matryoshka_dimensions(loaded.model.config),
                       embedding_model=loaded.kind == "embedding", pair_scores=pair_scores)


def _default_pooling(tokenizer: Any) -> str:
    cls = getattr(tokenizer, "cls_token_id", None)
    starts = tokenizer("a", add_special_tokens=True)["input_ids"][:1]
    return "cls" if cls is not None and starts == [cls] else "last"


@torch.inference_mode()
def embed_ids(loaded: LoadedModel, inputs: Sequence[Sequence[int]], pooling_type: str) -> list[list[float]]:
    """One pooled vector of the last layer's states per input (raw: not normalised)."""
    encoder = loaded.model.base_model  # the transformer under any head (itself for a plain encoder)
    vectors = []
    for ids in inputs:
        tensor = torch.tensor([list(ids)], device=loaded.device)
        states = encoder(input_ids=tensor, attention_mask=torch.ones_like(tensor)).last_hidden_state[0]
        vectors.append(pool(states, pooling_type).float().tolist())
    return vectors


def pool(states: torch.Tensor, pooling_type: str) -> torch.Tensor:
    """One vector of a sequence's token states (tokens x hidden)."""
    if pooling_type == "mean":
        return states.mean(dim=0)
    if pooling_type == "cls":
        return states[0]
    return states[-1]


@torch.inference_mode()
def score_pairs(loaded: LoadedModel, request: PairScoreRequest, first: int = 0) -> PairScores:
    """The model's head on each pair as its tokenizer pairs texts (a cross-encoder's ``[CLS] a [SEP] b [SEP]``
    with token types): raw logits of a one-label classifier, or a value head's reward. Errors name a pair by its
    index, counted from ``first``."""
    scores, tokens = [], 0
    for i, (text_1, text_2) in enumerate(request.pairs, start=first):
        encoded = loaded.tokenizer(text_1, text_2, add_special_tokens=True, truncation=request.truncate or False,
                                   max_length=request.max_tokens if request.truncate else None)
        length = len(encoded["input_ids"])
        if length > request.max_tokens:
            raise ContextLengthError(f"Text pair {i} is {length} tokens, too large for the model's context of "
                                     f"{request.max_tokens} tokens; shorten it or set truncate_prompt_tokens.",
                                     param="text_2")
        if length == 0:
            raise ContextLengthError(f"Text pair {i} is empty.", param="text_2")
        tensors = {name: torch.tensor([values], device=loaded.device) for name, values in encoded.items()
                   if name in ("input_ids", "token_type_ids", "attention_mask")}
        scores.append(head_score(loaded, tensors))
        tokens += length
    return PairScores(tuple(scores), tokens)
