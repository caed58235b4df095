"""Structured output in the llama.cpp engine: the same grammar library and request state as the transformers
engine (:mod:`lmchat.structured`), so both enforce exactly what the facade checked.

Before each sampled token, a constrained request's mask is written into its own row of llama.cpp's batch logits
(disallowed tokens at -inf; the engine's ``LogitsHook``) and the request's sampler chain then samples as usual
(penalties, temperature, top-k/p, seed).
llama.cpp's own GBNF sampler (``LlamaGrammar``) is not used: its JSON-schema conversion covers another subset of
JSON Schema than the one the facade checks against.
"""

from __future__ import annotations

import warnings
from typing import Any

import llama_cpp
import numpy as np

from lmchat.engines.llamacpp.model import LoadedModel
from lmchat.structured.backend import TokenizerGrammars, llguidance
from lmchat.structured.guide import Guide


def build_grammars(llm: LoadedModel) -> tuple[TokenizerGrammars, frozenset[int]]:
    """The GGUF vocabulary's grammars (~1 s, once per engine) and its end-of-generation token ids."""
    llguidance()  # installed, or the install command
    from llguidance.llamacpp import lltokenizer_from_vocab

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    with warnings.catch_warnings():  # llguidance reads each token through llama_token_get_attr, deprecated in 0.3.x
        warnings.simplefilter("ignore", DeprecationWarning)
        tokenizer = lltokenizer_from_vocab(vocab)
    grammars = TokenizerGrammars(tokenizer, llm.n_vocab())
    end_ids = frozenset(t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
    return grammars, end_ids


class LogitsMask:
    """One request's grammar mask: the engine's :class:`~lmchat.engines.llamacpp.sequence.LogitsHook` for a
    constrained request (on the model thread)."""

    def __init__(self, guide: Guide, vocab_size: int) -> None:
        self.guide = guide
        self.vocab_size = vocab_size
        self._bitmask = np.zeros((1, (vocab_size + 31) // 32), dtype=np.int32)

    def apply(self, logits: np.ndarray) -> None:
        """Mask this sequence's row of logits in place (forbidden tokens at -inf); unchanged while the guide needs
        no mask (e.g. in the reasoning before the constraint starts)."""
        if not self.guide.needs_mask():
            return
        self._bitmask.fill(0)
        if self.guide.uses_grammar:
            self.guide.grammars.fill([(self.guide.matcher, 0)], _Pointer(self._bitmask))
        words = self._bitmask.view(np.uint32)
        self.guide.finish_mask(words[0])
        allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[: self.vocab_size]
        logits[: self.vocab_size][allowed == 0] = -np.inf

    def accept(self, token: int) -> bool:
        """The sampled token; True when the constraint is complete (the answer ends with ``stop``)."""
        return self.guide.accept(token)


class _Pointer:
    """What TokenizerGrammars.fill reads of a bitmask (a numpy array here, a torch tensor in the HF engine)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape

    def data_ptr(self) -> int:
        return self._array.ctypes.data


def new_mask(grammars: TokenizerGrammars, constraint: Any, stop_ids: frozenset[int], vocab_size: int) -> LogitsMask:
    return LogitsMask(Guide(grammars, constraint, stop_ids), vocab_size)
