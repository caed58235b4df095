"""The compute side of the worker: prefill and batched decode forward passes over transformers' model.

``SlotRunner`` keeps every running sequence's keys/values in one :class:`SlotKVCache` and runs one forward pass
for all decoding sequences per step, through the lean Llama-family forward (:mod:`lmchat.engines.hf.lean`) when
the model is one, else through transformers' own forward. ``DynamicRunner`` is the fallback for models whose
attention the slot cache cannot drive (sliding windows, linear attention, custom code): one transformers
``DynamicCache`` per sequence, stepped one at a time. ``pick_runner`` checks each candidate against a plain forward
pass on the loaded model and takes the first that matches: lean, transformers' forward on the slot cache,
sequential. A candidate that does not match leaves the model as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from lmchat.engines.hf.kv_cache import SlotKVCache
from lmchat.engines.hf.lean import Forward, LeanDecoder, packed_weights_wanted, unsupported_reason
from lmchat.engines.hf.multimodal import PromptEmbeds
from lmchat.engines.hf.quant import float32_activations
from lmchat.errors import EngineError

logger = logging.getLogger(__name__)


# --- pure helpers: the inputs of one forward pass ---------------------------------------------------------
Mask = torch.Tensor | dict[str, torch.Tensor]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean "may attend" -> 0 / most-negative float. CPU attention kernels run a float mask many times faster."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def attention_mask(allowed: torch.Tensor, distance: torch.Tensor, window: int | None, dtype: torch.dtype) -> Mask:
    """One additive mask, or for a model with sliding-window layers (``window``) transformers' mapping of one mask
    per layer type: a sliding layer also hides keys ``window`` or more positions behind the query."""
    full = additive_mask(allowed, dtype)
    if window is None:
        return full
    return {"full_attention": full, "sliding_attention": additive_mask(allowed & (distance < window), dtype)}


def sliding_window(model: Any) -> int | None:
    """The window of a model whose layers are partly sliding-window (transformers' ``layer_types``), else None."""
    config = model.config.get_text_config()
    if "sliding_attention" not in (getattr(config, "layer_types", None) or ()):
        return None
    return getattr(config, "sliding_window", None)


def decode_inputs(tokens: list[int], positions: list[int], device: torch.device, dtype: torch.dtype,
                  window: int | None = None) -> tuple[torch.Tensor, torch.Tensor, Mask]:
    """One new token per row at its own position -> input_ids [B, 1], position_ids [B, 1], mask [B, 1, 1, L]."""
    input_ids = torch.tensor(tokens, device=device)[:, None]
    position_ids = torch.tensor(positions, device=device)[:, None]
    kv_length = max(positions) + 1
    distance = position_ids - torch.arange(kv_length, device=device)[None, :]  # [B, L]
    mask = attention_mask(distance >= 0, distance, window, dtype)  # up to itself
    return input_ids, position_ids, _unsqueeze(mask, lambda m: m[:, None, None, :])


def prefill_inputs(token_ids: list[int], start: int, device: torch.device, dtype: torch.dtype,
                   window: int | None = None, groups: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, Mask]:
    """A chunk of q prompt tokens after ``start`` cached ones -> [1, q], [1, q], causal mask [1, 1, q, start + q].
    ``groups`` [start + q]: positions of one group (>= 0) also see each other (Gemma 3's images)."""
    input_ids = torch.tensor([token_ids], device=device)
    end = start + len(token_ids)
    position_ids = torch.arange(start, end, device=device)[None, :]
    distance = position_ids[0, :, None] - torch.arange(end, device=device)[None, :]  # [q, L]
    allowed = distance >= 0
    if groups is not None:
        query_groups = groups[start:end, None]
        allowed = allowed | ((query_groups == groups[None, :end]) & (query_groups >= 0))
    mask = attention_mask(allowed, distance, window, dtype)
    return input_ids, position_ids, _unsqueeze(mask, lambda m: m[None, None])


def _unsqueeze(mask: Mask, shape: Callable[[torch.Tensor], torch.Tensor]) -> Mask:
    return {kind: shape(m) for kind, m in mask.items()} if isinstance(mask, dict) else shape(mask)


@torch.inference_mode()
def last_logits(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: Mask | None,
                cache: Any) -> torch.Tensor:
    """Logits of each row's last token, [n, vocab] float32."""
    output = model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, past_key_values=cache,
                   use_cache=True, logits_to_keep=1)
    return output.logits[:, -1].float()


@torch.inference_mode()
def embeds_logits(model: Any, embeds: torch.Tensor, position_ids: torch.Tensor, mask: Mask | None,
                  cache: Any) -> torch.Tensor:
    """:func:`last_logits` from input embeddings (a media prompt's chunk, see lmchat.engines.hf.multimodal)."""
    output = model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=mask, past_key_values=cache,
                   use_cache=True, logits_to_keep=1)
    return output.logits[:, -1].float()


# --- runners ---------------------------------------------------------------------------------------------
class SlotRunner:
    """All running sequences in one slot cache; one forward pass per decode step."""

    can_share_prefix = True

    def __init__(self, model: Any, device: torch.device, forward: Forward | None = None, name: str = "transformers"
                 ) -> None:
        self.model, self.device = model, device
        self.forward: Forward = forward or partial(last_logits, model)
        self.name = name  # which forward pass: "lean" or "transformers"
        self.cache = SlotKVCache()
        self.window = sliding_window(model)

    def reserve(self, rows: int, capacity: int) -> None:
        self.cache.reserve(rows, capacity)

    def prefill(self, slot: int, token_ids: list[int], start: int) -> torch.Tensor:
        """Feed a prompt chunk into row ``slot`` -> logits of its last token [vocab]."""
        input_ids, position_ids, mask = prefill_inputs(token_ids, start, self.device, self.model.dtype, self.window)
        self.cache.plan(slot, position_ids, start + len(token_ids))
        return self.forward(input_ids, position_ids, mask, self.cache)[0]

    @property
    def takes_prompt_rows(self) -> bool:
        """Whether :meth:`prefill_rows` runs several rows' chunks as one pass (the lean forward's native step)."""
        return bool(getattr(self.forward, "takes_native_chunks", False))

    def prefill_rows(self, chunks: list[tuple[int, list[int], int]]) -> list[torch.Tensor]:
        """Prompt chunks ``(slot, token ids, start)`` of several rows (no adapter rows) -> each one's last-token
        logits: one native pass where :attr:`takes_prompt_rows`, else one forward per chunk."""
        if self.takes_prompt_rows:
            return list(self.forward.native_chunks(chunks, self.cache))
        return [self.prefill(slot, ids, start) for slot, ids, start in chunks]

    def prefill_embeds(self, slot: int, prompt: PromptEmbeds, start: int, end: int) -> torch.Tensor:
        """Feed prompt[start:end] of a media prompt (its embeddings) into row ``slot`` -> logits of its last token."""
        embeds, position_ids = prompt.chunk(start, end)
        groups = prompt.groups(end, self.device)
        _, cache_positions, mask = prefill_inputs(list(range(start, end)), start, self.device, self.model.dtype,
                                                  self.window, groups)
        self.cache.plan(slot, cache_positions, end)
        return embeds_logits(self.model, embeds, position_ids, mask, self.cache)[0]

    def decode(self, tokens: list[int], positions: list[int], active: list[bool],
               offsets: list[int] | None = None) -> torch.Tensor:
        """Rows 0..B-1 each feed one token -> logits [B, vocab]. Inactive rows (still prefilling) feed a dummy token
        at their next free position, which their next prompt chunk overwrites. ``offsets``: each row's position
        id is its cache position plus this (M-RoPE rows after their media; see multimodal.PromptEmbeds.delta)."""
        input_ids, position_ids, mask = decode_inputs(tokens, positions, self.device, self.model.dtype, self.window)
        self.cache.plan(0, position_ids, max(positions) + 1)
        if offsets is not None and any(offsets):
            position_ids = position_ids + torch.tensor(offsets, device=self.device)[:, None]
        return self.forward(input_ids, position_ids, mask, self.cache)

    def copy_prefix(self, source: int, target: int, length: int) -> None:
        self.cache.copy_prefix(source, target, length)

    def move_row(self, source: int, target: int, length: int) -> None:
        self.cache.copy_prefix(source, target, length)

    def release(self) -> None:
        self.cache.release()

    @property
    def num_bytes(self) -> int:
        return self.cache.num_bytes


class DynamicRunner:
    """One transformers DynamicCache per slot, stepped one sequence at a time (no batching)."""

    can_share_prefix = False

    def __init__(self, model: Any, device: torch.device) -> None:
        self.model, self.device = model, device
        self.caches: dict[int, Any] = {}
        self.lora_step: Any = None  # lmchat.engines.hf.lora.LoraStep: rows are stepped one at a time here

    def reserve(self, rows: int, capacity: int) -> None:
        pass

    def prefill(self, slot: int, token_ids: list[int], start: int, offset: int = 0) -> torch.Tensor:
        from transformers import DynamicCache

        if start == 0:
            self.caches[slot] = DynamicCache(config=self.model.config)
        input_ids = torch.tensor([token_ids], device=self.device)
        # explicit positions: a multimodal model may otherwise derive them from state its last media prompt left
        positions = torch.arange(start, start + len(token_ids), device=self.device)[None] + offset
        return last_logits(self.model, input_ids, positions, None, self.caches[slot])[0]

    takes_prompt_rows = False  # one sequence at a time

    def prefill_rows(self, chunks: list[tuple[int, list[int], int]]) -> list[torch.Tensor]:
        return [self.prefill(slot, ids, start) for slot, ids, start in chunks]

    def prefill_embeds(self, slot: int, prompt: PromptEmbeds, start: int, end: int) -> torch.Tensor:
        from transformers import DynamicCache

        if start == 0:
            self.caches[slot] = DynamicCache(config=self.model.config)
        embeds, position_ids = prompt.chunk(start, end)
        return embeds_logits(self.model, embeds, position_ids, None, self.caches[slot])[0]

    def decode(self, tokens: list[int], positions: list[int], active: list[bool],
               offsets: list[int] | None = None) -> torch.Tensor:
        offsets = offsets or [0] * len(tokens)
        adapters = list(self.lora_step.slot_list) if self.lora_step is not None else []
        rows = [self._decode_row(slot, token, position, offset, adapters) if is_active else None
                for slot, (token, position, is_active, offset) in enumerate(zip(tokens, positions, active, offsets))]
        template = next(row for row in rows if row is not None)
        return torch.stack([torch.zeros_like(template) if row is None else row for row in rows])

    def _decode_row(self, slot: int, token: int, position: int, offset: int, adapters: list[int]) -> torch.Tensor:
        if not adapters:
            return self.prefill(slot, [token], position, offset)
        with self.lora_step.running([adapters[slot]]):
            return self.prefill(slot, [token], position, offset)

    def move_row(self, source: int, target: int, length: int) -> None:
        self.caches[target] = self.caches.pop(source)

    def release(self) -> None:
        self.caches.clear()

    @property
    def num_bytes(self) -> int:
        return 0


def pick_runner(model: Any, device: torch.device, packed_weights: str = "auto") -> SlotRunner | DynamicRunner:
    """The first runner that reproduces a plain forward pass on this model: lean, transformers' forward on the
    slot cache, or the sequential fallback. ``packed_weights``: auto/on/off (see lean.packed_weights_wanted)."""
    lean_only = getattr(model, "lean_only", False)  # a directly loaded model (lmchat.engines.hf.direct_model)
    candidates: list[Callable[[], SlotRunner]] = [] if lean_only else [lambda: SlotRunner(model, device)]
    reason = unsupported_reason(model)
    if reason is None:
        packed = packed_weights_wanted(model, packed_weights)  # "on" where impossible: a ConfigError, not a fallback
        candidates.insert(0, lambda: SlotRunner(model, device, LeanDecoder(model, packed=packed), name="lean"))
    else:
        logger.info("Lean forward not used: %s.", reason)
    for make in candidates:
        runner = None
        try:
            runner = make()
            matches = _slot_runner_matches(model, runner, device)
        except Exception as exc:  # noqa: BLE001 - any failure: this model's attention does not take our cache
            logger.info("Runner unsupported for this model (%s); trying the next one.", exc)
            matches = False
        if runner is not None:
            runner.release()
        if matches:
            if isinstance(runner.forward, LeanDecoder):
                runner.forward.share_weights()  # chosen: only now does the model's memory change
            return runner
    if lean_only:
        raise EngineError("The lean forward does not reproduce this directly loaded model's reference forward (see "
                          "the log); set direct_load: off to load it through transformers.")
    logger.info("Slot KV cache unsupported for this model; falling back to sequential decoding.")
    return DynamicRunner(model, device)


def native_unsupported(runner: SlotRunner | DynamicRunner) -> str | None:
    """Why the native one-token step cannot serve this runner (None: it can)."""
    if not isinstance(getattr(runner, "forward", None), LeanDecoder):
        return "a Llama-family model on the lean forward (Llama, SmolLM, Mistral, Qwen2)"
    return runner.forward.native_unsupported()


def enable_native(runner: SlotRunner, module: Any, activations: str = "float32") -> bool:
    """Let ``runner``'s lean forward take one-token steps through ``module`` (its batched quantized multiplies with
    ``activations``) if that reproduces a plain forward pass (checked on a cache of its own: the runner's rows may
    hold running sequences)."""
    lean: LeanDecoder = runner.forward
    try:
        lean.use_native(module)  # checked with float32 activations (see quant.float32_activations)
        probe = SlotRunner(runner.model, runner.device, lean, name="lean+native")
        matches = _slot_runner_matches(runner.model, probe, runner.device)
        probe.release()
        if matches and activations != "float32":
            lean.use_native(module, activations)
    except Exception as exc:  # noqa: BLE001 - any failure: keep the Python forward
        logger.info("Native decode step unusable (%s); keeping the Python forward.", exc)
        matches = False
    if not matches:
        lean.native = None
        return False
    runner.name = "lean+native"
    return True


# The startup check's two prompts (token ids, taken modulo the vocabulary) and the five prefixes whose last logits
# it compares: after the chunked prefill, the second prefill, the batched decode step, and the one-row step.
_CHECK_FIRST, _CHECK_SECOND = [7 * i + 3 for i in range(10)], [5 * i + 11 for i in range(5)]


@torch.inference_mode()
def _slot_runner_matches(model: Any, runner: SlotRunner, device: torch.device) -> bool:
    """Two prompts of different lengths, one prefilled in two chunks, one batched decode step, then a step of the
    first prompt alone (one row: the most common step, which may take another path). With float32 activations
    throughout (quant.float32_activations)."""
    with float32_activations():
        return _matches(model, runner, device)


def _matches(model: Any, runner: SlotRunner, device: torch.device) -> bool:
    vocab = model.config.get_text_config().vocab_size
    first, second = [i % vocab for i in _CHECK_FIRST], [i % vocab for i in _CHECK_SECOND]
    runner.reserve(2, 16)
    runner.prefill(0, first[:4], 0)
    got = [runner.prefill(0, first[4:8], 4), runner.prefill(1, second[:4], 0)]
    got.extend(runner.decode([first[8], second[4]], [8, 4], [True, True]))
    got.extend(runner.decode([first[9]], [9], [True]))
    expected = _plain_check_logits(model, device)
    tolerance = 1e-3 if model.dtype == torch.float32 else 5e-2
    return all(torch.allclose(a, b, atol=tolerance * b.abs().max().item(), rtol=0) for a, b in zip(got, expected))


def _plain_check_logits(model: Any, device: torch.device) -> list[torch.Tensor]:
    """The plain forward's last logits for the check's five prefixes, computed once per model (the lean check and
    the native check compare against the same ones). The mask is causal, so two forward passes over the two whole
    prompts give every prefix's last logits: ``first[:8]``, ``second[:4]``, ``first[:9]``, ``second``, ``first``."""
    cached = getattr(model, "_lmchat_check_logits", None)
    if cached is not None:
        return cached
    vocab = model.config.get_text_config().vocab_size
    first = _plain_logits(model, [i % vocab for i in _CHECK_FIRST], device)
    second = _plain_logits(model, [i % vocab for i in _CHECK_SECOND], device)
    expected = [first[7], second[3], first[8], second[4], first[9]]
    model._lmchat_check_logits = expected
    return expected


def _plain_logits(model: Any, ids: list[int], device: torch.device) -> torch.Tensor:
    """Every position's logits of one plain forward pass (no cache), as float32 ``[len(ids), vocab]``."""
    return model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0].float()
