"""Batched LoRA: many adapters served side by side in one continuous batch, the base weights left unmerged.

Each row of a forward pass carries an adapter slot (0: none). After every target projection, ``B_i (A_i x)`` of the
row's adapter is added: each site (a projection, or a fused one: the lean forward's q/k/v and gate/up) holds, per
loaded adapter, A^T [in, r] and B^T [r, out] (a fused site's B is block-diagonal: each part's B sits at its output
slice). A step whose rows all use one adapter adds ``(x A^T) B^T`` to the output in place (``addmm_``); a mixed
step does so per adapter on its rows (segmented: ``index_select``, two multiplies, ``index_add_``), so no row
multiplies another adapter's weights. A step without adapter rows adds nothing (and may take the native one-token
path).

The transformers forward reaches the same sites through :class:`LoraLinear`, which wraps a target ``nn.Linear``;
the lean forward (:mod:`lmchat.engines.hf.lean`) asks for its fused sites (``LeanDecoder.lora_sites``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from lmchat.engines.hf.lora_weights import AdapterWeights, read_adapter
from lmchat.errors import InvalidRequestError

logger = logging.getLogger(__name__)


class LoraStep:
    """The adapter slot of each row of the forward pass now running (None: no row uses an adapter)."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # [n] slots
        self.slot_list: list[int] = []
        self.slots: frozenset[int] = frozenset()
        self.uniform: int | None = None  # every row uses this one slot
        self._groups: dict[int, list[tuple[int, torch.Tensor]]] = {}
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @property
    def active(self) -> bool:
        return self.rows is not None

    def set(self, slots: list[int]) -> None:
        self._groups = {}
        self.slot_list = list(slots)
        used = frozenset(slots) - {0}
        if not used:
            self.rows, self.slots, self.uniform = None, frozenset(), None
            return
        self.slots = used
        self.uniform = slots[0] if len(set(slots)) == 1 else None
        self.rows = torch.tensor(slots, device=self.device)

    def clear(self) -> None:
        self.set([])

    @contextmanager
    def running(self, slots: list[int]) -> Iterator[None]:
        """The adapter slots of the rows of the forward pass run in the block (cleared after it)."""
        self.set(slots)
        try:
            yield
        finally:
            self.clear()

    def groups(self, length: int) -> list[tuple[int, torch.Tensor]]:
        """(slot, the flat indices of its rows' ``length`` positions) for each adapter of the step (once per
        step and length)."""
        groups = self._groups.get(length)
        if groups is None:
            groups = []
            for slot in sorted(self.slots):
                index = torch.tensor([i for i, s in enumerate(self.slot_list) if s == slot], device=self.device)
                if length > 1:
                    index = (index[:, None] * length + torch.arange(length, device=self.device)).flatten()
                groups.append((slot, index))
            self._groups[length] = groups
        return groups


@dataclass
class LoraDelta:
    """The LoRA updates of the loaded adapters at one site: per slot, A^T [in, r] and B^T [r, out] (a fused site's
    B^T is block-diagonal over its parts)."""

    step: LoraStep
    by_slot: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def add_to(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out`` (the site's output for ``x`` [n, q, in]) plus the update of each row's adapter, in place."""
        step = self.step
        if step.rows is None or step.slots.isdisjoint(self.by_slot):
            return out
        out = out if out.is_contiguous() else out.contiguous()
        rows, flat = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
        if step.uniform is not None:  # every row on one adapter
            at, bt = self.by_slot[step.uniform]
            flat.addmm_(rows @ at, bt)
            return out
        for slot, index in step.groups(x.shape[1]):  # the rows of each adapter, multiplied by its A and B alone
            pair = self.by_slot.get(slot)
            if pair is not None:
                flat.index_add_(0, index, (rows.index_select(0, index) @ pair[0]) @ pair[1])
        return out


def build_delta(step: LoraStep, parts: list[tuple[str, int]], out_features: int,
                adapters: dict[int, AdapterWeights], like: torch.Tensor) -> LoraDelta | None:
    """The site made of ``parts`` (module name, first output row) over ``adapters`` (slot -> weights)."""
    by_slot = {}
    for slot, adapter in sorted(adapters.items()):
        a_parts, b_parts = [], []
        for module, offset in parts:
            lora = adapter.modules.get(module)
            if lora is None:
                continue
            b = like.new_zeros(out_features, lora.rank)
            b[offset : offset + lora.b.shape[0]] = lora.b
            a_parts.append(lora.a)
            b_parts.append(b)
        if a_parts:
            by_slot[slot] = (torch.cat(a_parts).t().contiguous(), torch.cat(b_parts, dim=1).t().contiguous())
    return LoraDelta(step, by_slot) if by_slot else None


class LoraLinear(torch.nn.Module):
    """A target ``nn.Linear`` of the transformers forward, plus the step's LoRA update (``delta``)."""

    def __init__(self, base: torch.nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.delta: LoraDelta | None = None

    @property
    def weight(self) -> torch.Tensor | None:  # transformers reads some projections' weights (dtype checks)
        return getattr(self.base, "weight", None)  # a quantized base (quant.QuantizedLinear) has none

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.delta is not None:
            out = self.delta.add_to(x.reshape(x.shape[0], -1, x.shape[-1]), out)
        return out


class LoraBank:
    """The named adapters one model serves: their slots, weights and the sites they update (worker thread)."""

    def __init__(self, model: Any, lean: Any, max_rank: int, max_loras: int) -> None:
        self.model, self.lean = model, lean
        self.max_rank, self.max_loras = max_rank, max_loras
        self.step = LoraStep()
        parameter = next(model.parameters())
        self.step.device, self.step.dtype = parameter.device, parameter.dtype
        self.slots: dict[str, int] = {}
        self.adapters: dict[int, AdapterWeights] = {}
        self._wrapped: dict[str, LoraLinear] = {}
        if lean is not None:
            lean.lora_step = self.step

    @classmethod
    def for_runner(cls, model: Any, runner: Any, max_rank: int, max_loras: int) -> LoraBank:
        """The bank of a worker's model, updating the sites of the forward pass ``runner`` takes."""
        from lmchat.engines.hf.lean import LeanDecoder

        forward = getattr(runner, "forward", None)
        bank = cls(model, forward if isinstance(forward, LeanDecoder) else None, max_rank, max_loras)
        if hasattr(runner, "lora_step"):  # the DynamicRunner steps rows one at a time, each with its own slot
            runner.lora_step = bank.step
        return bank

    @staticmethod
    def slot_in(bank: LoraBank | None, name: str) -> int:
        """The slot of adapter ``name`` (the facade checked it; it may have been unloaded since)."""
        slot = bank.slots.get(name) if bank is not None else None
        if slot is None:
            raise InvalidRequestError(f"The adapter '{name}' is not loaded.", param="model")
        return slot

    def load(self, name: str, path: str) -> AdapterWeights:
        """Read, check and install an adapter; a bad one raises and changes nothing."""
        if len(self.slots) >= self.max_loras:
            raise InvalidRequestError(f"{self.max_loras} adapters are loaded (max_loras).", param="lora_name")
        adapter = read_adapter(name, path, self.model, self.max_rank)
        if self.lean is not None:
            outside = sorted(set(adapter.modules) - set(self.lean.lora_modules()))
            if outside:
                raise InvalidRequestError(
                    f"The LoRA adapter '{path}' targets {outside[0]}, which the lean forward does not update per "
                    "request (it updates the attention and MLP projections and lm_head).", param="lora_path")
        slot = min(set(range(1, self.max_loras + 1)) - set(self.adapters))
        self.slots[name], self.adapters[slot] = slot, adapter
        self._install()
        logger.info("LoRA adapter '%s' loaded from %s (rank %d, %d modules)", name, path, adapter.rank,
                    len(adapter.modules))
        return adapter

    def unload(self, name: str) -> None:
        slot = self.slots.pop(name)
        del self.adapters[slot]
        self._install()

    def _install(self) -> None:
        """Rebuild every site's update from the loaded adapters (rare: at each load and unload)."""
        like = next(self.model.parameters())
        targets = {module for adapter in self.adapters.values() for module in adapter.modules}
        for module in targets - set(self._wrapped):
            self._wrap(module)
        for module, wrapper in self._wrapped.items():
            base = wrapper.base
            wrapper.delta = build_delta(self.step, [(module, 0)], base.out_features, self.adapters, like)
        if self.lean is not None:
            for linear, parts, out_features, _ in self.lean.lora_sites():
                linear.lora = build_delta(self.step, parts, out_features, self.adapters, like)
            self.lean.sync_native_lora()

    def _wrap(self, module: str) -> None:
        parent_name, _, child = module.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        wrapper = LoraLinear(getattr(parent, child))
        setattr(parent, child, wrapper)
        self._wrapped[module] = wrapper
