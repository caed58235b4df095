"""One request's state inside the worker: its tokens, limits, sampling state and place in the batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lmchat.engines.base import GenerationRequest
from lmchat.engines.events import EngineEvent
from lmchat.engines.hf.sampler import make_generator, mask_tokens
from lmchat.generation.detokenize import IncrementalDetokenizer
from lmchat.generation.token_rules import TokenRules

Emit = Callable[[EngineEvent | BaseException], None]


@dataclass(eq=False)
class RequestState:
    """One request (a sequence of tokens) in the worker: ``ids`` is prompt + answer so far; ``num_cached`` of them
    have keys/values in the batch's row ``slot``; ``budget`` starts as the request's ``max_tokens``."""

    request: GenerationRequest
    budget: int
    stop_ids: frozenset[int]
    emit: Emit
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator
    ids: list[int]
    prompt_tokens: int
    generated: int = 0
    num_cached: int = 0
    slot: int = -1
    counts: torch.Tensor | None = None
    last_token: str | None = None
    guide: Any = None  # lmchat.structured.guide.Guide of a constrained request
    position_offset: int = 0  # decode position ids = cache position + this (M-RoPE after media)
    rules: TokenRules | None = None  # min_tokens, bad_words, allowed_token_ids
    allowed: torch.Tensor | None = None  # allowed_token_ids as a mask over the logits (made at the first step)
    reused: int = 0  # prompt tokens whose keys/values were copied from another sequence
    adapter_slot: int = 0  # the LoRA bank's slot of the request's adapter (0: the base model)

    def mask_by_rules(self, logits: torch.Tensor) -> None:
        """Write this answer's token rules (min_tokens, bad_words, allowed_token_ids) into its logits, in place."""
        if self.rules.allowed is not None and self.allowed is None:
            self.allowed = torch.zeros(logits.numel(), dtype=torch.bool)
            self.allowed[list(self.rules.allowed)] = True
        mask_tokens(logits, self.rules.banned(self.ids[self.prompt_tokens:]), self.allowed)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def need(self) -> int:
        """The most tokens this sequence can hold: its reservation in the KV-cache budget."""
        return self.prompt_tokens + self.budget

    @property
    def is_prefilling(self) -> bool:
        return self.num_cached < self.prompt_tokens

    @property
    def is_decoding(self) -> bool:
        """Prefilled, with its newest token still to feed through the model."""
        return self.generated > 0 and self.num_cached == len(self.ids) - 1


def new_request_state(request: GenerationRequest, stop_ids: frozenset[int], decode: Callable[[list[int]], str],
                      emit: Emit, guide: Any = None) -> RequestState:
    prompt_ids = list(request.prompt_token_ids)
    return RequestState(
        guide=guide,
        rules=TokenRules.of(request.params, stop_ids, request.bad_words_ids),
        request=request,
        budget=request.max_tokens,
        stop_ids=stop_ids,
        emit=emit,
        detokenizer=IncrementalDetokenizer(decode, prompt_ids),
        generator=make_generator(request.params.seed),
        ids=list(prompt_ids),
        prompt_tokens=len(prompt_ids),
    )
