"""Load a model for the transformers engine: a local folder, a hub id, a .gguf file or the default model."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmchat.config.adapters import merged_adapters
from lmchat.config.model_config import ModelConfig
from lmchat.engines.hf import direct, quant
from lmchat.engines.hf.processor import is_multimodal, load_processor, processor_options
from lmchat.errors import ConfigError, ModelNotFoundError, require

logger = logging.getLogger(__name__)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
VALUE_HEAD_FILES = ("value_head.safetensors", "value_head.bin")


@dataclass
class LoadedModel:
    """A model and tokenizer ready to run, with what kind of model it is."""

    name: str
    model: Any
    tokenizer: Any
    device: torch.device
    kind: str  # "generative", "sequence_classification", "value_head" or "embedding" (an encoder: no head)
    value_head: tuple[torch.Tensor, torch.Tensor] | None = None
    processor: Any = None  # a vision/audio model's processor (lmchat.engines.hf.processor), else None
    source: str = ""  # the folder (or hub id) it was loaded from
    image_options: dict[str, Any] = field(default_factory=dict)  # every processor call's (processor_options)


def resolve_source(config: ModelConfig) -> tuple[str, str]:
    """``(path_or_hub_id, display name)`` for the configured model."""
    value = config.model_name_or_path
    if not value:
        from lmchat.models.default import DEFAULT_MODEL_NAME, default_model_dir

        return str(default_model_dir()), DEFAULT_MODEL_NAME
    path = Path(value).expanduser()
    if value.endswith(".gguf"):
        from lmchat.models.gguf import convert_gguf

        return str(convert_gguf(path)), path.stem
    if path.is_dir():
        return str(path), path.name
    if path.exists():
        raise ModelNotFoundError(f"{value} is a file; give a model folder, a .gguf file or a hub id.")
    if _HUB_ID.match(value) and not value.startswith((".", "/", "~")):
        return value, value
    raise ModelNotFoundError(f"Model not found: {value} is not a folder, a .gguf file or a hub id (owner/name).")


def pick_device(config: ModelConfig) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(config: ModelConfig, device: torch.device) -> torch.dtype:
    if config.infer_dtype != "auto":
        return getattr(torch, config.infer_dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(config: ModelConfig) -> LoadedModel:
    """Load tokenizer and weights, apply LoRA adapters, and detect reward models: directly where
    :mod:`lmchat.engines.hf.direct` can (a local Llama-family checkpoint on the CPU), else through transformers."""
    source, name = resolve_source(config)
    device = pick_device(config)
    reason = direct.unsupported(config, source, device)
    if reason is None:
        return _load_direct(config, source, name, device)
    logger.debug("Loading %s through transformers' model classes: %s.", name, reason)
    return _load_transformers(config, source, name, device)


def _load_direct(config: ModelConfig, source: str, name: str, device: torch.device) -> LoadedModel:
    bits = quant.chosen_bits(config, device, source if _from_gguf(config) else None)
    quant.load_options(config, device, bits)  # the same refusals as the transformers path
    image_options = processor_options(None, config, source)  # a text model: refuses the media settings
    model, tokenizer = direct.load_direct(config, source, name, bits)
    return LoadedModel(name, model, tokenizer, device, "generative", None, None, source, image_options)


def _from_gguf(config: ModelConfig) -> bool:
    """Whether the model was given as a GGUF (the default model, or a .gguf path): see quant.chosen_bits."""
    value = config.model_name_or_path
    return not value or value.endswith(".gguf")


def _load_transformers(config: ModelConfig, source: str, name: str, device: torch.device) -> LoadedModel:
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise on a chat's stderr
    hub = {"revision": config.model_revision, "cache_dir": config.cache_dir, "token": config.hf_hub_token,
           "trust_remote_code": config.trust_remote_code}
    try:
        model_config = AutoConfig.from_pretrained(source, **hub)
        tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    except OSError as exc:
        raise ModelNotFoundError(f"Cannot load model '{source}': {_first_line(exc)}") from None
    kind = _model_kind(model_config, source)
    if config.rope_scaling:
        scale_rope(model_config, config.rope_scaling, config.model_max_length)
    processor = None
    if kind == "generative" and is_multimodal(model_config):
        processor = load_processor(source, hub)
        tokenizer = getattr(processor, "tokenizer", tokenizer)
        model_class = multimodal_model_class(model_config)
    else:
        model_class = {"sequence_classification": AutoModelForSequenceClassification,
                       "embedding": AutoModel}.get(kind, AutoModelForCausalLM)
    image_options = processor_options(processor, config, source)  # before the weights: a refusal fails fast
    attention = attention_implementation(config.flash_attn, device)
    if attention:
        hub["attn_implementation"] = attention
    gguf = kind == "generative" and _from_gguf(config)
    bits = quant.chosen_bits(config, device, source if gguf else None)
    quantization = quant.load_options(config, device, bits)  # before the weights: a refusal fails fast
    model = model_class.from_pretrained(source, config=model_config, dtype=pick_dtype(config, device), **hub,
                                        **quantization)
    model = apply_adapters(model, merged_adapters(config))
    if not quantization:  # bitsandbytes placed the model itself
        model.to(device)
    model.eval()
    if bits and device.type == "cpu":
        quant.quantize_model(model, bits)
    value_head = load_value_head(Path(source), device, model.dtype) if kind == "value_head" else None
    return LoadedModel(name, model, tokenizer, device, kind, value_head, processor, source, image_options)


def multimodal_model_class(model_config: Any) -> Any:
    """The class a vision/audio checkpoint names (``architectures``), else ``AutoModelForImageTextToText``."""
    import transformers

    for name in getattr(model_config, "architectures", None) or ():
        if hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.AutoModelForImageTextToText


_ATTENTION = {"disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2", "fa3": "flash_attention_3"}


def attention_implementation(flash_attn: str, device: torch.device) -> str | None:
    """transformers' ``attn_implementation`` for LLaMA-Factory's ``flash_attn`` (auto: transformers chooses)."""
    if flash_attn == "auto":
        return None
    if flash_attn in ("fa2", "fa3"):
        from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

        available = is_flash_attn_2_available() if flash_attn == "fa2" else is_flash_attn_3_available()
        if device.type != "cuda" or not available:
            package = "flash-attn" if flash_attn == "fa2" else "flash-attn 3 (flash_attn_interface)"
            raise ConfigError(
                f"flash_attn: {flash_attn} needs a CUDA GPU and the {package} package (this model is on "
                f"{device.type}{'' if available else ', the package is missing'}); use auto, sdpa or disabled.",
                param="flash_attn",
            )
    return _ATTENTION[flash_attn]


def scale_rope(model_config: Any, rope_type: str, model_max_length: int | None) -> None:
    """LLaMA-Factory's ``rope_scaling``: stretch the RoPE by 2, or to ``model_max_length`` (rounded up to a whole
    factor), and grow the context to match."""
    params = getattr(model_config, "rope_parameters", None)
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise ConfigError(f"rope_scaling: this model ({getattr(model_config, 'model_type', '?')}) has no single "
                          "RoPE setting to scale; leave rope_scaling out.", param="rope_scaling")
    base = int(params.get("original_max_position_embeddings") or model_config.max_position_embeddings)
    if model_max_length is not None and model_max_length <= base:
        logger.info("rope_scaling: model_max_length %d fits the model's %d positions; not scaled", model_max_length,
                    base)
        return
    factor = float(math.ceil(model_max_length / base)) if model_max_length else 2.0
    scaled = {**params, "rope_type": rope_type, "factor": factor}
    if rope_type in ("dynamic", "yarn", "llama3"):
        scaled["original_max_position_embeddings"] = base
    if rope_type == "llama3":
        scaled.update(low_freq_factor=1.0, high_freq_factor=4.0)
    model_config.rope_parameters = scaled
    model_config.max_position_embeddings = int(base * factor)
    logger.info("rope_scaling %s: factor %.0f, context %d -> %d tokens", rope_type, factor, base,
                model_config.max_position_embeddings)


def _model_kind(model_config: Any, source: str) -> str:
    architectures = getattr(model_config, "architectures", None) or []
    if any(arch.endswith("ForSequenceClassification") for arch in architectures):
        if getattr(model_config, "num_labels", 1) != 1:
            raise ConfigError(
                f"'{source}' is a classifier with {model_config.num_labels} labels; a reward model has one."
            )
        return "sequence_classification"
    if any((Path(source) / name).is_file() for name in VALUE_HEAD_FILES):
        return "value_head"
    if (Path(source) / "modules.json").is_file() or (architectures and all(
            arch.endswith("Model") and not arch.endswith("LMHeadModel") for arch in architectures)):
        return "embedding"  # a sentence-transformers folder, or a bare encoder (BertModel, LlamaModel, ...)
    return "generative"


def apply_adapters(model: Any, adapters: list[str]) -> Any:
    """Apply LoRA adapters in order, merging each into the weights (so inference runs at full speed)."""
    if not adapters:
        return model
    require("peft", "hf")
    from peft import PeftModel

    for adapter in adapters:
        if not Path(adapter).expanduser().is_dir():
            raise ModelNotFoundError(f"LoRA adapter folder not found: {adapter}")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        logger.info("Merged LoRA adapter %s", adapter)
    return model


def load_value_head(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """LLaMA-Factory's value head: ``v_head.summary.weight`` (1, hidden) and ``v_head.summary.bias`` (1,)."""
    if (folder / VALUE_HEAD_FILES[0]).is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / VALUE_HEAD_FILES[0]))
    else:
        state = torch.load(folder / VALUE_HEAD_FILES[1], map_location="cpu", weights_only=True)
    try:
        weight, bias = state["v_head.summary.weight"], state["v_head.summary.bias"]
    except KeyError:
        raise ModelNotFoundError(f"{folder} has a value head file without v_head.summary.weight/bias.") from None
    return weight.to(device, dtype), bias.to(device, dtype)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
