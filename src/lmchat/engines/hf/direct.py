"""Direct loading: a local Llama-family checkpoint (Llama, SmolLM, Mistral without sliding windows, Qwen2) on the
CPU, read from its config.json and safetensors into :class:`~lmchat.engines.hf.direct_model.DirectCausalLM`,
without importing transformers' model classes (about 2 s of a cold start; only its tokenizer is used).

The default model and every other case this covers take it (``direct_load: auto``); anything else, or
``direct_load: off``, loads through transformers as before (:func:`unsupported` says why, in the debug log).
Quantized weights (``quantization_bit``, or a GGUF's own 4 bits) are cached once per checkpoint and width in
``~/.cache/lmchat/quantized`` (the same codes :func:`~lmchat.engines.hf.quant.quantize_model` gives), so a cached
start reads ~108 MB instead of quantizing 538 MB of float32 weights again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmchat.config.adapters import merged_adapters
from lmchat.config.model_config import ModelConfig
from lmchat.engines.hf import quant
from lmchat.engines.hf.direct_model import (DEFAULT_ROPE, Attention, DecoderBody, DecoderLayer, DirectCausalLM,
                                            DirectConfig, MLP, RMSNorm, Rotary)
from lmchat.engines.hf.quant import QuantizedEmbedding, QuantizedLinear, QuantizedWeight
from lmchat.errors import ModelNotFoundError
from lmchat.models.cache import cache_root

logger = logging.getLogger(__name__)

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}
REQUIRED_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                 "max_position_embeddings")
CACHE_FORMAT = 1  # bump when the cached quantized layout changes
_SIDE_FILES = ("value_head.safetensors", "value_head.bin", "modules.json")  # reward/embedding folders


def unsupported(config: ModelConfig, source: str, device: torch.device) -> str | None:
    """Why ``source`` cannot load directly with these settings (None: it can)."""
    if config.direct_load == "off":
        return "direct_load: off"
    folder = Path(source)
    if not folder.is_dir():
        return "not a local folder"
    if device.type != "cpu" or config.infer_dtype not in ("auto", "float32"):
        return "not float32 on the CPU"
    if merged_adapters(config) or config.rope_scaling or config.flash_attn in ("fa2", "fa3"):
        return "LoRA adapters, rope_scaling or flash_attn set"
    if any((folder / name).is_file() for name in _SIDE_FILES):
        return "a reward or embedding model folder"
    if not _weight_files(folder):
        return "no safetensors weights"
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"config.json unreadable ({exc})"
    return config_unsupported(raw)


def config_unsupported(raw: dict[str, Any]) -> str | None:
    """Why a config.json is outside what :class:`DirectCausalLM` runs (None: inside)."""
    architectures = raw.get("architectures") or []
    if len(architectures) != 1 or ARCHITECTURES.get(architectures[0]) != raw.get("model_type"):
        return f"architecture {architectures} (direct loading runs {', '.join(ARCHITECTURES)})"
    missing = [key for key in REQUIRED_KEYS if not isinstance(raw.get(key), int)]
    if missing:
        return f"config.json without {missing[0]}"
    if raw.get("hidden_act", "silu") != "silu" or raw.get("mlp_bias") or raw.get("partial_rotary_factor", 1) != 1:
        return "an MLP or RoPE other than Llama's"
    if raw.get("sliding_window") and raw.get("use_sliding_window", True):
        return "sliding-window attention"
    if (raw.get("rope_scaling") or {}).get("rope_type", DEFAULT_ROPE) != DEFAULT_ROPE or _rope(raw)[1] != DEFAULT_ROPE:
        return "scaled RoPE"
    if raw.get("vision_config") or raw.get("audio_config") or raw.get("quantization_config"):
        return "a media or pre-quantized checkpoint"
    return None


def _rope(raw: dict[str, Any]) -> tuple[float, str]:
    """(theta, type) from config.json's ``rope_parameters`` (transformers 5) or ``rope_theta``."""
    params = raw.get("rope_parameters") or {}
    theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    return float(theta), params.get("rope_type", DEFAULT_ROPE)


def direct_config(raw: dict[str, Any]) -> DirectConfig:
    """config.json with the defaults transformers' config classes give the keys the forward reads."""
    heads = raw["num_attention_heads"]
    qwen2 = raw["model_type"] == "qwen2"
    values = {"num_key_value_heads": heads, "head_dim": raw["hidden_size"] // heads, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": False, "attention_bias": False, "hidden_act": "silu", "mlp_bias": False,
              "sliding_window": None, **{k: v for k, v in raw.items() if v is not None or k == "sliding_window"}}
    values["rope_theta"] = _rope(raw)[0]
    values["qkv_bias"] = qwen2 or bool(values["attention_bias"])  # Qwen2: q/k/v biases, none on o_proj
    values["o_bias"] = bool(values["attention_bias"]) and not qwen2
    return DirectConfig(**values)


def load_direct(config: ModelConfig, source: str, name: str, bits: int | None) -> tuple[DirectCausalLM, Any]:
    """The model and its tokenizer (``bits``: 4/8 weight-only, None float32)."""
    folder = Path(source)
    model_config = direct_config(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    tokenizer = load_tokenizer(folder, config.trust_remote_code)
    eos = _eos(folder, model_config)
    cached = _cached_quantized(folder, bits) if bits else None
    if cached is not None:
        model = build_model(model_config, cached, eos)
    else:
        model = build_model(model_config, _read_weights(folder), eos)
        if bits:  # the engine's one quantization (head and embeddings at 8 bits), then cached for the next start
            quant.quantize_model(model, bits)
            _write_cache(folder, bits, quantized_state(model))
    logger.info("Loaded %s directly (%s weights, %.0f MB) into lmchat's Llama-family forward.", name,
                f"{bits}-bit" if bits else "float32", quant.model_bytes(model) / 1e6)
    return model.eval(), tokenizer


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""tokenizer_config.json classes that are tokenizer.json as it is: loaded by that class without ``AutoTokenizer``
(whose model mappings take ~0.8 s to import)."""


def load_tokenizer(folder: Path, trust_remote_code: bool) -> Any:
    """The checkpoint's tokenizer, as ``AutoTokenizer`` loads it."""
    try:
        named = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError):
        named = None
    try:
        if named in GENERIC_TOKENIZERS and (folder / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(str(folder))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load the tokenizer of '{folder}': {exc}") from None


# --- weights ------------------------------------------------------------------------------------------------
def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / shard for shard in shards]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint as float32 (a tied head is left to :func:`build_model`)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        state.update(load_file(str(file)))
    return {name: tensor.float() for name, tensor in state.items() if not name.endswith("rotary_emb.inv_freq")}


def quantized_state(model: DirectCausalLM) -> dict[str, Any]:
    """A quantized model's weights by transformers' names, as :func:`build_model` takes them: quantized layers as
    :class:`QuantizedWeight`, a tied head's rows once (as ``lm_head.weight``), the rest as tensors."""
    state: dict[str, Any] = {}
    seen: set[int] = set()
    for name, module in [("lm_head", model.lm_head), *model.named_modules()]:  # the head first: it keeps tied rows
        if isinstance(module, QuantizedLinear | QuantizedEmbedding) and id(module.quantized) not in seen:
            seen.add(id(module.quantized))
            state[f"{name}.weight"] = module.quantized
    state.update(dict(model.named_parameters()))  # norms and biases
    return state


def _cache_path(folder: Path, bits: int) -> Path:
    files = [folder / "config.json", *_weight_files(folder)]
    stamp = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    key = hashlib.sha1(f"{CACHE_FORMAT}|{bits}|{stamp}".encode()).hexdigest()[:16]
    return cache_root() / "quantized" / f"{folder.name}-{bits}bit-{key}.safetensors"


def _write_cache(folder: Path, bits: int, state: dict[str, Any]) -> None:
    """Save the quantized tensors (written to a temporary file and renamed: a reader never sees half a file)."""
    from safetensors.torch import save_file

    flat: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if isinstance(value, QuantizedWeight):
            flat[f"{name}.codes"], flat[f"{name}.scales"] = value.codes, value.scales
            if value.mins is not None:
                flat[f"{name}.mins"] = value.mins
        else:
            flat[name] = value
    target = _cache_path(folder, bits)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".partial")
        os.close(handle)
        metadata = {"bits": str(bits), "source": str(folder.resolve())}
        save_file({k: v.contiguous() for k, v in flat.items()}, temporary, metadata=metadata)
        os.replace(temporary, target)
        _prune(target.parent)
    except OSError as exc:  # a read-only or full cache: the next start quantizes again
        logger.warning("Could not cache the quantized weights at %s (%s).", target, exc)


def _prune(directory: Path) -> None:
    """Delete the cached weights of checkpoints that are gone (a deleted or moved folder), so the cache does not
    grow with every temporary checkpoint quantized once."""
    from safetensors import safe_open

    for path in directory.glob("*.safetensors"):
        try:
            with safe_open(str(path), framework="pt") as handle:
                source = (handle.metadata() or {}).get("source")
            if source and not Path(source).is_dir():
                path.unlink()
        except (OSError, ValueError, RuntimeError):  # being written or removed by another process: leave it
            continue


def _cached_quantized(folder: Path, bits: int) -> dict[str, Any] | None:
    path = _cache_path(folder, bits)
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    flat = load_file(str(path))
    state: dict[str, Any] = {}
    for name in [n[: -len(".codes")] for n in flat if n.endswith(".codes")]:
        width = bits if flat[f"{name}.codes"].dtype == torch.uint8 else 8
        state[name] = QuantizedWeight(width, flat.pop(f"{name}.codes"), flat.pop(f"{name}.scales"),
                                      flat.pop(f"{name}.mins", None))
    state.update(flat)
    logger.debug("Read the cached %d-bit weights %s", bits, path)
    return state


def _eos(folder: Path, model_config: DirectConfig) -> Any:
    generation = folder / "generation_config.json"
    if generation.is_file():
        value = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
        if value is not None:
            return value
    return getattr(model_config, "eos_token_id", None)


# --- the module tree -----------------------------------------------------------------------------------------
def build_model(model_config: DirectConfig, state: dict[str, Any], eos_token_id: Any) -> DirectCausalLM:
    """:class:`DirectCausalLM` over ``state`` (float32 tensors and :class:`QuantizedWeight` by transformers' names);
    a missing or misshapen tensor is a :class:`ModelNotFoundError` naming it."""
    c = model_config
    take = _Taker(state)
    layers = []
    for i in range(c.num_hidden_layers):
        prefix = f"model.layers.{i}."
        linear = lambda name, bias=False: take.linear(prefix + name, bias)  # noqa: E731
        attention = Attention(linear("self_attn.q_proj", c.qkv_bias), linear("self_attn.k_proj", c.qkv_bias),
                              linear("self_attn.v_proj", c.qkv_bias), linear("self_attn.o_proj", c.o_bias),
                              c.num_attention_heads, c.num_key_value_heads, c.head_dim)
        mlp = MLP(linear("mlp.gate_proj"), linear("mlp.up_proj"), linear("mlp.down_proj"))
        layers.append(DecoderLayer(attention, mlp, RMSNorm(take(prefix + "input_layernorm.weight"), c.rms_norm_eps),
                                   RMSNorm(take(prefix + "post_attention_layernorm.weight"), c.rms_norm_eps)))
    embed, head = take.embedding_and_head(c.tie_word_embeddings)
    body = DecoderBody(embed, layers, RMSNorm(take("model.norm.weight"), c.rms_norm_eps), Rotary(c.head_dim,
                                                                                                   c.rope_theta))
    take.check_shapes(c)
    if take.left:
        raise ModelNotFoundError(f"The checkpoint holds tensors a {c.model_type} model has no place for: "
                                 f"{sorted(take.left)[:3]}; set direct_load: off to load it through transformers.")
    return DirectCausalLM(c, body, head, eos_token_id)


class _Taker:
    """Hands out ``state``'s tensors by name once each, as modules; remembers what is left over."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state, self.left = state, set(state)
        self.linears: dict[str, tuple[int, int]] = {}

    def __call__(self, name: str) -> Any:
        if name not in self.state:
            raise ModelNotFoundError(f"The checkpoint has no tensor {name}; set direct_load: off to load it "
                                     "through transformers.")
        self.left.discard(name)
        return self.state[name]

    def linear(self, name: str, bias: bool = False) -> nn.Module:
        weight = self(f"{name}.weight")
        bias_tensor = self(f"{name}.bias") if bias else None
        if isinstance(weight, QuantizedWeight):
            module: nn.Module = QuantizedLinear(weight, bias_tensor)
        else:
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias, device="meta")
            module.weight = nn.Parameter(weight, requires_grad=False)
            if bias_tensor is not None:
                module.bias = nn.Parameter(bias_tensor, requires_grad=False)
        self.linears[name] = (module.out_features, module.in_features)
        return module

    def embedding_and_head(self, tied: bool) -> tuple[nn.Module, nn.Module]:
        if "model.embed_tokens.weight" not in self.state and tied:  # a quantized tied head: one copy of the rows
            head = self.linear("lm_head")
            rows = head.quantized
            return QuantizedEmbedding(rows, None), head
        weight = self("model.embed_tokens.weight")
        if isinstance(weight, QuantizedWeight):
            embed: nn.Module = QuantizedEmbedding(weight, None)
        else:
            embed = nn.Embedding(weight.shape[0], weight.shape[1], device="meta")
            embed.weight = nn.Parameter(weight, requires_grad=False)
        if tied and "lm_head.weight" not in self.state:
            head = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
            head.weight = embed.weight  # tied: the same parameter, as transformers ties them
            self.linears["lm_head"] = (weight.shape[0], weight.shape[1])
            return embed, head
        return embed, self.linear("lm_head")

    def check_shapes(self, c: DirectConfig) -> None:
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        expected = {"self_attn.q_proj": (q, c.hidden_size), "self_attn.k_proj": (kv, c.hidden_size),
                    "self_attn.v_proj": (kv, c.hidden_size), "self_attn.o_proj": (c.hidden_size, q),
                    "mlp.gate_proj": (c.intermediate_size, c.hidden_size),
                    "mlp.up_proj": (c.intermediate_size, c.hidden_size),
                    "mlp.down_proj": (c.hidden_size, c.intermediate_size)}
        for name, shape in self.linears.items():
            want = (c.vocab_size, c.hidden_size) if name == "lm_head" else expected[name.split(".", 3)[-1]]
            if shape != want:
                raise ModelNotFoundError(f"{name} is {shape[0]}x{shape[1]}, but config.json says {want[0]}x{want[1]}; "
                                         "the checkpoint and its config.json do not match.")
