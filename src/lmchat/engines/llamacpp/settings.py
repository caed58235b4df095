"""The llama.cpp engine's settings: ``llamacpp_config`` (llama.cpp's own names) plus the engine-independent batching
keys of the model config, validated once; an unknown key or a bad value is an error naming it.

Defaults (why they are what they are: docs/engines.md, "Continuous batching"):
- flash attention on and a q8_0 KV cache: with them ggml's CPU attention runs one kernel for every batch shape,
  so a sequence's numbers do not depend on what else is in the batch or on how its prompt was split;
- ``n_ctx`` 0: one sequence may use the model's trained context (cut to the KV cache's size);
- threads: ``OMP_NUM_THREADS`` when set (the usual cap on a process's compute threads, e.g. on a shared machine),
  else the physical cores this process may run on (what llama-server uses). ggml's threads spin while they wait
  for each other, so more threads than free cores makes every step many times slower.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmchat.errors import ConfigError

CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30}
RETIRED = {
    "prefill_block": "prompts are now reused at any token (see docs/engines.md); prefill_chunk_tokens sets how many "
                     "prompt tokens are evaluated per step",
    "n_parallel": "use max_batch_size (the most sequences decoded together)",
    "n_seq_max": "use max_batch_size (the most sequences decoded together)",
    "kv_unified": "the KV cache is always one cache shared by all sequences; kv_cache_tokens sets its size",
}


class LlamaCppSettings(BaseModel):
    """``llamacpp_config``: llama.cpp's context and model parameters by their llama.cpp names, and lmchat's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ctx: int = Field(0, ge=0, description="Longest context of one sequence (prompt + answer); 0: the trained one.")
    n_batch: int = Field(512, ge=1, description="Most tokens in one llama_decode call.")
    n_ubatch: int = Field(512, ge=1, description="Most tokens llama.cpp computes at once (physical batch).")
    n_threads: int | None = Field(None, ge=1, description="Threads for one-token steps (default: OMP_NUM_THREADS, "
                                                          "else physical cores).")
    n_threads_batch: int | None = Field(None, ge=1, description="Threads for larger batches (default: n_threads).")
    flash_attn: bool = Field(True, description="Flash attention (one attention kernel for every batch shape).")
    type_k: CacheType = Field("q8_0", description="Data type of the cached keys.")
    type_v: CacheType = Field("q8_0", description="Data type of the cached values.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to a GPU build's device (-1: all).")
    main_gpu: int = Field(0, ge=0, description="The device a GPU build puts the model on.")
    repack: bool = Field(True, description="Let ggml repack weights for faster CPU kernels.")
    rope_freq_base: float = Field(0.0, ge=0, description="RoPE base frequency; 0: the model's.")
    rope_freq_scale: float = Field(0.0, ge=0, description="RoPE frequency scale; 0: the model's.")
    reuse_prefix: bool = Field(True, description="Reuse the cells of a prompt prefix another sequence computed.")
    verbose: bool = Field(False, description="Let llama.cpp log to stderr.")

    @model_validator(mode="after")
    def _quantized_values_need_flash_attention(self) -> LlamaCppSettings:
        if not self.flash_attn and self.type_v not in ("f32", "f16", "bf16"):
            raise ValueError(f"type_v {self.type_v} (a quantized V cache) needs flash_attn: true; with flash_attn: "
                             "false set type_v: f16 too")
        return self


def settings_from(llamacpp_config: dict[str, Any] | None) -> LlamaCppSettings:
    config = dict(llamacpp_config or {})
    for key, advice in RETIRED.items():
        if key in config:
            raise ConfigError(f"llamacpp_config.{key} is not a setting of the llamacpp engine: {advice}.")
    try:
        return LlamaCppSettings(**config)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise ConfigError(f"llamacpp_config: {problems}. Known keys: {', '.join(LlamaCppSettings.model_fields)}.")


def _problem(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if not key:  # a check across keys
        return error["msg"].removeprefix("Value error, ")
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a positive whole number, else :func:`physical_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else physical_cores()


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads of one core count once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology / "physical_package_id").read_text().strip() + ":" +
                      (topology / "core_id").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))
