"""Groups of ModelConfig settings that belong together (LLaMA-Factory's names): weight quantization, media
limits, KTransformers, and the other engines' own settings. :class:`~lmchat.config.model_config.ModelConfig`
inherits them all; ``lmchat --help-config`` shows each group under its own heading (the class docstring).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

QUANTIZATION_BITS = {"bnb": (4, 8), "hqq": (1, 2, 3, 4, 5, 6, 8), "eetq": (8,)}
"""On-the-fly quantization methods and the bit widths each takes (LLaMA-Factory's rules)."""


class QuantizationSettings(BaseModel):
    """Weight quantization on load (LLaMA-Factory's keys; validated here, honoured by the engine or refused)."""

    quantization_bit: int | None = Field(None, description="Quantize the weights on load to this many bits.")
    quantization_method: Literal["bnb", "gptq", "awq", "aqlm", "quanto", "eetq", "hqq", "mxfp4", "fp8"] = Field(
        "bnb", description="How quantization_bit quantizes: bnb (4/8), hqq (1-6/8) or eetq (8)."
    )
    quantization_type: Literal["fp4", "nf4"] = Field("nf4", description="bnb 4-bit data type.")
    double_quantization: bool = Field(True, description="bnb 4-bit: quantize the quantization constants too.")
    quantization_device_map: Literal["auto"] | None = Field(None, description="Device map of a 4-bit bnb model.")

    @model_validator(mode="after")
    def _bits_fit_the_method(self) -> QuantizationSettings:
        if self.quantization_bit is None:
            return self
        allowed = QUANTIZATION_BITS.get(self.quantization_method)
        if allowed is None:
            raise ValueError(
                f"quantization_bit quantizes on load with bnb, hqq or eetq; quantization_method "
                f"'{self.quantization_method}' is for checkpoints quantized ahead of time (leave quantization_bit out)"
            )
        if self.quantization_bit not in allowed:
            bits = "/".join(map(str, allowed))
            raise ValueError(f"quantization_bit {self.quantization_bit} does not fit quantization_method "
                             f"'{self.quantization_method}', which takes {bits}")
        return self


class MediaSettings(BaseModel):
    """Image, video and audio limits (LLaMA-Factory's keys; text-only chats do not use them)."""

    image_max_pixels: int = Field(768 * 768, ge=1, description="Images larger than this are scaled down.")
    image_min_pixels: int = Field(32 * 32, ge=1, description="Images smaller than this are scaled up.")
    image_do_pan_and_scan: bool = Field(False, description="Gemma 3: pan and scan large images.")
    crop_to_patches: bool = Field(False, description="InternVL: crop images into patches.")
    video_max_pixels: int = Field(256 * 256, ge=1, description="Video frames larger than this are scaled down.")
    video_min_pixels: int = Field(16 * 16, ge=1, description="Video frames smaller than this are scaled up.")
    video_fps: float = Field(2.0, gt=0, description="Video frames sampled per second.")
    video_maxlen: int = Field(128, ge=1, description="Most frames sampled from one video.")
    use_audio_in_video: bool = Field(False, description="Also feed a video's audio track to the model.")
    audio_sampling_rate: int = Field(16000, ge=1, description="Sampling rate audio is resampled to (Hz).")
    allowed_local_media_path: str | None = Field(
        None, description="Folder whose files requests may name as media. Server and web UI: empty means no local "
        "files; library, chat and infer: empty means any file the caller names."
    )
    allowed_media_domains: list[str] | None = Field(
        None, description="Only fetch media URLs from these hosts ('a.com,*.b.com'); they may resolve to private "
        "addresses. Empty: any public host."
    )

    @field_validator("allowed_media_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value

    @model_validator(mode="after")
    def _min_below_max(self) -> MediaSettings:
        for kind in ("image", "video"):
            low, high = getattr(self, f"{kind}_min_pixels"), getattr(self, f"{kind}_max_pixels")
            if high < low:
                raise ValueError(f"{kind}_max_pixels ({high}) cannot be smaller than {kind}_min_pixels ({low})")
        return self


class KTransformersSettings(BaseModel):
    """The ktransformers engine (LLaMA-Factory's keys)."""

    use_kt: bool = Field(False, description="Run the model with KTransformers (selects infer_backend ktransformers).")
    kt_optimize_rule: str | None = Field(None, description="KTransformers: optimize-rule YAML placing the weights.")
    cpu_infer: int | None = Field(32, ge=1, description="KTransformers: CPU threads for the CPU-placed experts.")
    chunk_size: int | None = Field(8192, ge=1, description="KTransformers: prefill chunk size in tokens.")
    kt_maxlen: int = Field(4096, ge=1, description="KTransformers: most tokens of prompt plus answer.")
    kt_use_cuda_graph: bool = Field(True, description="KTransformers: capture decode steps as CUDA graphs.")
    kt_mode: Literal["normal", "long_context"] = Field("normal", description="KTransformers: decode mode.")
    kt_force_think: bool = Field(False, description="KTransformers: start every answer inside <think>.")
    mode: Literal["normal", "long_context"] | None = Field(None, description="Older LLaMA-Factory name of kt_mode.")


def json_mapping(value: Any) -> Any:
    """A mapping given as JSON/YAML text (``vllm_config: '{"max_num_seqs": 8}'``, vllm_infer.py's form)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError("expected a JSON object of settings, like '{\"key\": 1}'") from None
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object of settings, like '{\"key\": 1}'")
    return _typed_strings(parsed)


def _typed_strings(mapping: dict[str, Any]) -> dict[str, Any]:
    """String values that spell a boolean or a number become one, as LLaMA-Factory's JSON configs do."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            value = _typed_strings(value)
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        elif isinstance(value, str) and value.isdigit():
            value = int(value)
        elif isinstance(value, str) and value.replace(".", "", 1).isdigit():
            value = float(value)
        out[key] = value
    return out


class EngineSettings(BaseModel):
    """Settings of one engine each (LLaMA-Factory's names); another engine ignores them, saying so in the log."""

    vllm_maxlen: int = Field(4096, ge=1, description="vLLM: most tokens of prompt plus answer.")
    vllm_gpu_util: float = Field(0.7, gt=0, le=1, description="vLLM: fraction of GPU memory to use.")
    vllm_enforce_eager: bool = Field(False, description="vLLM: disable CUDA graphs.")
    vllm_max_lora_rank: int = Field(32, ge=1, description="vLLM: largest LoRA rank to serve.")
    vllm_config: dict[str, Any] | None = Field(None, description="vLLM: extra engine arguments (a mapping or JSON).")
    sglang_maxlen: int = Field(4096, ge=1, description="SGLang: most tokens of prompt plus answer.")
    sglang_mem_fraction: float = Field(0.7, gt=0, le=1, description="SGLang: fraction of GPU memory to use.")
    sglang_tp_size: int = Field(-1, description="SGLang: tensor-parallel size (-1: all GPUs).")
    sglang_config: dict[str, Any] | None = Field(None, description="SGLang: extra engine arguments (mapping or JSON).")
    sglang_lora_backend: str = Field("triton", description="SGLang: LoRA kernel backend.")
    llamacpp_config: dict[str, Any] | None = Field(
        None, description="llama.cpp: context settings by llama.cpp's names (n_ctx, n_batch, n_threads, flash_attn, "
        "type_k, type_v, n_gpu_layers, ...) and reuse_prefix; see engines/llamacpp/settings.py."
    )
    ktransformers_config: dict[str, Any] | None = Field(
        None, description="KTransformers: further engine settings (gguf_path, ...); they win over the kt_* keys."
    )

    @field_validator("vllm_config", "sglang_config", "llamacpp_config", "ktransformers_config", mode="before")
    @classmethod
    def _mapping_from_text(cls, value: Any) -> Any:
        return json_mapping(value)
