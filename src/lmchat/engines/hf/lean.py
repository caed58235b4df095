"""A lean forward pass for Llama-family decoders (Llama, SmolLM, Mistral, Qwen2): the same arithmetic as
transformers' modules, without their per-call overhead.

On a small model most of a decode step outside the matrix multiplies is Python: ~45 module calls and tensor ops
per layer. This forward runs the layer as ~20 tensor ops over weights it holds directly:

* q/k/v and gate/up projections are each one matrix multiply over a fused weight. The model's own ``q_proj`` /
  ``k_proj`` / ... weights are re-pointed at views of the fused tensors, so no memory is duplicated and the model
  itself still runs (scoring, the checks in :func:`lmchat.engines.hf.runner.pick_runner`); a fused multiply gives
  the same numbers as the separate ones here (MKL; the runner check compares logits anyway);
* RoPE cos/sin come from a table built the way transformers computes them, grown on demand, applied to queries
  and keys in one go (``roll`` with a signed sin table is ``rotate_half`` without its three extra ops);
* attention is ``scaled_dot_product_attention`` on the slot cache, laid out as transformers' SDPA path lays it
  out (grouped queries packed for one-token decodes, ``repeat_kv`` for prompt chunks).

With ``packed=True`` (CPU only) every linear weight also gets a oneDNN-packed copy, used for batched steps (more
than one token): on the 2-core development CPU it multiplies a 16-row batch ~30 % faster than MKL's sgemm, which
repacks the weight on every call, and its result for a row does not depend on the batch size. One-token steps keep
MKL's GEMV, which is faster there. It doubles the linear weights' memory, so the engine turns it on only for
small models (see ``packed_weights_wanted``; the ``packed_weights`` setting overrides it).

With :meth:`LeanDecoder.use_native` (float32 on the CPU), every one-token step runs as one call into the native
kernels (:mod:`lmchat.engines.hf.native`) instead: the same model, without the per-op cost after each weight read
(GEMVs for one row, the packed oneDNN multiplies for more). Prompt chunks stay here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmchat.errors import ConfigError

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})  # inv_freq fixed at load time
PACKED_WEIGHTS_MAX_BYTES = 2 * 1024**3  # packing doubles the linear weights; only below this size
PACK_BATCH_HINT = 16


def unsupported_reason(model: Any) -> str | None:
    """Why the lean forward cannot run ``model`` (None: it can)."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {config.model_type!r}"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "mlp_bias", False):
        return "MLP other than SiLU-gated without bias"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") not in STATIC_ROPE_TYPES:
        return "RoPE whose frequencies change with the length"
    if getattr(model.config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
        return f"attention implementation {model.config._attn_implementation!r}"
    return None


def packed_weights_wanted(model: Any, setting: str = "auto") -> bool:
    """Whether to pack (``setting``: auto/on/off): CPU, float32/bfloat16 and, for auto, small enough that doubling
    the weights is cheap. "on" where packing is impossible is a :class:`~lmchat.errors.ConfigError`."""
    if setting == "off":
        return False
    parameter = next(model.parameters())
    impossible = _packing_impossible(parameter)
    if impossible:
        if setting == "on":
            raise ConfigError(f"packed_weights: on needs {impossible}; use auto or off.")
        return False
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return setting == "on" or size <= PACKED_WEIGHTS_MAX_BYTES


def _packing_impossible(parameter: torch.Tensor) -> str | None:
    if parameter.device.type != "cpu":
        return f"a model on the CPU (it is on {parameter.device.type})"
    if parameter.dtype not in (torch.float32, torch.bfloat16):
        return f"float32 or bfloat16 weights (they are {parameter.dtype})"
    if not torch.backends.mkldnn.is_available():
        return "PyTorch built with oneDNN (mkldnn)"
    return None


@dataclass
class _Linear:
    """One weight (+ bias), with an optional oneDNN-packed copy for batched inputs."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    packed: Any = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and x.shape[0] * x.shape[1] > 1:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def pack(self) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, PACK_BATCH_HINT)


@dataclass
class _Layer:
    norm1: torch.Tensor
    qkv: _Linear
    out: _Linear
    norm2: torch.Tensor
    gate_up: _Linear
    down: _Linear


def _fuse(modules: list[torch.nn.Module]) -> _Linear:
    """One weight for several linear layers that read the same input; they are re-pointed at views of it."""
    weight = torch.cat([m.weight.detach() for m in modules])
    biases = [m.bias for m in modules]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    if any(b is not None for b in biases) and bias is None:
        raise ValueError("some projections have a bias and some do not")
    start = 0
    for module in modules:
        rows = module.weight.shape[0]
        module.weight = torch.nn.Parameter(weight[start : start + rows], requires_grad=False)
        if bias is not None:
            module.bias = torch.nn.Parameter(bias[start : start + rows], requires_grad=False)
        start += rows
    return _Linear(weight, bias)


def _plain(module: torch.nn.Module) -> _Linear:
    bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
    return _Linear(module.weight.detach(), bias)


class LeanDecoder:
    """The forward pass of a supported model over a :class:`~lmchat.engines.hf.kv_cache.SlotKVCache`."""

    def __init__(self, model: Any, packed: bool = False) -> None:
        config, body = model.config, model.model
        first = body.layers[0].self_attn
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = first.head_dim
        self.groups = self.heads // self.kv_heads
        self.scaling = first.scaling
        self.eps = body.norm.variance_epsilon
        self.intermediate = body.layers[0].mlp.gate_proj.weight.shape[0]
        self.embed = body.embed_tokens.weight.detach()
        self.norm = body.norm.weight.detach()
        self.head = _plain(model.lm_head)
        self.layers = [
            _Layer(
                layer.input_layernorm.weight.detach(),
                _fuse([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                _plain(layer.self_attn.o_proj),
                layer.post_attention_layernorm.weight.detach(),
                _fuse([layer.mlp.gate_proj, layer.mlp.up_proj]),
                _plain(layer.mlp.down_proj),
            )
            for layer in body.layers
        ]
        self._rotary = body.rotary_emb
        self._cos = self._sin = torch.zeros(0)
        self.packed = packed
        self.native: Any = None  # the native one-token step, once use_native is called
        if packed:
            for layer in self.layers:
                for linear in (layer.qkv, layer.out, layer.gate_up, layer.down):
                    linear.pack()
            self.head.pack()

    # --- native one-token steps -------------------------------------------------------------------------
    def native_unsupported(self) -> str | None:
        """Why the native kernels cannot run this model (None: they can)."""
        if self.embed.device.type != "cpu":
            return f"a model on the CPU (it is on {self.embed.device.type})"
        if self.embed.dtype != torch.float32:
            return f"float32 weights (they are {self.embed.dtype})"
        return None

    def use_native(self, module: Any) -> None:
        """Run one-token steps through ``module.Decoder`` (see native/decode.cpp), on these weights and packed copies."""
        reason = self.native_unsupported()
        if reason:
            raise ValueError(f"the native decode step needs {reason}")
        empty = torch.zeros(0)
        tensors = []
        for layer in self.layers:
            bias = layer.qkv.bias if layer.qkv.bias is not None else empty
            tensors += [layer.norm1, layer.qkv.weight, bias, layer.out.weight, layer.norm2, layer.gate_up.weight,
                        layer.down.weight]
        tensors = [t.contiguous() for t in tensors]
        linears = [linear for layer in self.layers for linear in (layer.qkv, layer.out, layer.gate_up, layer.down)]
        packed = [empty if linear.packed is None else linear.packed for linear in (*linears, self.head)]
        self.native = module.Decoder(tensors, packed, self.embed.contiguous(), self.norm.contiguous(),
                                     self.head.weight.contiguous(), [self.heads, self.kv_heads, self.head_dim,
                                                                     self.intermediate], [self.scaling, self.eps])

    def _native_step(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: Any) -> torch.Tensor | None:
        layers = cache.layer_tensors(len(self.layers))
        if layers is None:  # the cache has not been written yet (a prompt always comes first)
            return None
        self._rope(position_ids)  # grows the rotary table the native step reads
        return self.native.step(input_ids[:, 0], position_ids[:, 0], cache.row_start, *layers, self._cos, self._sin)

    # --- rotary table -------------------------------------------------------------------------------------
    def _rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [n, 1, q, head_dim] for ``position_ids`` [n, q], as transformers' rotary embedding gives them."""
        needed = int(position_ids.max()) + 1
        if needed > self._cos.shape[0]:
            self._grow_rope(max(needed, 2 * self._cos.shape[0], 256))
        return self._cos[position_ids][:, None], self._sin[position_ids][:, None]

    def _grow_rope(self, length: int) -> None:
        inv_freq = self._rotary.inv_freq
        positions = torch.arange(length, device=inv_freq.device, dtype=torch.float32)[None, None, :]
        freqs = (inv_freq[None, :, None].float() @ positions).transpose(1, 2)[0]
        angles = torch.cat((freqs, freqs), dim=-1)
        scale = self._rotary.attention_scaling
        self._cos = (angles.cos() * scale).to(self.embed.dtype)
        # rotate_half(x) * sin == roll(x, half) * signed_sin, with the first half of sin negated (exact)
        sin = (angles.sin() * scale).to(self.embed.dtype)
        half = sin.shape[-1] // 2
        self._sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)

    # --- forward ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, cache: Any
                 ) -> torch.Tensor:
        """Logits of each row's last token [n, vocab] (float32); ``cache`` is planned for this pass."""
        rows, length = input_ids.shape
        if self.native is not None and length == 1:
            logits = self._native_step(input_ids, position_ids, cache)
            if logits is not None:
                return logits
        hidden = F.embedding(input_ids, self.embed)
        cos, sin = self._rope(position_ids)
        qk_size = (self.heads + self.kv_heads) * self.head_dim
        half = self.head_dim // 2
        for index, layer in enumerate(self.layers):
            x = _rms_norm(hidden, layer.norm1, self.eps)
            qkv = layer.qkv(x)
            # RoPE on queries and keys together (elementwise, so the same numbers as one at a time)
            qk = qkv[..., :qk_size].view(rows, length, -1, self.head_dim).transpose(1, 2)
            qk = qk * cos + qk.roll(half, dims=-1) * sin  # sin carries rotate_half's sign: see _grow_rope
            query, key = qk[:, : self.heads], qk[:, self.heads :]
            value = qkv[..., qk_size:].view(rows, length, -1, self.head_dim).transpose(1, 2)
            keys, values = cache.update(key, value, index)
            attended = self._attention(query, keys, values, mask, rows, length)
            hidden = hidden + layer.out(attended)
            gate, up = layer.gate_up(_rms_norm(hidden, layer.norm2, self.eps)).split(self.intermediate, dim=-1)
            hidden = hidden + layer.down(F.silu(gate) * up)
        last = _rms_norm(hidden[:, -1:], self.norm, self.eps)
        return self.head(last)[:, -1].float()

    def _attention(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   rows: int, length: int) -> torch.Tensor:
        if self.groups > 1 and length == 1:  # one query per row: attend per key/value head, queries packed
            packed = query.reshape(rows, self.kv_heads, self.groups, self.head_dim)
            out = F.scaled_dot_product_attention(packed, keys, values, attn_mask=mask, scale=self.scaling)
        else:
            if self.groups > 1:
                keys, values = _repeat_kv(keys, self.groups), _repeat_kv(values, self.groups)
            out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=self.scaling)
        return out.reshape(rows, self.heads, length, self.head_dim).transpose(1, 2).reshape(rows, length, -1)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm (float32 statistics); one fused op for float32, which gives the same numbers."""
    dtype = x.dtype
    if dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def _repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    rows, heads, length, dim = states.shape
    return states[:, :, None].expand(rows, heads, groups, length, dim).reshape(rows, heads * groups, length, dim)


Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]
