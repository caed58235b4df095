"""One request's constrained decoding: where it is (reasoning, or the grammar), which tokens its next step may
take, and when the answer is complete. Engine-independent; the engines give it the token each step chose.

Phases: ``opening`` (a reasoning model's answer may open its reasoning with a start marker, or the grammar starts
at once), ``marker`` (the rest of a start marker written over several tokens), ``reasoning`` (no constraint until
an end marker; a token that would complete an end marker and write more after it is refused, so the grammar starts
exactly after the marker), ``grammar`` (the mask is the grammar's; the stop tokens are allowed once it accepts).
The answer is complete when the grammar allows nothing more but the end: the engine finishes it with ``stop``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from lmchat.errors import EngineError
from lmchat.structured.backend import TokenizerGrammars
from lmchat.structured.constraint import Constraint


class MarkerTable:
    """For one end marker and vocabulary: the tokens that would complete the marker and go on after it, by how
    much of the marker the text already ends with (``overshoot[k]``: after ``marker[:k]``)."""

    def __init__(self, marker: bytes, token_bytes: list[bytes]) -> None:
        self.marker = marker
        size = len(marker)
        self.overshoot: dict[int, np.ndarray] = {}
        for k in range(size):
            rest = marker[k:]
            if k == 0:
                ids = [i for i, b in enumerate(token_bytes) if (at := b.find(marker)) != -1 and at + size < len(b)]
            else:
                ids = [i for i, b in enumerate(token_bytes) if len(b) > len(rest) and b.startswith(rest)]
            if ids:
                self.overshoot[k] = np.array(ids, dtype=np.int64)

    def banned(self, tail: bytes) -> list[np.ndarray]:
        return [ids for k, ids in self.overshoot.items() if k == 0 or tail.endswith(self.marker[:k])]


class Guide:
    """The constrained-decoding state of one request, for a tokenizer's :class:`TokenizerGrammars`."""

    def __init__(self, grammars: TokenizerGrammars, constraint: Constraint, stop_ids: Iterable[int]) -> None:
        self.grammars = grammars
        self.matcher = grammars.matcher(constraint)
        self.stop_ids = np.array(sorted(stop_ids), dtype=np.int64)
        gate = constraint.reasoning
        self.phase = "grammar" if gate is None else "reasoning" if gate.in_reasoning else "opening"
        self._ends = [_marker_table(grammars, m.encode()) for m in gate.end_markers] if gate else []
        self._starts = {}  # first token id of a start marker -> the marker's other ids
        if gate is not None and not gate.in_reasoning:
            for marker in gate.start_markers:
                ids = grammars.tokenize(marker)
                if ids:
                    self._starts.setdefault(ids[0], ids[1:])
        self._opened: set[int] = set()  # start-marker tokens this step's mask allowed beyond the grammar
        self._forced: list[int] = []
        self._tail = b""

    # --- the mask -------------------------------------------------------------------------------------
    @property
    def uses_grammar(self) -> bool:
        """This step's mask starts from the grammar's (filled by the batched call)."""
        return self.phase in ("grammar", "opening")

    def needs_mask(self) -> bool:
        """Whether this step's token is constrained at all (reasoning usually is not)."""
        return self.phase != "reasoning" or bool(self._banned())

    def finish_mask(self, row: np.ndarray) -> None:
        """Complete this step's mask ``row`` (uint32 words, one bit per token), after the grammar filled it (for
        :attr:`uses_grammar`) or not (then it starts from nothing allowed)."""
        if self.phase == "marker":
            _set(row, [self._forced[0]])
        elif self.phase == "reasoning":
            row.fill(0xFFFFFFFF)
            for ids in self._banned():
                _clear(row, ids)
        else:
            self._opened = {i for i in self._starts if not _get(row, i)} if self.phase == "opening" else set()
            _set(row, list(self._opened))
            if self.matcher.is_accepting():
                _set(row, self.stop_ids)

    def _banned(self) -> list[np.ndarray]:
        return [ids for table in self._ends for ids in table.banned(self._tail)]

    # --- the chosen token ---------------------------------------------------------------------------
    def accept(self, token_id: int) -> bool:
        """Take the token the step chose (not a stop token); True when the answer is complete."""
        if self.phase == "opening" and token_id in self._opened:
            self._forced = list(self._starts[token_id])
            self.phase = "marker" if self._forced else "reasoning"
            return False
        if self.phase == "marker":
            self._forced.pop(0)
            self.phase = "marker" if self._forced else "reasoning"
            return False
        if self.phase == "reasoning":
            self._reasoning(token_id)
            return False
        self.phase = "grammar"
        if not self.matcher.consume_token(token_id):
            raise EngineError(f"Constrained decoding failed: the grammar refused token {token_id} "
                              f"({self.matcher.get_error() or 'no reason given'}).")
        return self.matcher.is_stopped()

    def _reasoning(self, token_id: int) -> None:
        self._tail += self.grammars.token_bytes[token_id]
        for table in self._ends:
            at = self._tail.find(table.marker)
            if at != -1:
                self.phase = "grammar"
                rest = self._tail[at + len(table.marker) :]
                if rest:  # only a vocabulary the overshoot tables missed gets here
                    raise EngineError("Constrained decoding failed: a token ran past the end of the reasoning.")
                return
        longest = max((len(table.marker) for table in self._ends), default=1)
        self._tail = self._tail[-longest:]


def _marker_table(grammars: TokenizerGrammars, marker: bytes) -> MarkerTable:
    """The marker's overshoot table for this vocabulary (built once per tokenizer and marker)."""
    table = grammars.marker_tables.get(marker)
    if table is None:
        table = grammars.marker_tables[marker] = MarkerTable(marker, grammars.token_bytes)
    return table


def _set(row: np.ndarray, ids: Any) -> None:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size:
        np.bitwise_or.at(row, ids >> 5, (np.uint32(1) << (ids & 31).astype(np.uint32)))


def _clear(row: np.ndarray, ids: np.ndarray) -> None:
    np.bitwise_and.at(row, ids >> 5, ~(np.uint32(1) << (ids & 31).astype(np.uint32)))


def _get(row: np.ndarray, token_id: int) -> bool:
    return bool((int(row[token_id >> 5]) >> (token_id & 31)) & 1)
