"""Weight-only quantization on load (``quantization_bit: 8`` or ``4``) for the transformers engine on the CPU.

* **int8**: one scale per output row, symmetric (``w = code * scale``, codes -127..127), as gpt-fast's int8.
* **int4**: groups of 32 inputs along each row, asymmetric (``w = code * scale + min``, codes 0..15), as gpt-fast's
  and llama.cpp's Q4_1. Stored as 16 bytes per group: byte ``i`` holds input ``i`` in its low nibble and input
  ``16 + i`` in its high nibble (the native kernels unpack a group in two vector operations).

Activations stay float32 (only the weights are rounded), except in the native kernels' multiplies with
``quantized_activations: auto`` (the native decoder's steps of one row or many and prompt chunks; the Python side's
multiplies of 4 rows or more, 12 for int8 weights): there each input row is rounded to int8 per group of 32 and
multiplied with the CPU's int8 dot products (AVX512-VNNI / AVX-VNNI / plain AVX2), as llama.cpp multiplies its Q4
weights by Q8 activations: about twice the batched throughput, within rounding (``native/int8_act.h``; perplexity in
docs/benchmarks.md).

:func:`quantize_model` swaps every ``nn.Linear`` of the language model (and its output head, always at 8 bits, as
llama.cpp keeps a Q4 model's output layer at higher precision) for a :class:`QuantizedLinear`, and the token embeddings for int8 rows (:class:`QuantizedEmbedding`: the
head's own rows when the model ties them). Every runner then uses it: the lean forward
fuses quantized projections like float ones (:meth:`QuantizedWeight.cat`; a row's codes do not depend on the other
rows) and hands them to the native step, whose own kernels multiply by them for one row and for many
(``native/quantized.h``; PyTorch's CPU kernels are scalar code without AVX-512, measured in docs/benchmarks.md).
Without the native kernels (not built yet, ``native_decode: off``) the multiply is PyTorch's own
``_weight_int8pack_mm`` / ``_weight_int4pack_mm_for_cpu`` for one row, a dequantized ``F.linear`` for more.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from lmchat.errors import ConfigError

logger = logging.getLogger(__name__)

GROUP = 32  # int4 inputs per scale/min
HEAD_BITS = 8  # the output head keeps 8 bits whatever quantization_bit says
_kernels: Any = None  # the native module (its qlinear), once loaded: see use_native_kernels
_thread = threading.local()  # .activations: this thread's for the batched multiplies (see use_activations)


def activations_for(module: Any, setting: str) -> str:
    """The activations of the native kernels' batched quantized multiplies for a ``quantized_activations``
    setting: "int8" (auto, where this CPU has int8 dot products) or "float32" (off, or none here)."""
    return "int8" if setting == "auto" and module is not None and module.int8_paths() else "float32"


def use_native_kernels(module: Any) -> None:
    """Multiply by quantized weights with the native module's ``qlinear`` from now on (None: PyTorch's kernels)."""
    global _kernels
    _kernels = module


def use_activations(activations: str) -> None:
    """The activations of the batched multiplies that this thread runs from now on ("float32" or "int8", see
    :func:`activations_for`). A model's every forward pass runs on its engine's worker thread, which sets its
    model's setting; any other thread multiplies with float32 activations."""
    _thread.activations = activations


def _activations() -> str:
    return getattr(_thread, "activations", "float32")


@contextlib.contextmanager
def float32_activations() -> Iterator[None]:
    """Within: the quantized modules' batched multiplies take float32 activations. The runner checks compare
    forward passes that split the same tokens into different row counts, which int8 activations round differently
    (the int8 kernels have their own tests)."""
    saved = _activations()
    use_activations("float32")
    try:
        yield
    finally:
        use_activations(saved)


@dataclass
class QuantizedWeight:
    """A weight ``[out_features, in_features]`` quantized row by row (see the module docstring for the layouts)."""

    bits: int
    codes: torch.Tensor  # int8 [N, K] (8 bits) or uint8 [N, K / 2] (4 bits)
    scales: torch.Tensor  # float32 [N] (8 bits) or [N, K / 32] (4 bits)
    mins: torch.Tensor | None = None  # float32 [N, K / 32] (4 bits)
    _torch_int4: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def shape(self) -> torch.Size:
        rows, width = self.codes.shape
        return torch.Size((rows, width * 2 if self.bits == 4 else width))

    def num_bytes(self) -> int:
        tensors = [self.codes, self.scales] + ([self.mins] if self.mins is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def quantize(cls, weight: torch.Tensor, bits: int) -> QuantizedWeight:
        weight = weight.detach().float()
        if bits == 8:
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
            codes = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
            return cls(8, codes.contiguous(), scales.contiguous())
        if bits != 4:
            raise ValueError(f"weight-only quantization takes 8 or 4 bits, not {bits}")
        rows, width = weight.shape
        if width % GROUP:
            raise ValueError(f"4-bit quantization needs a multiple of {GROUP} inputs, not {width}")
        groups = weight.reshape(rows, width // GROUP, GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scales = ((high - low) / 15).clamp(min=1e-12)
        codes = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
        packed = codes[..., :16] | (codes[..., 16:] << 4)
        return cls(4, packed.reshape(rows, width // 2).contiguous(), scales.contiguous(), low.contiguous())

    def dequantize(self) -> torch.Tensor:
        if self.bits == 8:
            return self.codes.float() * self.scales[:, None]
        codes = self._int4_codes().float()
        return (codes * self.scales[..., None] + self.mins[..., None]).reshape(codes.shape[0], -1)

    def _int4_codes(self) -> torch.Tensor:
        """The int4 codes unpacked, uint8 [N, K / 32, 32] (see the module docstring for the nibble order)."""
        packed = self.codes.reshape(self.codes.shape[0], -1, GROUP // 2)
        return torch.cat((packed & 15, packed >> 4), dim=-1)

    def rows(self, start: int, stop: int) -> QuantizedWeight:
        """Output rows ``start:stop`` (views: no memory is copied)."""
        mins = self.mins[start:stop] if self.mins is not None else None
        return QuantizedWeight(self.bits, self.codes[start:stop], self.scales[start:stop], mins)

    @staticmethod
    def cat(parts: list[QuantizedWeight]) -> QuantizedWeight:
        """The weights of several layers stacked along the output rows, as quantizing the stacked weight gives."""
        bits = {part.bits for part in parts}
        if len(bits) != 1:
            raise ValueError("cannot stack weights quantized to different bit widths")
        mins = torch.cat([p.mins for p in parts]) if parts[0].mins is not None else None
        return QuantizedWeight(bits.pop(), torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]),
                               mins)

    def embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` as float32 (an embedding lookup; 8 bits)."""
        return self.codes[ids].float() * self.scales[ids].unsqueeze(-1)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ W^T + bias`` for float32 ``x [..., K]``."""
        flat = x.reshape(-1, x.shape[-1])
        if x.dtype != torch.float32:
            raise ValueError(f"quantized weights take float32 inputs, not {x.dtype}")
        if _kernels is not None and x.device.type == "cpu":
            out = _kernels.qlinear(flat, self.codes, self.scales, self.mins, bias, _activations())
        else:
            out = self._torch_linear(flat)
            if bias is not None:
                out = out + bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _torch_linear(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1 or (self.bits == 4 and self.codes.shape[0] % 16):
            # PyTorch's weight-only kernels are slow for many rows without AVX-512; its int4 needs N % 16 == 0
            return F.linear(x, self.dequantize())
        if self.bits == 8:
            return torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.codes, self.scales)
        packed, scales_and_zeros = self._torch_int4_form()
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), packed, GROUP, scales_and_zeros)

    def _torch_int4_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """PyTorch's int4 layout (made on first use): w = (code - 8) * scale + zero, zero = min + 8 * scale."""
        if self._torch_int4 is None:
            codes = self._int4_codes().reshape(self.codes.shape[0], -1).to(torch.int32)
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
            zeros = self.mins + 8 * self.scales
            scales_and_zeros = torch.stack((self.scales, zeros), dim=-1).transpose(0, 1).contiguous()
            self._torch_int4 = (weight, scales_and_zeros)
        return self._torch_int4


class QuantizedLinear(torch.nn.Module):
    """``nn.Linear`` over a :class:`QuantizedWeight` (inference only)."""

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.quantized = weight
        self.out_features, self.in_features = weight.shape
        self.bias = torch.nn.Parameter(bias.detach().float(), requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantized.linear(x, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.quantized.bits}"


class QuantizedEmbedding(torch.nn.Module):
    """``nn.Embedding`` over int8 rows (:data:`HEAD_BITS`); shares the output head's rows when the model ties them."""

    def __init__(self, weight: QuantizedWeight, padding_idx: int | None) -> None:
        super().__init__()
        self.quantized = weight
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.quantized.embedding(ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.quantized.bits}"


def quantize_model(model: Any, bits: int) -> int:
    """Swap the language model's linear layers for :class:`QuantizedLinear` (``bits``: 8 or 4; the output head at
    :data:`HEAD_BITS`), on a float32 CPU model; returns the bytes the weights take now. A ConfigError says what
    stands in the way (another device or dtype, a layer 4 bits cannot split into groups)."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ConfigError(
            f"quantization_bit on the transformers engine quantizes a float32 model on the CPU; this one is "
            f"{parameter.dtype} on {parameter.device.type} (leave infer_dtype at auto or float32).",
            param="quantization_bit",
        )
    head = model.get_output_embeddings()
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and not _in_vision_tower(name)]
    if bits == 4:
        odd = [name for name, module in targets if module is not head and module.in_features % GROUP]
        if odd:
            raise ConfigError(f"quantization_bit: 4 quantizes in groups of {GROUP} inputs; {odd[0]} has "
                              f"{dict(targets)[odd[0]].in_features}. Use quantization_bit: 8.",
                              param="quantization_bit")
    before = model_bytes(model)
    embedding = model.get_input_embeddings()
    tied = head is not None and embedding is not None and head.weight is embedding.weight
    for name, module in targets:
        width = HEAD_BITS if module is head else bits
        replacement = QuantizedLinear(QuantizedWeight.quantize(module.weight, width), module.bias)
        _replace(model, name, replacement)
        if module is head and tied:  # one copy of the rows, read by the lookup and the head
            model.set_input_embeddings(QuantizedEmbedding(replacement.quantized, embedding.padding_idx))
    if isinstance(embedding, torch.nn.Embedding) and not tied:
        rows = QuantizedWeight.quantize(embedding.weight, HEAD_BITS)
        model.set_input_embeddings(QuantizedEmbedding(rows, embedding.padding_idx))
    _release_freed_memory()
    size = model_bytes(model)
    logger.info("Quantized %d linear layers to %d bits (output head and embeddings %d bits): weights %.0f MB -> "
                "%.0f MB.", len(targets), bits, HEAD_BITS, before / 1e6, size / 1e6)
    return size


def _release_freed_memory() -> None:
    """Hand the float32 weights' memory back to the system (glibc keeps freed heap pages otherwise, and the
    process would stay as large as the float32 model)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _replace(model: Any, name: str, module: torch.nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, module)


def model_bytes(model: Any) -> int:
    """The bytes of a model's weights, quantized ones included (a tied head's rows once)."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    weights = {id(m.quantized.codes): m.quantized for m in model.modules()
               if isinstance(m, QuantizedLinear | QuantizedEmbedding)}
    return size + sum(weight.num_bytes() for weight in weights.values())


def _in_vision_tower(name: str) -> bool:
    """Media encoders keep their weights (their inputs are few; their layers are often not in groups of 32)."""
    return any(part in name for part in ("vision", "visual", "audio", "multi_modal_projector", "mm_projector"))


def chosen_bits(config: Any, device: torch.device, gguf_checkpoint: str | None) -> int | None:
    """The width the weights load at: ``quantization_bit`` when the config sets it (``null``: float32); else, on the
    CPU in float32, for a model given as a GGUF (``gguf_checkpoint``: its converted checkpoint; the default model
    is one), the GGUF's own width: the default model is Q4_1, so it keeps 4-bit weights (the same groups of 32,
    re-quantized to the same codes), logged; else None."""
    if "quantization_bit" in config.model_fields_set:
        return config.quantization_bit
    if gguf_checkpoint is None or device.type != "cpu" or config.infer_dtype not in ("auto", "float32"):
        return None
    from lmchat.models.gguf import gguf_weight_bits

    bits = gguf_weight_bits(gguf_checkpoint)
    if bits:
        logger.info("Keeping the %d-bit weights of the GGUF this model was converted from (quantization_bit: %d, "
                    "weight-only on the CPU); quantization_bit: null loads float32.", bits, bits)
    return bits


def load_options(config: Any, device: torch.device, bits: int | None = None) -> dict[str, Any]:
    """What ``quantization_bit`` asks of the load, checked against the device (one place for every rule):
    ``{}`` on the CPU, where :func:`quantize_model` quantizes the float32 model afterwards; bitsandbytes'
    ``quantization_config`` on CUDA (LLaMA-Factory's ``quantization_method: bnb``). A setting this cannot honour
    is a ConfigError naming it (``bits``: :func:`chosen_bits`)."""
    method = config.quantization_method
    if bits is None:
        return {}
    if device.type == "cpu":
        if method != "bnb":
            raise ConfigError(f"quantization_method: {method} is not available on the CPU; leave it at bnb, which "
                              "lmchat's CPU quantization takes (weight-only int8, or int4 in groups of 32).",
                              param="quantization_method")
        for name in ("quantization_type", "double_quantization", "quantization_device_map"):
            if name in config.model_fields_set:
                raise ConfigError(f"{name} sets bitsandbytes on CUDA; on the CPU lmchat quantizes weight-only "
                                  f"(int8 per row, int4 in groups of 32), so leave {name} out.", param=name)
        return {}
    if device.type != "cuda":
        raise ConfigError(f"quantization_bit runs on the CPU or CUDA, not on {device.type}.", param="quantization_bit")
    if method != "bnb":
        raise ConfigError(f"quantization_method: {method} on load is not available in lmchat; use bnb "
                          "(bitsandbytes), or load a checkpoint quantized ahead of time.", param="quantization_method")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ConfigError("quantization_bit on CUDA uses bitsandbytes: pip install bitsandbytes",
                          param="quantization_bit") from None
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    options: dict[str, Any] = {"quantization_config": BitsAndBytesConfig(
        load_in_8bit=bits == 8, load_in_4bit=bits == 4, bnb_4bit_quant_type=config.quantization_type,
        bnb_4bit_use_double_quant=config.double_quantization, bnb_4bit_compute_dtype=compute)}
    if bits == 4 and config.quantization_device_map == "auto":
        options["device_map"] = "auto"
    return options


def weight_bits(model: Any) -> int | None:
    """The width of a quantized model's layers (its output head aside, which keeps 8 bits), else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    widths = {module.quantized.bits for module in model.modules() if isinstance(module, QuantizedLinear)
              and module is not head}
    return min(widths) if widths else None


def is_quantized(model: Any) -> bool:
    return any(isinstance(module, QuantizedLinear) for module in model.modules())
