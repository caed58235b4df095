"""The one configuration of a ChatModel: LLaMA-Factory's inference keys plus lmchat's own.

Every front end (library, CLI, server, web UI, batch inference) builds on this model; the CLI's flags and help
text are generated from its fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmchat.config.validation import explain
from lmchat.errors import ConfigError

BACKEND_ALIASES = {"hf": "huggingface", "llama.cpp": "llamacpp", "llama_cpp": "llamacpp"}


class ModelConfig(BaseModel):
    """What to load and how to generate by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    # --- the model -----------------------------------------------------------------------------
    model_name_or_path: str | None = Field(
        None, description="Local checkpoint folder, hub id or .gguf file. Empty: the embedded SmolLM2-135M-Instruct."
    )
    adapter_name_or_path: list[str] | None = Field(
        None, description="LoRA adapter folder(s): one path or a comma-separated list, applied in order."
    )
    template: str | None = Field(
        None, description="Chat template: a known name, a .jinja file, or empty for the model's own template."
    )
    infer_backend: str = Field("huggingface", description="Engine: huggingface (alias hf), or a registered engine.")
    infer_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights' dtype: auto (float32 on CPU, bfloat16 on a GPU that has it)."
    )
    device: str = Field("auto", description="Device for the transformers engine: auto, cpu, cuda, cuda:N, mps.")
    trust_remote_code: bool = Field(False, description="Allow model code from the checkpoint (transformers).")
    model_revision: str = Field("main", description="Hub revision (branch, tag or commit) to load.")
    cache_dir: str | None = Field(None, description="Hub download cache folder.")
    hf_hub_token: str | None = Field(None, description="Hub token for gated models.")
    finetuning_type: Literal["lora", "freeze", "full", "oft"] = Field(
        "lora", description="LLaMA-Factory's fine-tuning type of the adapters (only LoRA adapters are applied)."
    )

    # --- the conversation ---------------------------------------------------------------------
    default_system: str | None = Field(None, description="System prompt used when a conversation has none.")
    enable_thinking: bool = Field(True, description="Let reasoning templates think (passed to the chat template).")
    tool_parser: str | None = Field(None, description="Tool-call parser name; empty: chosen from the template.")

    # --- generation defaults (overridable per call) -------------------------------------------
    do_sample: bool = Field(True, description="Sample (true) or decode greedily (false).")
    temperature: float = Field(0.95, ge=0, description="Sampling temperature; 0 decodes greedily.")
    top_p: float = Field(0.7, gt=0, le=1, description="Nucleus sampling: keep the smallest set with this mass.")
    top_k: int = Field(50, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    max_new_tokens: int | None = Field(1024, ge=1, description="Most tokens to generate per answer.")
    max_length: int | None = Field(None, ge=1, description="Most tokens of prompt plus answer.")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalise tokens already seen (1.0: off).")
    length_penalty: float = Field(1.0, description="Beam-search length penalty; only 1.0 (no beam search).")
    skip_special_tokens: bool = Field(True, description="Drop special tokens from the answer text.")

    # --- transformers engine: continuous batching ----------------------------------------------
    max_batch_size: int = Field(32, ge=1, description="Transformers engine: most requests decoded together; more wait.")
    kv_cache_tokens: int = Field(
        32768, ge=1, description="Transformers engine: KV-cache budget in tokens (rows x longest reservation)."
    )
    prefill_chunk_tokens: int = Field(
        256, ge=1, description="Transformers engine: most prompt tokens prefilled per step, so streams keep flowing."
    )
    packed_weights: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Transformers engine, CPU: oneDNN-packed copies of the linear weights for batched steps (faster "
        "at 4-32 streams, twice the weights' memory). auto: on for Llama-family models up to 2 GiB.",
    )
    native_decode: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Transformers engine, CPU, float32 Llama-family models: every one-token decode step as one "
        "native call (C++ kernels compiled once per machine, ~40 s, in the background). auto: used once built; "
        "on: wait for the build, an error if impossible; off: never.",
    )

    # --- media (LLaMA-Factory's keys; text-only chats do not use them) --------------------------
    image_max_pixels: int = Field(768 * 768, ge=1, description="Images larger than this are scaled down.")
    image_min_pixels: int = Field(32 * 32, ge=1, description="Images smaller than this are scaled up.")
    video_max_pixels: int = Field(256 * 256, ge=1, description="Video frames larger than this are scaled down.")
    video_min_pixels: int = Field(16 * 16, ge=1, description="Video frames smaller than this are scaled up.")
    video_fps: float = Field(2.0, gt=0, description="Video frames sampled per second.")
    video_maxlen: int = Field(128, ge=1, description="Most frames sampled from one video.")
    audio_sampling_rate: int = Field(16000, ge=1, description="Sampling rate audio is resampled to (Hz).")
    allowed_local_media_path: str | None = Field(
        None, description="Folder whose files requests may name as media. Server: empty means no local files; "
        "library, chat and infer: empty means any file the caller names."
    )
    allowed_media_domains: list[str] | None = Field(
        None, description="Only fetch media URLs from these hosts ('a.com,*.b.com'); they may resolve to private "
        "addresses. Empty: any public host."
    )

    # --- engine-specific settings (LLaMA-Factory names) ---------------------------------------
    vllm_maxlen: int = Field(4096, ge=1, description="vLLM: most tokens of prompt plus answer.")
    vllm_gpu_util: float = Field(0.7, gt=0, le=1, description="vLLM: fraction of GPU memory to use.")
    vllm_enforce_eager: bool = Field(False, description="vLLM: disable CUDA graphs.")
    vllm_max_lora_rank: int = Field(32, ge=1, description="vLLM: largest LoRA rank to serve.")
    vllm_config: dict[str, Any] | None = Field(None, description="vLLM: extra engine arguments.")
    sglang_maxlen: int = Field(4096, ge=1, description="SGLang: most tokens of prompt plus answer.")
    sglang_mem_fraction: float = Field(0.7, gt=0, le=1, description="SGLang: fraction of GPU memory to use.")
    sglang_tp_size: int = Field(-1, description="SGLang: tensor-parallel size (-1: all GPUs).")
    sglang_config: dict[str, Any] | None = Field(None, description="SGLang: extra engine arguments.")
    sglang_lora_backend: str = Field("triton", description="SGLang: LoRA kernel backend.")
    llamacpp_config: dict[str, Any] | None = Field(
        None, description="llama.cpp: Llama() settings (n_ctx, n_threads, n_gpu_layers, ...) and reuse_prefix."
    )
    ktransformers_config: dict[str, Any] | None = Field(
        None, description="KTransformers: optimize rule file, cpu_infer and other engine settings."
    )

    @field_validator("adapter_name_or_path", mode="before")
    @classmethod
    def _split_adapters(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value

    @field_validator("allowed_media_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value

    @field_validator("infer_backend", mode="before")
    @classmethod
    def _backend_alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            return BACKEND_ALIASES.get(name, name)
        return value

    @field_validator("length_penalty")
    @classmethod
    def _no_beam_search(cls, value: float) -> float:
        if value != 1.0:
            raise ValueError("lmchat does not run beam search, so only 1.0 is allowed")
        return value

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> ModelConfig:
        """Validate ``args``; an unknown key or bad value raises ConfigError naming it."""
        if not isinstance(args, dict):
            raise ConfigError(f"ChatModel args must be a dict of settings, got {type(args).__name__}.")
        try:
            return cls(**args)
        except ValidationError as exc:
            raise explain(exc, kind="setting", valid_names=cls.model_fields, error_cls=ConfigError) from None

    def generation_defaults(self) -> dict[str, Any]:
        """The per-call generation options' defaults from this config."""
        return {name: getattr(self, name) for name in GENERATION_KEYS}


GENERATION_KEYS = (
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "max_length",
    "repetition_penalty",
    "skip_special_tokens",
)
