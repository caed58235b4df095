"""Incremental detokenization: text deltas that never split a multi-byte character and join to the full text."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# How many prompt tokens to decode before the answer, so a leading space or merge decodes as it will in the end.
PREFIX_TOKENS = 4


def decode_dropping(decode: Callable[[list[int]], str], dropped: frozenset[int]) -> Callable[[Sequence[int]], str]:
    """A decoder of the ids outside ``dropped``: how an engine keeps the special tokens the answer's parsers read
    (``GenerationRequest.keep_special_tokens``) and drops the others, with ``decode`` keeping special tokens."""
    return lambda ids: decode([token for token in ids if token not in dropped])


class IncrementalDetokenizer:
    """Feed token ids one at a time; get the new text each adds (empty while a character is incomplete)."""

    def __init__(self, decode: Callable[[Sequence[int]], str], prompt_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(prompt_ids[-PREFIX_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or (full_text.endswith("\ufffd") and not final):
            return ""
        delta = full_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return delta
