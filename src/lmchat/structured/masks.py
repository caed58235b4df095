"""One decode step's token masks, applied to the logits of the rows that need one (CPU logits, in place).

Rows without a constraint, and constrained rows whose step is free (inside the reasoning), are untouched; the
others get their row of one bitmask (filled by the grammar library in one batched, multi-threaded call) written
into their logits, so every row, constrained or not, is then chosen by the engine's usual code (the batch-wide
argmax for greedy rows, its own sampler otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmchat.structured.guide import Guide


class StepMasks:
    """Reusable bitmask buffer and the per-step mask application."""

    def __init__(self) -> None:
        self._buffer = torch.zeros(0, 0, dtype=torch.int32)

    def apply(self, guides: Sequence[Guide | None], logits: torch.Tensor,
              keep: Sequence[bool] = ()) -> dict[int, torch.Tensor]:
        """Mask ``logits`` [rows, vocab] (float32, CPU, contiguous) in place: row ``i`` gets ``guides[i]``'s mask
        (None: unconstrained), disallowed tokens at -inf. Returns an unmasked copy of each masked row ``i`` with
        ``keep[i]`` (its log-probabilities are reported under the model's own distribution)."""
        rows = [i for i, guide in enumerate(guides) if guide is not None and guide.needs_mask()]
        if not rows:
            return {}
        kept = {i: logits[i].clone() for i in rows if i < len(keep) and keep[i]}
        vocab = logits.shape[-1]
        bitmask = self._rows(len(rows), (vocab + 31) // 32)
        grammar_rows = [(guides[i].matcher, j) for j, i in enumerate(rows) if guides[i].uses_grammar]
        if grammar_rows:
            guides[rows[0]].grammars.fill(grammar_rows, bitmask)
        words = bitmask.numpy().view(np.uint32)
        for j, i in enumerate(rows):
            guides[i].finish_mask(words[j])
        refused = np.unpackbits((~words).view(np.uint8), axis=1, count=vocab, bitorder="little").view(np.bool_)
        scores = logits.numpy()
        for j, i in enumerate(rows):  # numpy on one thread: a small op that would wake torch's OpenMP pool
            np.copyto(scores[i], -np.inf, where=refused[j])
        return kept

    def _rows(self, count: int, width: int) -> torch.Tensor:
        """A zeroed, contiguous [count, width] int32 view of the buffer (grown when needed)."""
        if self._buffer.shape[0] < count or self._buffer.shape[1] != width:
            self._buffer = torch.zeros(max(count, 8), width, dtype=torch.int32)
        view = self._buffer[:count]
        view.zero_()
        return view
