"""A preallocated, slot-indexed KV cache that transformers' attention layers write into.

Per layer, keys and values are one tensor ``[rows, kv_heads, capacity, head_dim]``: row ``i`` belongs to the sequence
in batch slot ``i``. Each forward pass covers a contiguous range of rows, and every new token writes at its own
position (rows may be at different lengths); the attention mask hides what a row has not written yet. Nothing is
concatenated per step, so a decode step costs the same at token 10 and token 1000, and a row's tokens never move
unless the scheduler compacts the batch (``move_row``).

It duck-types the part of transformers' ``Cache`` that attention layers use: ``update(keys, values, layer_idx)``.
Layers are allocated on their first write, so each layer takes its own shape and dtype from the model.
"""

from __future__ import annotations

import torch

ROW_STEP = 4  # rows are allocated in steps of this many
LENGTH_STEP = 128  # capacity (tokens per row) grows in steps of this many


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


class SlotKVCache:
    """Keys and values of every running sequence, one batch row (slot) per sequence."""

    is_compileable = False

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.rows = self.capacity = 0
        # The current forward pass: rows [row_start, row_start + n) write at ``positions`` [n, q].
        self._row_start = 0
        self._row_index = torch.zeros(0, 1, dtype=torch.long)
        self._positions = torch.zeros(0, 1, dtype=torch.long)
        self._kv_length = 0

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys.values(), *self.values.values()))

    # --- memory ---------------------------------------------------------------------------------------
    def reserve(self, rows: int, capacity: int) -> None:
        """Grow (never shrink) to at least ``rows`` x ``capacity`` tokens, keeping what is stored."""
        if rows <= self.rows and capacity <= self.capacity:
            return
        self.rows = round_up(max(rows, self.rows), ROW_STEP)
        self.capacity = round_up(max(capacity, self.capacity), LENGTH_STEP)
        self.keys = {layer: self._grown(old) for layer, old in self.keys.items()}
        self.values = {layer: self._grown(old) for layer, old in self.values.items()}

    def _zeros(self, like: torch.Tensor) -> torch.Tensor:
        # zeros, not empty: masked-out slots get a zero attention weight, and 0 * NaN would still be NaN
        shape = (self.rows, like.shape[1], self.capacity, like.shape[3])
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def _grown(self, old: torch.Tensor) -> torch.Tensor:
        new = self._zeros(old)
        new[: old.shape[0], :, : old.shape[2]] = old
        return new

    def release(self) -> None:
        """Free every tensor (the batch is empty)."""
        self.keys, self.values = {}, {}
        self.rows = self.capacity = 0

    def copy_prefix(self, source: int, target: int, length: int) -> None:
        """Row ``target`` gets row ``source``'s first ``length`` positions (batch compaction, shared prefixes)."""
        for layer in (*self.keys.values(), *self.values.values()):
            layer[target, :, :length] = layer[source, :, :length]

    # --- one forward pass -----------------------------------------------------------------------------
    def plan(self, row_start: int, positions: torch.Tensor, kv_length: int) -> None:
        """The next forward covers rows ``row_start:row_start + n``; ``positions`` [n, q] says where each new token
        goes; attention reads the first ``kv_length`` positions of each row."""
        self._row_start, self._positions, self._kv_length = row_start, positions, kv_length
        self._row_index = torch.arange(positions.shape[0], device=positions.device)[:, None]  # [n, 1]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values [n, kv_heads, q, head_dim]; return the rows' keys/values
        [n, kv_heads, kv_length, head_dim] (views, no copy)."""
        if layer_idx not in self.keys:
            self.keys[layer_idx], self.values[layer_idx] = self._zeros(key_states), self._zeros(value_states)
        stop = self._row_start + key_states.shape[0]
        keys = self.keys[layer_idx][self._row_start : stop]  # [n, kv_heads, capacity, head_dim]
        values = self.values[layer_idx][self._row_start : stop]
        keys[self._row_index, :, self._positions] = key_states.transpose(1, 2)  # [n, q, kv_heads, head_dim]
        values[self._row_index, :, self._positions] = value_states.transpose(1, 2)
        return keys[:, :, : self._kv_length], values[:, :, : self._kv_length]

    @property
    def row_start(self) -> int:
        """The first row of the planned forward pass."""
        return self._row_start

    def layer_tensors(self, num_layers: int, kv_heads: int | None = None, head_dim: int | None = None,
                      dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """Every layer's whole key and value tensors [rows, kv_heads, capacity, head_dim], for kernels that write
        and read the planned rows themselves; None until every layer has been written once, unless the layers'
        shape is given (``kv_heads``, ``head_dim``, ``dtype``: then the missing layers are allocated here, on the
        CPU)."""
        if len(self.keys) < num_layers:
            if kv_heads is None or head_dim is None:
                return None
            like = torch.empty(0, kv_heads, 0, head_dim, dtype=dtype)
            for layer in range(num_layers):
                if layer not in self.keys:
                    self.keys[layer], self.values[layer] = self._zeros(like), self._zeros(like)
        return [self.keys[i] for i in range(num_layers)], [self.values[i] for i in range(num_layers)]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._kv_length
