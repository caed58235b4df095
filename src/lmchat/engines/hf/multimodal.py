"""Media at prefill: a prompt with images, video or audio becomes input embeddings once, then runs through the
continuous batch like any prompt (chunked prefill into the slot cache, then one token per decode step with every
other running sequence).

The embeddings are the model's own: its ``forward`` runs with the processor's outputs until it calls its language
model, and what it passes there (``inputs_embeds`` with the vision/audio features merged in at the placeholders,
and the position ids it computed, e.g. Qwen2-VL's 3-D M-RoPE ids) is taken and the language model is not run
(:func:`prompt_embeds`). Every family's own merging code is used, no family is re-implemented. The prompt's chunks
then feed those embeddings (:class:`PromptEmbeds`); after the prompt, a row's decode positions continue at
``position + delta`` (``delta`` is what M-RoPE took from the sequence; 0 for other models). Gemma 3 attends both
ways inside each image, so a chunk never ends inside an image and the mask lets image tokens see each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmchat.engines.hf.processor import MediaInputs

MEDIA_TOKEN_KEYS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                    "audio_token_id", "audio_token_index", "boi_token_id", "boi_token_index")
BIDIRECTIONAL_IMAGE_FAMILIES = frozenset({"gemma3"})  # image tokens attend to each other (token_type_ids == 1)


class _Captured(Exception):
    """Raised by the language model's pre-hook once it has the inputs (the language model does not run)."""


@dataclass(frozen=True)
class PromptEmbeds:
    """A media prompt as the language model takes it: ``embeds`` [L, hidden], ``positions`` (the model's own
    position ids over the prompt, [..., 1, L], or None for plain 0..L-1), ``delta`` (decode positions are the
    cache position plus this), ``spans`` (ranges [start, end) whose tokens attend to each other both ways)."""

    embeds: torch.Tensor
    positions: torch.Tensor | None
    delta: int
    spans: tuple[tuple[int, int], ...] = ()

    def chunk(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [1, q, hidden] and position ids ([1, q], or [3, 1, q] for M-RoPE) of prompt[start:end]."""
        embeds = self.embeds[None, start:end]
        if self.positions is None:
            return embeds, torch.arange(start, end, device=embeds.device)[None]
        return embeds, self.positions[..., start:end]

    def chunk_end(self, start: int, end: int) -> int:
        """``end`` moved so a chunk never splits a both-ways span: back to the span's start, or past its end when
        the chunk starts inside it."""
        for low, high in self.spans:
            if low < end < high:
                return low if low > start else high
        return end

    def groups(self, length: int, device: torch.device) -> torch.Tensor | None:
        """[length] span id of each position (-1 outside spans), or None without spans."""
        if not self.spans:
            return None
        ids = torch.full((length,), -1, dtype=torch.long, device=device)
        for number, (low, high) in enumerate(self.spans):
            ids[low:min(high, length)] = number
        return ids


@torch.inference_mode()
def prompt_embeds(model: Any, inputs: MediaInputs, device: torch.device) -> PromptEmbeds:
    """The prompt's embeddings as the model builds them (computed once per call; the ``n`` requests of a call
    share ``inputs``)."""
    if inputs.embeds is not None:
        return inputs.embeds
    ids = torch.tensor([inputs.token_ids], device=device)
    features = {key: value.to(device) for key, value in inputs.features.items()}
    for key, value in features.items():
        if value.is_floating_point():
            features[key] = value.to(model.dtype)
    captured: dict[str, Any] = {}

    def take(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        captured.update(kwargs)
        raise _Captured

    handle = language_model(model).register_forward_pre_hook(take, with_kwargs=True)
    try:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, **features)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "inputs_embeds" not in captured:
        raise RuntimeError(f"{type(model).__name__} did not pass inputs_embeds to its language model")
    embeds = captured["inputs_embeds"][0]
    positions = captured.get("position_ids")
    delta = 0 if positions is None else int(positions.max()) + 1 - len(inputs.token_ids)
    spans = _spans(model, inputs)
    inputs.embeds = PromptEmbeds(embeds, positions, delta, spans)
    return inputs.embeds


def language_model(model: Any) -> Any:
    """The language-model module a multimodal model calls with the merged embeddings."""
    for holder in (getattr(model, "model", None), model):
        for name in ("language_model", "text_model"):
            module = getattr(holder, name, None)
            if isinstance(module, torch.nn.Module):
                return module
    raise RuntimeError(f"{type(model).__name__} has no language_model/text_model to take its embeddings from")


def _spans(model: Any, inputs: MediaInputs) -> tuple[tuple[int, int], ...]:
    types = inputs.features.get("token_type_ids")
    if model.config.model_type not in BIDIRECTIONAL_IMAGE_FAMILIES or types is None:
        return ()
    flags = types[0].tolist()
    spans, start = [], None
    for position, flag in enumerate([*flags, 0]):
        if flag == 1 and start is None:
            start = position
        elif flag != 1 and start is not None:
            spans.append((start, position))
            start = None
    return tuple(spans)


def first_media_token(model: Any, token_ids: tuple[int, ...]) -> int:
    """Where the first media placeholder token of a prompt is (its length when it has none): keys and values
    before it depend on the text only, so a prefix up to there may be shared with another prompt."""
    config = model.config
    media_ids = {getattr(config, key) for key in MEDIA_TOKEN_KEYS if isinstance(getattr(config, key, None), int)}
    return next((i for i, token in enumerate(token_ids) if token in media_ids), len(token_ids))


def shareable_length(model: Any, inputs: MediaInputs | None, other: MediaInputs | None, length: int) -> int:
    """How much of a common token prefix two prompts may share: all of it when they have the same media (the
    ``n`` answers of one call) or none, else only the part before either's first medium."""
    if inputs is other:
        return length
    limits = [first_media_token(model, x.token_ids) for x in (inputs, other) if x is not None]
    return min([length, *limits])


def prefill_media_chunk(runner: Any, model: Any, sequence: Any, start: int, end: int) -> tuple[torch.Tensor, int]:
    """Prefill ``sequence``'s media prompt from ``start`` up to about ``end`` (never inside a both-ways span):
    ``(logits of the chunk's last token, where the chunk ended)``. The embeddings are made at the first chunk."""
    prompt = prompt_embeds(model, sequence.request.media_inputs, runner.device)
    end = prompt.chunk_end(start, end)
    sequence.position_offset = prompt.delta
    return runner.prefill_embeds(sequence.slot, prompt, start, end), end
