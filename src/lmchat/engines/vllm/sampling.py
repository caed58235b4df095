"""Map lmchat's config and :class:`SamplingParams` to vLLM's native arguments, as plain dicts (no vllm import,
except vLLM's own ``StructuredOutputsParams`` for a request with a constraint).

The engine builds ``vllm.SamplingParams(**to_vllm_sampling_kwargs(...))`` and
``AsyncEngineArgs(**to_vllm_engine_kwargs(...))``; the dicts are unit-tested against those classes where vLLM
is installed. Stop strings and ``n`` are not passed: the facade trims stop strings and expands ``n`` itself.
A constraint (structured output) becomes vLLM's structured outputs (:func:`to_vllm_structured_outputs_kwargs`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from lmchat.config.adapters import max_lora_rank, merged_adapters, named_adapters
from lmchat.engines.vllm.parallel import vllm_parallel_kwargs
from lmchat.errors import ConfigError, UnsupportedError
from lmchat.generation.sampling import SamplingParams
from lmchat.structured.constraint import Constraint

ADAPTER_NAME = "lmchat-adapter"

# On CPU, vLLM reads ``gpu_memory_utilization`` as the fraction of the machine's RAM to reserve; LLaMA-Factory's
# default (0.7) fails on any machine that runs something else. Unless the user chose a size, reserve this much
# for the KV cache (about 90k tokens of SmolLM2-135M, 4k of a 7B Llama) and skip vLLM's memory-probing warm-up.
CPU_KV_CACHE_BYTES = 2 << 30
_MEMORY_KEYS = ("gpu_memory_utilization", "kv_cache_memory_bytes")


def to_vllm_sampling_kwargs(params: SamplingParams, max_tokens: int | None = None,
                            keep_special_tokens: tuple[str, ...] = ()) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for one sequence of ``params``. vLLM keeps all special tokens or
    none, so the ones the parsers read (``keep_special_tokens``) keep them all, as vLLM's own server does."""
    return {
        "n": 1,
        "max_tokens": max_tokens,
        "temperature": 0.0 if params.is_greedy else params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k or -1,  # -1 disables top-k in every vLLM version (0 only in newer ones)
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "logit_bias": dict(params.logit_bias) if params.logit_bias else None,
        "seed": params.seed,
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": params.ignore_eos,
        "min_tokens": params.min_tokens,
        "bad_words": list(params.bad_words) or None,  # vLLM tokenizes them itself, with the same rule as lmchat's
        "allowed_token_ids": list(params.allowed_token_ids) if params.allowed_token_ids is not None else None,
        "skip_special_tokens": params.skip_special_tokens and not keep_special_tokens,
        "logprobs": params.top_logprobs if params.logprobs else None,  # vLLM adds the sampled token; -1: all
        **({"structured_outputs": _structured_outputs(params.constraint)} if params.constraint else {}),
    }


def to_vllm_structured_outputs_kwargs(constraint: Constraint) -> dict[str, Any]:
    """``vllm.sampling_params.StructuredOutputsParams`` keyword arguments for a constraint (one kind each).

    vLLM applies it from the answer's first token unless the engine was started with a reasoning parser for
    structured outputs (``structured_outputs_config``); lmchat's reasoning gate is not passed per request."""
    kwargs: dict[str, Any] = {}
    kind = constraint.kind
    if kind == "json_schema":
        kwargs["json"] = constraint.schema
    elif kind == "json_object":
        kwargs["json_object"] = True
    elif kind == "regex":
        kwargs["regex"] = constraint.regex
    elif kind == "choice":
        kwargs["choice"] = list(constraint.choices)
    elif kind == "grammar":
        kwargs["grammar"] = constraint.grammar
    else:
        kwargs["structural_tag"] = constraint.structural_tag
    _refuse_engine_level_options(constraint)
    return kwargs


# Options of vLLM's StructuredOutputsParams that vLLM 0.32's backends never read from the request (a request's
# own value is dropped): refused per request, never ignored. The first two are engine settings there.
_ENGINE_LEVEL_OPTIONS = (("disable_any_whitespace", lambda c: not c.whitespace_flexible),
                         ("disable_additional_properties", lambda c: not c.additional_properties),
                         ("whitespace_pattern", lambda c: c.whitespace_pattern is not None))


def _refuse_engine_level_options(constraint: Constraint) -> None:
    for name, is_set in _ENGINE_LEVEL_OPTIONS:
        if not is_set(constraint):
            continue
        advice = ("vLLM has no such setting; use the huggingface or llamacpp engine for it" if name ==
                  "whitespace_pattern" else f'or start the engine with vllm_config: {{"structured_outputs_config": '
                  f'{{"{name}": true}}}}')
        raise UnsupportedError(f"{constraint.param} sets {name}, which vLLM does not apply per request: leave it "
                               f"out of the request, {advice}.", param=constraint.param)


def _structured_outputs(constraint: Constraint) -> Any:
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(**to_vllm_structured_outputs_kwargs(constraint))


def to_vllm_engine_kwargs(config: Any, num_gpus: int) -> dict[str, Any]:
    """``vllm.AsyncEngineArgs`` keyword arguments from lmchat's (LLaMA-Factory's) ``vllm_*`` settings.

    ``num_gpus`` is the number of visible CUDA devices (0: vLLM's CPU backend). ``vllm_config`` (a dict, or a JSON
    object as a string, as LLaMA-Factory's ``vllm_infer.py`` passes it) is applied last and wins.
    """
    adapters = merged_adapters(config)
    if len(adapters) > 1:
        raise ConfigError("The vllm engine applies one LoRA adapter to every request; give one adapter path, or "
                          "serve several by name (lora_modules, or merge_adapters: false).",
                          param="adapter_name_or_path")
    # named adapters (or max_loras set, for live loads) need LoRA enabled from the start
    named = bool(named_adapters(config)) or "max_loras" in getattr(config, "model_fields_set", ())
    extra = vllm_config_dict(config.vllm_config)
    kwargs: dict[str, Any] = {
        "model": config.model_name_or_path,
        "trust_remote_code": config.trust_remote_code,
        "dtype": config.infer_dtype,
        "max_model_len": config.vllm_maxlen,
        **vllm_parallel_kwargs(extra, num_gpus),
        "gpu_memory_utilization": config.vllm_gpu_util,
        "enforce_eager": config.vllm_enforce_eager,
        "disable_log_stats": True,
        "enable_lora": bool(adapters) or named,
    }
    if num_gpus == 0 and not _memory_chosen(config, extra):
        del kwargs["gpu_memory_utilization"]
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if adapters or named:
        kwargs["max_lora_rank"] = max_lora_rank(config, default=config.vllm_max_lora_rank)
    if named:
        kwargs["max_loras"] = config.max_loras
    if config.model_revision != "main":
        kwargs["revision"] = config.model_revision
    if config.cache_dir:
        kwargs["download_dir"] = config.cache_dir
    return {**kwargs, **extra}


def vllm_config_dict(value: Any) -> dict[str, Any]:
    """``vllm_config`` as a dict: a dict as given, or a JSON object in a string (empty: no settings)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"vllm_config is not valid JSON ({exc.msg} at character {exc.pos}); give a JSON object, for "
                'example \'{"max_num_seqs": 8}\'.', param="vllm_config") from None
    if not isinstance(value, dict):
        raise ConfigError(f"vllm_config must be a mapping of vLLM engine arguments, got {type(value).__name__}.",
                          param="vllm_config")
    return dict(value)


def _memory_chosen(config: Any, extra: dict[str, Any]) -> bool:
    """Whether the user sized vLLM's memory: vllm_gpu_util given, a memory key in vllm_config, or vLLM's env."""
    given = getattr(config, "model_fields_set", None)
    gpu_util_given = given is None or "vllm_gpu_util" in given  # a plain object: take every attribute as given
    return gpu_util_given or any(key in extra for key in _MEMORY_KEYS) or bool(os.environ.get("VLLM_CPU_KVCACHE_SPACE"))


def finish_reason(vllm_reason: str | None) -> str:
    """vLLM's finish reason in lmchat's terms (``stop``, ``length`` or ``abort``)."""
    return {"length": "length", "abort": "abort"}.get(vllm_reason or "", "stop")
