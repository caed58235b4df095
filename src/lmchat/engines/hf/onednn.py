"""PyTorch's private oneDNN (mkldnn) linear ops, in one place: packing a weight, and multiplying by a packed one.

``torch.ops.mkldnn._reorder_linear_weight`` and ``torch.ops.mkldnn._linear_pointwise`` are not public API: their
names, arguments or results may change in another torch release. They are used only where
:func:`unsupported_reason` finds nothing against them: a torch release they were checked on, built with oneDNN,
the ops present, and a packed multiply that reproduces ``F.linear`` here. The native decode step
(``native/decode.cpp``) calls the same ``mkldnn::_linear_pointwise`` op, and only on weights packed here.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

CHECKED_TORCH = ("2.13",)  # torch releases (major.minor) these private ops were checked on
PACK_BATCH_HINT = 16  # the batch size oneDNN chooses its packed layout for


def unsupported_reason(dtype: torch.dtype = torch.float32) -> str | None:
    """What packed oneDNN multiplies of ``dtype`` weights need that this torch (or CPU) lacks; None: they can be
    used."""
    version = torch.__version__.split("+", 1)[0]
    if ".".join(version.split(".")[:2]) not in CHECKED_TORCH:
        return (f"torch {' or '.join(CHECKED_TORCH)} (its private oneDNN ops are checked there; this is torch "
                f"{version})")
    return _probe(dtype)


@functools.cache
def _probe(dtype: torch.dtype) -> str | None:
    """Pack a small weight and multiply by it: the ops exist, run on this CPU (oneDNN's bfloat16 path needs
    AVX-512 or AVX-NE-CONVERT) and give ``F.linear``'s numbers."""
    if not torch.backends.mkldnn.is_available():
        return "PyTorch built with oneDNN (mkldnn)"
    missing = [name for name in ("_reorder_linear_weight", "_linear_pointwise") if not hasattr(torch.ops.mkldnn, name)]
    if missing:
        return f"the oneDNN op torch.ops.mkldnn.{missing[0]}"
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(24, 32, generator=generator), torch.randn(24, generator=generator)
    x = torch.randn(3, 1, 32, generator=generator)
    weight, bias, x = weight.to(dtype), bias.to(dtype), x.to(dtype)
    try:
        got = linear(x, pack(weight), bias)
    except (RuntimeError, TypeError) as exc:
        return f"oneDNN's packed multiply of {_name(dtype)} weights to run here (it failed: {_first_line(exc)})"
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    if not torch.allclose(got.float(), F.linear(x, weight, bias).float(), rtol=tolerance, atol=tolerance):
        return f"oneDNN's packed multiply of {_name(dtype)} weights to match F.linear"
    return None


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def pack(weight: torch.Tensor) -> Any:
    """A oneDNN-packed copy of a linear layer's ``weight`` [out, in]."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_BATCH_HINT)


def linear(x: torch.Tensor, packed: Any, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` over the packed copy of ``weight``."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
