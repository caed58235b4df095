"""One request in the llama.cpp batch: where its prompt stands, its own sampler chain, and what each sampled token
does (stop, emit, count against the budget). Runs on the engine's model thread only.

A sequence may carry a :class:`LogitsHook`: the one place where a request changes its own row of logits before its
sampler chain runs (structured output's grammar masks) and hears which token was chosen.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import llama_cpp
import numpy as np

from lmchat.engines.base import GenerationRequest
from lmchat.engines.events import EngineEvent, FinishReason, Finished, TextDelta, TokenLogprob
from lmchat.engines.llamacpp.kv_cells import Entry
from lmchat.generation.token_rules import TokenRules

if TYPE_CHECKING:
    from lmchat.engines.llamacpp.model import LoadedModel

Emit = Callable[[EngineEvent | BaseException], None]


class LogitsHook(Protocol):
    """A request's own step before and after its sampler chain (on the model thread)."""

    def apply(self, logits: np.ndarray) -> None:
        """Change this sequence's row of raw logits in place (e.g. -inf for tokens a grammar forbids)."""

    def accept(self, token: int) -> bool:
        """The sampled token; True ends the answer with finish reason ``stop`` (e.g. a grammar is complete)."""


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    emit: Emit
    is_aborted: Callable[[], bool]
    sampler: Any = None  # llama_cpp's LlamaSampler: this request's own chain (penalties, bias, top-k/p, seed, ...)
    entry: Entry | None = None  # its llama.cpp sequence id and the tokens its cells hold
    follow: tuple[Entry, int] | None = None  # copy this many cells of that entry once it holds them
    next_token: int | None = None  # sampled, evaluated at the next step
    generated: int = 0
    reused: int = 0  # prompt tokens taken from another sequence's cells
    logits_hook: LogitsHook | None = None
    kept_ids: frozenset[int] = frozenset()  # special tokens the request's parsers read: kept in the text
    rules: TokenRules | None = None  # min_tokens, bad_words, allowed_token_ids
    answer: list[int] = field(default_factory=list)  # the tokens generated so far
    _allowed: np.ndarray | None = None  # allowed_token_ids as a mask over the vocabulary
    _utf8: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.request.prompt_token_ids

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def is_prefilling(self) -> bool:
        return self.follow is None and self.entry.length < len(self.prompt)

    def prompt_chunk(self, most: int) -> tuple[int, tuple[int, ...]]:
        """The position and tokens of the next prompt piece to evaluate (at most ``most`` tokens)."""
        start = self.entry.length
        return start, self.prompt[start : start + most]

    def take_token(self, model: LoadedModel, row: int) -> Finished | None:
        """Sample from the logits of batch row ``row``; emit the token, or finish. None: it goes on."""
        params = self.request.params
        raw = None
        if self.logits_hook is not None or self.rules is not None:
            logits = row_logits(model, row)
            raw = logits.copy() if params.logprobs else None  # log-probabilities are the model's, before the hook
            if self.logits_hook is not None:
                self.logits_hook.apply(logits)
            if self.rules is not None:
                self._apply_rules(logits)
        token = self.sampler.sample(model, row)  # llama_sampler_sample: applies the chain, then accepts the token
        self.generated += 1
        self.answer.append(token)
        if token in params.stop_token_ids or (not params.ignore_eos and model.is_end_of_generation(token)):
            return self.finish("stop", text(model, token))
        logprobs = token_logprobs(model, row, token, params.top_logprobs, raw) if params.logprobs else ()
        piece = model.detokenize([token], special=not params.skip_special_tokens or token in self.kept_ids)
        self.emit(TextDelta(self._utf8.decode(piece), 1, (token,), logprobs))
        if self.logits_hook is not None and self.logits_hook.accept(token):
            return self.finish("stop")
        if self.generated >= self.request.max_tokens:
            return self.finish("length")
        self.next_token = token
        return None

    def _apply_rules(self, logits: np.ndarray) -> None:
        """The request's token rules (:class:`~lmchat.generation.token_rules.TokenRules`) written into its row."""
        rules = self.rules
        if rules.allowed is not None:
            if self._allowed is None:
                self._allowed = np.zeros(len(logits), dtype=bool)
                self._allowed[list(rules.allowed)] = True
            logits[~self._allowed] = -np.inf
        banned = rules.banned(self.answer)
        if banned:
            logits[banned] = -np.inf

    def finish(self, reason: FinishReason, stop_token: str | None = None) -> Finished:
        """Emit the rest of a character cut mid-way and free the sampler chain; return the Finished event, which the
        worker emits once the sequence has left the batch (so a caller that sees it sees the engine's state after)."""
        tail = self._utf8.decode(b"", final=True)
        if tail:
            self.emit(TextDelta(tail, 0))
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None
        return Finished(reason, len(self.prompt), self.generated, stop_token, cached_tokens=self.reused)


def special_token_ids(model: LoadedModel, tokens: tuple[str, ...]) -> frozenset[int]:
    """The ids of those ``tokens`` that are one token of the vocabulary (``GenerationRequest.keep_special_tokens``:
    the special tokens a parser reads, which the answer's text keeps even with ``skip_special_tokens``)."""
    ids = (model.tokenize(token.encode("utf-8"), add_bos=False, special=True) for token in tokens)
    return frozenset(found[0] for found in ids if len(found) == 1)


def text(model: LoadedModel, token: int) -> str:
    return model.detokenize([token], special=True).decode("utf-8", "replace")


def row_logits(model: LoadedModel, row: int) -> np.ndarray:
    """Batch row ``row``'s logits: a writable view of llama.cpp's own buffer."""
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, row), shape=(model.n_vocab(),))


def token_logprobs(model: LoadedModel, row: int, token: int, top: int,
                   raw: np.ndarray | None = None) -> tuple[TokenLogprob, ...]:
    """The chosen token's log-probability under the model's raw logits of batch row ``row`` (``raw``: their copy
    from before a logits hook), and the ``top`` best alternatives."""
    logits = raw if raw is not None else row_logits(model, row)
    logprobs = logits - np.logaddexp.reduce(logits.astype(np.float64))
    top = len(logprobs) if top == -1 else top  # -1: the whole vocabulary
    best = np.argsort(-logprobs)[:top] if top else ()
    alternatives = tuple((text(model, int(i)), int(i), float(logprobs[i])) for i in best)
    return (TokenLogprob(text(model, token), token, float(logprobs[token]), alternatives),)
