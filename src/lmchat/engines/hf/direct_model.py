"""A Llama-family causal LM as plain PyTorch modules, for checkpoints loaded without transformers' model classes
(:mod:`lmchat.engines.hf.direct`).

The module tree has transformers' names (``model.layers.0.self_attn.q_proj``, ``lm_head`` ...), so everything the
transformers engine does with a model works on it unchanged: the lean forward reads its weights
(:class:`~lmchat.engines.hf.lean.LeanDecoder`), LoRA adapters name its modules, and quantized layers are
:class:`~lmchat.engines.hf.quant.QuantizedLinear` as after ``quantize_model``. Its own ``forward`` is a plain,
cache-free reference pass (written from the architecture, not from the lean forward): the runner check compares the
lean forward against it at start-up, and prompt log-probabilities and embeddings use it. It does not take
transformers' KV caches, so only the lean forward serves it (``lean_only``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_ROPE = "default"


class DirectConfig(SimpleNamespace):
    """A checkpoint's config.json as attributes (what the engine reads of ``model.config``)."""

    _attn_implementation = "sdpa"

    def get_text_config(self, decoder: bool = False) -> DirectConfig:
        return self


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon)


class Rotary(nn.Module):
    """Default RoPE: fixed frequencies ``theta ** (-2i / head_dim)``."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        self.register_buffer("inv_freq", 1.0 / (theta**exponents), persistent=False)
        self.rope_type = DEFAULT_ROPE
        self.attention_scaling = 1.0

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[:, None].float() * self.inv_freq[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos() * self.attention_scaling, angles.sin() * self.attention_scaling


class Attention(nn.Module):
    def __init__(self, q: nn.Module, k: nn.Module, v: nn.Module, o: nn.Module, heads: int, kv_heads: int,
                 head_dim: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q, k, v, o
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.scaling = head_dim**-0.5

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1, scale=self.scaling,
                                             enable_gqa=self.heads != self.kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    def __init__(self, gate: nn.Module, up: nn.Module, down: nn.Module) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = gate, up, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, attention: Attention, mlp: MLP, norm1: RMSNorm, norm2: RMSNorm) -> None:
        super().__init__()
        self.self_attn, self.mlp = attention, mlp
        self.input_layernorm, self.post_attention_layernorm = norm1, norm2

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), cos, sin)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class DecoderBody(nn.Module):
    """transformers' ``model.model``: embeddings, layers, final norm (``base_model`` for embeddings)."""

    def __init__(self, embed: nn.Module, layers: list[DecoderLayer], norm: RMSNorm, rotary: Rotary) -> None:
        super().__init__()
        self.embed_tokens, self.layers, self.norm, self.rotary_emb = embed, nn.ModuleList(layers), norm, rotary

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, **unused: Any) -> SimpleNamespace:
        _refuse_cache(unused)
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("the direct model's reference forward takes unpadded sequences (an all-ones mask)")
        hidden = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(torch.arange(input_ids.shape[1], device=input_ids.device))
        cos, sin = cos.to(hidden.dtype), sin.to(hidden.dtype)
        states = [hidden]
        for layer in self.layers:
            hidden = layer(hidden, cos, sin)
            states.append(hidden)
        hidden = self.norm(hidden)
        states[-1] = hidden
        return SimpleNamespace(last_hidden_state=hidden, hidden_states=tuple(states) if output_hidden_states else None)


class DirectCausalLM(nn.Module):
    """A Llama-family causal LM with transformers' module names; see the module docstring."""

    lean_only = True  # no transformers KV cache: the runner check tries only the lean forward

    def __init__(self, config: DirectConfig, body: DecoderBody, head: nn.Module, eos_token_id: Any) -> None:
        super().__init__()
        self.config = config
        self.model, self.lm_head = body, head
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)

    @property
    def base_model(self) -> DecoderBody:
        return self.model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.model.embed_tokens = module

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, use_cache: bool = False,
                output_hidden_states: bool = False, logits_to_keep: int = 0, **unused: Any) -> SimpleNamespace:
        _refuse_cache(unused)
        body = self.model(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        hidden = body.last_hidden_state[:, -logits_to_keep:] if logits_to_keep else body.last_hidden_state
        return SimpleNamespace(logits=self.lm_head(hidden), hidden_states=body.hidden_states)


def _refuse_cache(unused: dict[str, Any]) -> None:
    if unused.get("past_key_values") is not None or unused.get("position_ids") is not None:
        raise TypeError("the direct model's reference forward runs whole prompts without a KV cache")
    extra = sorted(set(unused) - {"past_key_values", "position_ids", "token_type_ids", "return_dict"})
    if extra:
        raise TypeError(f"the direct model's forward does not take {', '.join(extra)}")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
