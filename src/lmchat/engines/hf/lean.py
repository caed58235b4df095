"""A lean forward pass for Llama-family decoders (Llama, SmolLM, Mistral, Qwen2): the same arithmetic as
transformers' modules, without their per-call overhead.

On a small model most of a decode step outside the matrix multiplies is Python: ~45 module calls and tensor ops
per layer. This forward runs the layer as ~20 tensor ops over weights it holds directly:

* q/k/v and gate/up projections are each one matrix multiply over a fused weight. Once the runner check in
  :func:`lmchat.engines.hf.runner.pick_runner` has chosen this forward, :meth:`LeanDecoder.share_weights` re-points
  the model's own ``q_proj`` / ``k_proj`` / ... weights at views of the fused tensors, so no memory is duplicated
  and the model itself still runs (scoring); a forward that is not chosen leaves the model as it was. A fused
  multiply gives the same numbers as the separate ones here (MKL; the runner check compares logits anyway);
* RoPE cos/sin come from a table built the way transformers computes them, grown on demand, applied to queries
  and keys in one go (``roll`` with a signed sin table is ``rotate_half`` without its three extra ops);
* attention is ``scaled_dot_product_attention`` on the slot cache, laid out as transformers' SDPA path lays it
  out (grouped queries packed for one-token decodes, ``repeat_kv`` for prompt chunks).

With ``packed=True`` (CPU only) every linear weight also gets a oneDNN-packed copy (:mod:`lmchat.engines.hf.onednn`,
PyTorch's private ops behind one version and behaviour check), used for batched steps (more than one token):
faster than MKL's sgemm, which repacks the weight on every call (measured in docs/architecture-hf-engine.md), and
a row's result does not depend on the batch size. One-token steps keep MKL's GEMV, which is faster there. It
doubles the linear weights' memory, so the engine turns it on only for small models (see
``packed_weights_wanted``; the ``packed_weights`` setting overrides it).

With :meth:`LeanDecoder.use_native` (float32 on the CPU), every one-token step runs as one call into the native
kernels (:mod:`lmchat.engines.hf.native`) instead: the same model, without the per-op cost after each weight read
(GEMVs for one row, the packed oneDNN multiplies for more), and so do prompt chunks of rows without adapters,
several rows' at once (:meth:`LeanDecoder.native_chunks`). Chunks of adapter rows stay here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmchat.engines.hf import onednn
from lmchat.engines.hf.quant import QuantizedEmbedding, QuantizedLinear, QuantizedWeight
from lmchat.errors import ConfigError

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})  # inv_freq fixed at load time
PACKED_WEIGHTS_MAX_BYTES = 2 * 1024**3  # packing doubles the linear weights; only below this size


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
    return onednn.unsupported_reason(parameter.dtype)


@dataclass
class _Linear:
    """One weight (+ bias): float32/bfloat16 with an optional oneDNN-packed copy for batched inputs, or quantized
    (``quantization_bit``: :mod:`lmchat.engines.hf.quant`, ``weight`` is then None)."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None = None
    packed: Any = None
    lora: Any = None  # lmchat.engines.hf.lora.LoraDelta: the step's LoRA update, once an adapter targets it
    quant: QuantizedWeight | None = None

    @property
    def shape(self) -> torch.Size:
        return self.quant.shape if self.quant is not None else self.weight.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant is not None:
            out = self.quant.linear(x, self.bias)
        elif self.packed is not None and x.shape[0] * x.shape[1] > 1:
            out = onednn.linear(x, self.packed, self.bias)
        else:
            out = F.linear(x, self.weight, self.bias)
        if self.lora is not None:
            out = self.lora.add_to(x, out)
        return out

    def pack(self) -> None:
        if self.quant is None:  # quantized weights have their own kernels
            self.packed = onednn.pack(self.weight)

    def native_weights(self, name: str) -> dict[str, torch.Tensor]:
        """This multiply's tensors by the names the native step reads (see native/decode.cpp ``Linear``)."""
        if self.quant is not None:
            weights = {f"{name}_codes": self.quant.codes, f"{name}_scales": self.quant.scales}
            if self.quant.mins is not None:
                weights[f"{name}_mins"] = self.quant.mins
            return {key: tensor.contiguous() for key, tensor in weights.items()}
        weights = {name: self.weight.contiguous()}
        if self.packed is not None:
            weights[f"{name}_packed"] = self.packed
        return weights


@dataclass
class _Layer:
    norm1: torch.Tensor
    qkv: _Linear
    out: _Linear
    norm2: torch.Tensor
    gate_up: _Linear
    down: _Linear

    def native_weights(self) -> dict[str, torch.Tensor]:
        """This layer's weights by the names the native step reads (see native/decode.cpp ``Decoder``)."""
        weights = {"norm1": self.norm1.contiguous(), "norm2": self.norm2.contiguous()}
        if self.qkv.bias is not None:
            weights["qkv_bias"] = self.qkv.bias.contiguous()
        for name in ("qkv", "out", "gate_up", "down"):
            weights.update(getattr(self, name).native_weights(name))
        return weights


def _fuse(modules: list[torch.nn.Module]) -> _Linear:
    """One weight (a new tensor) for several linear layers that read the same input."""
    biases = [m.bias for m in modules]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    if any(b is not None for b in biases) and bias is None:
        raise ValueError("some projections have a bias and some do not")
    if all(isinstance(m, QuantizedLinear) for m in modules):
        return _Linear(None, bias, quant=QuantizedWeight.cat([m.quantized for m in modules]))
    return _Linear(torch.cat([m.weight.detach() for m in modules]), bias)


def _point_at(modules: list[torch.nn.Module], fused: _Linear) -> None:
    """Re-point the layers ``fused`` was made of at views of it (their own tensors are then freed)."""
    start = 0
    for module in modules:
        rows = module.out_features
        if fused.quant is not None:
            module.quantized = fused.quant.rows(start, start + rows)
        else:
            module.weight = torch.nn.Parameter(fused.weight[start : start + rows], requires_grad=False)
        if fused.bias is not None:
            module.bias = torch.nn.Parameter(fused.bias[start : start + rows], requires_grad=False)
        start += rows


def _plain(module: torch.nn.Module) -> _Linear:
    bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
    if isinstance(module, QuantizedLinear):
        return _Linear(None, bias, quant=module.quantized)
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
        self.intermediate = body.layers[0].mlp.gate_proj.out_features
        embed = body.embed_tokens
        self.embed_quant: QuantizedWeight | None = embed.quantized if isinstance(embed, QuantizedEmbedding) else None
        self.embed = embed.weight.detach() if self.embed_quant is None else None
        self.norm = body.norm.weight.detach()
        self.head = _plain(model.lm_head)
        self._fused: list[tuple[list[torch.nn.Module], _Linear]] = []  # until share_weights
        names = {id(module): name for name, module in model.named_modules()}
        self._lora_sites = [(self.head, [(names[id(model.lm_head)], 0)])]  # extended by _fuse and _site
        self.lora_step: Any = None  # lmchat.engines.hf.lora.LoraStep, once named adapters are served
        self.layers = [
            _Layer(
                layer.input_layernorm.weight.detach(),
                self._fuse([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj], names),
                self._site(layer.self_attn.o_proj, names),
                layer.post_attention_layernorm.weight.detach(),
                self._fuse([layer.mlp.gate_proj, layer.mlp.up_proj], names),
                self._site(layer.mlp.down_proj, names),
            )
            for layer in body.layers
        ]
        self._rotary = body.rotary_emb
        self._cos = self._sin = torch.zeros(0)
        self.packed = packed
        self.native: Any = None  # the native one-token step, once use_native is called
        self.native_lora = False  # whether it holds the LoRA updates (sync_native_lora)
        if packed:
            for layer in self.layers:
                for linear in (layer.qkv, layer.out, layer.gate_up, layer.down):
                    linear.pack()
            self.head.pack()

    def _fuse(self, modules: list[torch.nn.Module], names: dict[int, str]) -> _Linear:
        fused = _fuse(modules)
        self._fused.append((modules, fused))
        offsets = [0]
        for module in modules[:-1]:
            offsets.append(offsets[-1] + module.out_features)
        self._lora_sites.append((fused, [(names[id(m)], offset) for m, offset in zip(modules, offsets)]))
        return fused

    def _site(self, module: torch.nn.Module, names: dict[int, str]) -> _Linear:
        linear = _plain(module)
        self._lora_sites.append((linear, [(names[id(module)], 0)]))
        return linear

    # --- LoRA sites (lmchat.engines.hf.lora) -----------------------------------------------------------------
    def lora_sites(self) -> list[tuple[_Linear, list[tuple[str, int]], int, int]]:
        """Each projection this forward multiplies by: (its linear, its parts as (model module name, first output
        row), out features, in features). A fused projection has several parts."""
        return [(linear, parts, linear.shape[0], linear.shape[1]) for linear, parts in self._lora_sites]

    def lora_modules(self) -> list[str]:
        """The model's module names a LoRA adapter may target here."""
        return [name for _, parts in self._lora_sites for name, _ in parts]

    def share_weights(self) -> None:
        """Once this forward is chosen: the model's fused projections become views of the fused weights, so their
        memory is not held twice. Until then (and if it is not chosen) the model is untouched."""
        for modules, fused in self._fused:
            _point_at(modules, fused)
        self._fused = []

    # --- native one-token steps -------------------------------------------------------------------------
    def native_unsupported(self) -> str | None:
        """Why the native kernels cannot run this model (None: they can)."""
        if self.norm.device.type != "cpu":
            return f"a model on the CPU (it is on {self.norm.device.type})"
        if self.norm.dtype != torch.float32:
            return f"float32 weights (they are {self.norm.dtype})"
        return None

    def use_native(self, module: Any, activations: str = "float32") -> None:
        """Run one-token steps through ``module.Decoder`` (see native/decode.cpp), on these weights and packed copies;
        ``activations``: of its batched quantized multiplies ("float32" or "int8")."""
        reason = self.native_unsupported()
        if reason:
            raise ValueError(f"the native decode step needs {reason}")
        weights = {"norm": self.norm.contiguous(), **self.head.native_weights("head")}
        if self.embed_quant is not None:
            weights.update(embed_codes=self.embed_quant.codes, embed_scales=self.embed_quant.scales)
        else:
            weights["embed"] = self.embed.contiguous()
        sizes = {"heads": self.heads, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                 "intermediate": self.intermediate}
        self.native = module.Decoder([layer.native_weights() for layer in self.layers], weights, sizes,
                                     {"scaling": float(self.scaling), "eps": float(self.eps)}, activations)
        self.sync_native_lora()

    def _native_step(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: Any, lora_rows: bool
                     ) -> torch.Tensor | None:
        layers = cache.layer_tensors(len(self.layers))
        if layers is None:  # the cache has not been written yet (a prompt always comes first)
            return None
        self._rope(position_ids)  # grows the rotary table the native step reads
        slots = self.lora_step.rows if lora_rows else _NO_SLOTS  # each row's adapter slot, made once per step
        return self.native.step(input_ids[:, 0], position_ids[:, 0], cache.row_start, *layers, self._cos, self._sin,
                                slots)

    @property
    def takes_native_chunks(self) -> bool:
        """Whether prompt chunks of rows without adapters run natively (:meth:`native_chunks`)."""
        return self.native is not None and not (self.lora_step is not None and self.lora_step.active)

    @torch.inference_mode()
    def native_chunks(self, chunks: list[tuple[int, Any, int]], cache: Any) -> torch.Tensor:
        """Prompt chunks ``(row, token ids, start)`` of one or several cache rows as one native call: their
        tokens are the rows of each multiply, their keys and values go into their rows at start.., each token
        attends causally within its row -> each chunk's last-token logits [n, vocab] float32 (no adapter rows)."""
        ids = [torch.as_tensor(tokens, dtype=torch.long) for _, tokens, _ in chunks]
        lengths = [len(t) for t in ids]
        positions = torch.cat([torch.arange(start, start + n) for (_, _, start), n in zip(chunks, lengths)])
        rows = torch.cat([torch.full((n,), row, dtype=torch.long) for (row, _, _), n in zip(chunks, lengths)])
        last = torch.tensor(lengths).cumsum(0) - 1
        layers = cache.layer_tensors(len(self.layers), self.kv_heads, self.head_dim, self.norm.dtype)
        self._rope(positions)  # grows the rotary table the native step reads
        return self.native.step(torch.cat(ids), positions, 0, *layers, self._cos, self._sin, _NO_SLOTS,
                                cache_rows=rows, logits_rows=last)

    def sync_native_lora(self) -> None:
        """Hand the native step every site's LoRA updates (at each adapter load and unload, and when the native
        step starts), so one-token steps with adapter rows stay native; a step without ``set_lora`` leaves them to
        the Python forward."""
        self.native_lora = False
        if self.native is None or not hasattr(self.native, "set_lora"):
            return
        sites = [{name: _lora_pairs(getattr(layer, name)) for name in ("qkv", "out", "gate_up", "down")}
                 for layer in self.layers]
        self.native.set_lora(sites, _lora_pairs(self.head))
        self.native_lora = True

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
        self._cos = (angles.cos() * scale).to(self.norm.dtype)
        # rotate_half(x) * sin == roll(x, half) * signed_sin, with the first half of sin negated (exact)
        sin = (angles.sin() * scale).to(self.norm.dtype)
        half = sin.shape[-1] // 2
        self._sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)

    # --- forward ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, cache: Any
                 ) -> torch.Tensor:
        """Logits of each row's last token [n, vocab] (float32); ``cache`` is planned for this pass."""
        rows, length = input_ids.shape
        lora_rows = self.lora_step is not None and self.lora_step.active
        if self.native is not None and length == 1 and (self.native_lora or not lora_rows):
            logits = self._native_step(input_ids, position_ids, cache, lora_rows)
            if logits is not None:
                return logits
        if rows == 1 and length > 1 and self.takes_native_chunks:
            start = int(position_ids[0, 0])
            return self.native_chunks([(cache.row_start, input_ids[0], start)], cache)
        hidden = self._embed(input_ids)
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

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.embed_quant is not None:
            return self.embed_quant.embedding(input_ids)
        return F.embedding(input_ids, self.embed)

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


def _lora_pairs(linear: _Linear) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """A site's LoRA updates by adapter slot: (A^T, B^T), as the native step takes them."""
    return dict(linear.lora.by_slot) if linear.lora is not None else {}


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
_NO_SLOTS = torch.zeros(0, dtype=torch.long)  # a native step without adapter rows
