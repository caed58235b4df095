"""The one configuration of a ChatModel: LLaMA-Factory's inference keys plus lmchat's own.

Every front end (library, CLI, server, web UI, batch inference) builds on this model; the CLI's flags and help
text are generated from its fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmchat.config.adapters import named_adapters, parse_lora_modules
from lmchat.config.llamafactory import IGNORED_KEYS
from lmchat.config.sections import EngineSettings, KTransformersSettings, MediaSettings, QuantizationSettings
from lmchat.config.validation import SETTINGS_HELP, explain
from lmchat.errors import ConfigError

BACKEND_ALIASES = {"hf": "huggingface", "llama.cpp": "llamacpp", "llama_cpp": "llamacpp", "kt": "ktransformers"}


class ModelConfig(EngineSettings, KTransformersSettings, MediaSettings, QuantizationSettings, BaseModel):
    """What to load and how to generate by default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    # --- the model -----------------------------------------------------------------------------
    model_name_or_path: str | None = Field(
        None, description="Local checkpoint folder, hub id or .gguf file. Empty: the embedded SmolLM2-135M-Instruct."
    )
    adapter_name_or_path: list[str] | None = Field(
        None, description="LoRA adapter folder(s): one path or a comma-separated list, merged into the weights in "
        "order (see merge_adapters)."
    )
    merge_adapters: bool = Field(
        True, description="adapter_name_or_path: merge into the weights at load (true, LLaMA-Factory's way), or "
        "serve each adapter by its folder's name beside the base model, chosen per request (false), like lora_modules."
    )
    lora_modules: dict[str, str] | None = Field(
        None, description="Named LoRA adapters served side by side, chosen per request (the server's model field, "
        "adapter= in the library): name=path entries (vLLM's --lora-modules), comma-separated in YAML, or a mapping.",
        json_schema_extra={"nargs": "+", "metavar": "NAME=PATH"},
    )
    max_lora_rank: int | None = Field(
        None, ge=1, description="Largest rank of a named adapter (default 64; the vllm engine: vllm_max_lora_rank)."
    )
    max_loras: int = Field(8, ge=1, description="Most named adapters loaded at once (lora_modules and live loads).")
    template: str | None = Field(
        None, description="Chat template: a known name (LLaMA-Factory's names too), a .jinja file, or empty for the "
        "model's own template."
    )
    infer_backend: str = Field("huggingface", description="Engine: huggingface (alias hf), or a registered engine. "
                               "Left out, `lmchat chat` runs a GGUF model on llamacpp where it is installed.")
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
    stage: Literal["pt", "sft", "rm", "ppo", "dpo", "kto"] = Field(
        "sft", description="LLaMA-Factory's training stage: rm needs a reward model; the others chat."
    )
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2", "fa3"] = Field(
        "auto", description="Attention implementation: auto, disabled (eager), sdpa, fa2 or fa3 (FlashAttention)."
    )
    rope_scaling: Literal["linear", "dynamic", "yarn", "llama3"] | None = Field(
        None, description="RoPE scaling that stretches the context (by 2, or to model_max_length)."
    )
    model_max_length: int | None = Field(
        None, ge=1, description="Most tokens of prompt plus answer the model takes (default: the model's own)."
    )
    pooling_type: Literal["auto", "mean", "last", "cls"] = Field(
        "auto", description="Embeddings: how the token states become one vector (mean, last token, CLS token); "
        "auto: the folder's sentence-transformers pooling, else cls where texts start with a CLS token, else last."
    )

    # --- the conversation ---------------------------------------------------------------------
    default_system: str | None = Field(None, description="System prompt used when a conversation has none.")
    enable_thinking: bool = Field(
        True, description="Let reasoning templates think (passed to the chat template; null means false)."
    )
    preserve_thinking: bool = Field(
        False, description="Keep the reasoning of earlier answers in the prompt (LLaMA-Factory templates)."
    )
    tool_parser: str | None = Field(None, description="Tool-call parser name; empty: chosen from the template.")
    tool_format: str | None = Field(
        None, description="LLaMA-Factory's tool format (default, qwen, glm4, llama3, mistral, ...): the tool "
        "prompt of LLaMA-Factory templates and, without tool_parser, the tool-call parser."
    )
    cutoff_len: int | None = Field(
        None, ge=1, description="Longest prompt in tokens: a longer one keeps its last cutoff_len tokens."
    )

    # --- generation defaults (overridable per call) -------------------------------------------
    do_sample: bool = Field(True, description="Sample (true) or decode greedily (false).")
    temperature: float = Field(0.95, ge=0, description="Sampling temperature; 0 decodes greedily.")
    top_p: float = Field(0.7, gt=0, le=1, description="Nucleus sampling: keep the smallest set with this mass.")
    top_k: int = Field(50, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    max_new_tokens: int | None = Field(1024, ge=1, description="Most tokens to generate per answer.")
    max_length: int | None = Field(None, ge=1, description="Most tokens of prompt plus answer.")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalise tokens already seen (1.0: off).")
    num_beams: int = Field(1, ge=1, description="Beam search width; only 1 (lmchat samples or decodes greedily).")
    length_penalty: float = Field(1.0, description="Beam-search length penalty: no effect with num_beams 1.")
    skip_special_tokens: bool = Field(True, description="Drop special tokens from the answer text.")

    # --- transformers and llama.cpp engines: continuous batching ---------------------------------
    max_batch_size: int = Field(
        32, ge=1, description="Transformers and llama.cpp engines: most requests decoded together; more wait."
    )
    kv_cache_tokens: int = Field(
        32768, ge=1, description="Transformers engine: KV-cache budget in tokens (rows x longest reservation); "
        "llama.cpp engine: cells of its one KV cache (prompts and answers of all sequences, cached prompts)."
    )
    prefill_chunk_tokens: int = Field(
        256, ge=1, description="Transformers and llama.cpp engines: most prompt tokens prefilled per step, so "
        "streams keep flowing."
    )
    packed_weights: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Transformers engine, CPU: oneDNN-packed copies of the linear weights for batched steps (faster "
        "at 4-32 streams, twice the weights' memory). auto: on for Llama-family models up to 2 GiB.",
    )
    direct_load: Literal["auto", "off"] = Field(
        "auto",
        description="Transformers engine, CPU, float32 or quantization_bit: a local Llama-family checkpoint (Llama, "
        "SmolLM, Mistral, Qwen2) loads straight into lmchat's own forward pass, without transformers' model "
        "classes (a start about 2 s sooner; quantized weights cached once). auto: where the model and settings "
        "allow it; off: always through transformers.",
    )
    quantized_activations: Literal["auto", "off"] = Field(
        "auto",
        description="Transformers engine, CPU, quantization_bit (or a GGUF's 4 bits): the native decoder's multiplies "
        "(one stream's steps, several streams in a step, prompt chunks) round each input row to int8 per group of 32 "
        "and use the CPU's int8 dot products (AVX512-VNNI, AVX-VNNI, or plain AVX2), as llama.cpp does: about twice "
        "the batched throughput (and on a CPU whose one-row step is bound by arithmetic, e.g. AVX2 without VNNI, "
        "faster single streams), perplexity within 1 % (docs/benchmarks.md). The native decoder keeps its weights "
        "laid out for these kernels (a second copy of the quantized weights: +115 MB for the default model). "
        "auto: where the CPU has them; off: float32 activations everywhere (and no second copy).",
    )
    native_decode: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Transformers engine, CPU, float32 Llama-family models: every one-token decode step as one "
        "native call (C++ kernels compiled once per machine, ~40 s, in the background). auto: used once built; "
        "on: wait for the build, an error if impossible; off: never.",
    )

    # --- kept, not used -----------------------------------------------------------------------
    ignored: dict[str, Any] = Field(
        default_factory=dict, exclude=True, json_schema_extra={"internal": True},
        description="LLaMA-Factory keys that cannot change an answer (see lmchat.config.llamafactory), as given.",
    )

    @field_validator("adapter_name_or_path", mode="before")
    @classmethod
    def _split_adapters(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()] or None
        return value

    @field_validator("lora_modules", mode="before")
    @classmethod
    def _named_adapters(cls, value: Any) -> Any:
        return parse_lora_modules(value)

    @field_validator("infer_backend", mode="before")
    @classmethod
    def _backend_alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            return BACKEND_ALIASES.get(name, name)
        return value

    @field_validator("num_beams")
    @classmethod
    def _no_beam_search(cls, value: int) -> int:
        if value != 1:
            raise ValueError("beam search is not available (lmchat samples or decodes greedily); use num_beams 1")
        return value

    @field_validator("enable_thinking", mode="before")
    @classmethod
    def _null_thinking_is_off(cls, value: Any) -> Any:
        return False if value is None else value  # LLaMA-Factory's null: no reasoning in the prompt

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str | None) -> str | None:
        if value:
            from lmchat.templates.registry import check_template

            check_template(value)  # an unknown name fails here, before any model is loaded
        return value

    @field_validator("tool_format")
    @classmethod
    def _known_tool_format(cls, value: str | None) -> str | None:
        if value:
            from lmchat.templates.tool_formats import check_tool_format

            check_tool_format(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _set_ignored_keys_aside(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(key in IGNORED_KEYS for key in data):
            return data
        data = dict(data)
        ignored = dict(data.pop("ignored", None) or {})
        ignored.update({key: data.pop(key) for key in list(data) if key in IGNORED_KEYS})
        return {**data, "ignored": ignored}

    @model_validator(mode="after")
    def _llamafactory_switches(self) -> ModelConfig:
        values = self.__dict__  # direct writes: an assignment would validate (and call this) again
        if self.use_kt:
            if self.infer_backend not in ("huggingface", "ktransformers"):
                raise ValueError(f"use_kt runs the model with KTransformers; it cannot be combined with "
                                 f"infer_backend '{self.infer_backend}' (leave one of them out)")
            values["infer_backend"] = "ktransformers"
        if self.mode is not None and "kt_mode" not in self.model_fields_set:
            values["kt_mode"] = self.mode
        served = named_adapters(self)  # the names must be unique across lora_modules and adapter_name_or_path
        if len(served) > self.max_loras:
            raise ValueError(f"{len(served)} named adapters are more than max_loras ({self.max_loras})")
        if self.tool_format and self.tool_parser is None:
            from lmchat.templates.tool_formats import TOOL_PARSERS

            values["tool_parser"] = TOOL_PARSERS[self.tool_format]
        return self

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> ModelConfig:
        """Validate ``args``; an unknown key or bad value raises ConfigError naming it."""
        if not isinstance(args, dict):
            raise ConfigError(f"ChatModel args must be a dict of settings, got {type(args).__name__}.")
        try:
            return cls(**args)
        except ValidationError as exc:
            raise explain(exc, kind="setting", valid_names=setting_names(), error_cls=ConfigError,
                          where=SETTINGS_HELP) from None

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
    "num_beams",
    "length_penalty",
    "skip_special_tokens",
)


def public_fields() -> dict[str, Any]:
    """ModelConfig's settings as users give them (without internal bookkeeping fields)."""
    return {name: field for name, field in ModelConfig.model_fields.items()
            if not (field.json_schema_extra or {}).get("internal")}


def setting_names() -> list[str]:
    """Every key a config may hold: ModelConfig's settings and LLaMA-Factory's ignored keys."""
    return [*public_fields(), *IGNORED_KEYS]
