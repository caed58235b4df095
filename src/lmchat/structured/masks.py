"""One decode step's token masks, applied to the logits of the rows that need one (torch, CPU logits).

Rows without a constraint, and constrained rows whose step is free (inside the reasoning), are untouched and keep
the engine's fast path; the others get their row of one bitmask (filled by the grammar library in one batched,
multi-threaded call) and a masked copy of their logits.
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

    def apply(self, guides: Sequence[Guide | None], logits: torch.Tensor) -> tuple[dict[int, int], torch.Tensor]:
        """``logits`` [rows, vocab] float32 CPU; row ``i`` belongs to ``guides[i]`` (None: unconstrained). Returns
        ``({row: j}, masked)``: ``masked[j]`` is the masked copy of each row that has a mask this step
        (disallowed tokens at -inf); no rows, an empty tensor."""
        rows = [i for i, guide in enumerate(guides) if guide is not None and guide.needs_mask()]
        if not rows:
            return {}, logits[:0]
        vocab = logits.shape[-1]
        bitmask = self._rows(len(rows), (vocab + 31) // 32)
        grammar_rows = [(guides[i].matcher, j) for j, i in enumerate(rows) if guides[i].uses_grammar]
        if grammar_rows:
            guides[rows[0]].grammars.fill(grammar_rows, bitmask)
        words = bitmask.numpy().view(np.uint32)
        for j, i in enumerate(rows):
            guides[i].finish_mask(words[j])
        allowed = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :vocab]  # [n, vocab] 0/1
        masked = logits[rows].masked_fill_(torch.from_numpy(allowed) == 0, float("-inf"))
        return {i: j for j, i in enumerate(rows)}, masked

    def _rows(self, count: int, width: int) -> torch.Tensor:
        """A zeroed, contiguous [count, width] int32 view of the buffer (grown when needed)."""
        if self._buffer.shape[0] < count or self._buffer.shape[1] != width:
            self._buffer = torch.zeros(max(count, 8), width, dtype=torch.int32)
        view = self._buffer[:count]
        view.zero_()
        return view
