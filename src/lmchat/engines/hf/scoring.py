"""Reward scores with a sequence-classification model or a LLaMA-Factory value-head checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmchat.engines.hf.loading import LoadedModel
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
    inputs = torch.tensor([ids], device=loaded.device)
    if loaded.kind == "sequence_classification":
        return float(loaded.model(input_ids=inputs).logits[0, 0])
    output = loaded.model(input_ids=inputs, output_hidden_states=True, use_cache=False)
    last_hidden = output.hidden_states[-1][0, -1]
    weight, bias = loaded.value_head
    return float(last_hidden.to(weight.dtype) @ weight[0] + bias[0])
