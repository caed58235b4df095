"""Which tokens one step of one answer may not choose: ``min_tokens``, ``bad_words`` and ``allowed_token_ids``.

Engine-independent (no torch, no numpy): the transformers and llama.cpp engines ask :meth:`TokenRules.banned`
for the ids to set to -inf in the step's logits and apply ``allowed`` as a mask; vLLM applies its own. The rules
follow vLLM's meaning:

- ``min_tokens``: the end-of-answer tokens (the model's and ``stop_token_ids``) cannot be chosen while fewer than
  ``min_tokens`` tokens were generated (and the facade applies no stop string before then).
- ``bad_words``: each word is tokenized as written (its leading spaces stripped) and, when that gives another
  first token of the same length, with one leading space; a word's last token is banned whenever the answer's
  latest tokens are the word's other tokens (a one-token word is always banned).
- ``allowed_token_ids``: every other token is banned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lmchat.generation.sampling import SamplingParams


def bad_words_token_ids(words: Sequence[str], tokenize: Callable[[str], list[int]]) -> tuple[tuple[int, ...], ...]:
    """Each word's token sequences (vLLM's rule: as written, and with a leading space when that spells it with
    another first token in as many tokens). ``tokenize`` adds no special tokens."""
    sequences: list[tuple[int, ...]] = []
    for word in words:
        bare = tuple(tokenize(word.lstrip()))
        if not bare:
            continue
        sequences.append(bare)
        spaced = tuple(tokenize(" " + word.lstrip()))
        if spaced and spaced[0] != bare[0] and len(spaced) == len(bare):
            sequences.append(spaced)
    return tuple(sequences)


@dataclass(frozen=True)
class TokenRules:
    """One answer's token rules (see the module): built once per request, asked once per step."""

    min_tokens: int = 0
    end_ids: frozenset[int] = frozenset()
    bad_words: tuple[tuple[int, ...], ...] = ()
    allowed: tuple[int, ...] | None = None

    @classmethod
    def of(cls, params: SamplingParams, end_ids: frozenset[int],
           bad_words: tuple[tuple[int, ...], ...]) -> TokenRules | None:
        """The request's rules, or None when it has none. ``end_ids``: every token that would end the answer."""
        if not (params.min_tokens or bad_words or params.allowed_token_ids is not None):
            return None
        return cls(params.min_tokens, frozenset(end_ids), bad_words, params.allowed_token_ids)

    def banned(self, generated: Sequence[int]) -> list[int]:
        """The ids that may not come next, after the answer's ``generated`` tokens (``allowed`` aside)."""
        ids = sorted(self.end_ids) if len(generated) < self.min_tokens else []
        for word in self.bad_words:
            head = len(word) - 1
            if head == 0 or (len(generated) >= head and tuple(generated[len(generated) - head:]) == word[:head]):
                ids.append(word[-1])
        return ids
