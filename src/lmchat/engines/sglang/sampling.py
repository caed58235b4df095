"""Map lmchat's config and :class:`SamplingParams` to SGLang's native arguments, as plain dicts (no sglang import).

SGLang takes its sampling parameters as a dict (validated by ``sglang.srt.sampling.sampling_params.SamplingParams``)
and its engine settings as ``ServerArgs`` keyword arguments. Stop strings and ``n`` are handled by the facade.
"""

from __future__ import annotations

from typing import Any

from lmchat.engines.sglang.parallel import sglang_parallel_kwargs
from lmchat.errors import ConfigError, UnsupportedError
from lmchat.generation.sampling import SamplingParams

ADAPTER_NAME = "lmchat-adapter"
# What the engine honours: SGLang's sampling parameters have no bad-word list and no allowed-token list
SGLANG_OPTIONS = frozenset(SamplingParams.model_fields) - {"bad_words", "allowed_token_ids"}


def to_sglang_sampling_params(params: SamplingParams, max_new_tokens: int | None = None,
                              keep_special_tokens: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``sampling_params`` dict of ``Engine.async_generate`` for one sequence of ``params`` (special tokens the
    parsers read keep them all: SGLang keeps all or none)."""
    sampling: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "temperature": 0.0 if params.is_greedy else params.temperature,  # SGLang: 0 means greedy (top_k=1)
        "top_p": params.top_p,
        "top_k": params.top_k or -1,  # -1 keeps the whole vocabulary
        "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "ignore_eos": params.ignore_eos,
        "min_new_tokens": params.min_tokens,
        "skip_special_tokens": params.skip_special_tokens and not keep_special_tokens,
    }
    if params.stop_token_ids:
        sampling["stop_token_ids"] = list(params.stop_token_ids)
    if params.logit_bias:
        sampling["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if params.seed is not None:
        sampling["sampling_seed"] = params.seed
    return sampling


def to_sglang_generate_kwargs(params: SamplingParams) -> dict[str, Any]:
    """The other ``async_generate`` arguments that follow from ``params`` (log-probabilities)."""
    if not params.logprobs:
        return {}
    if params.top_logprobs == -1:
        raise UnsupportedError("The sglang engine cannot return the whole vocabulary's log-probabilities "
                               "(top_logprobs -1); ask for at most 20.", param="top_logprobs")
    return {"return_logprob": True, "top_logprobs_num": params.top_logprobs, "return_text_in_logprobs": True}


def to_sglang_engine_kwargs(config: Any, num_gpus: int) -> dict[str, Any]:
    """``sglang.Engine`` (``ServerArgs``) keyword arguments from lmchat's (LLaMA-Factory's) ``sglang_*`` settings."""
    kwargs: dict[str, Any] = {
        "model_path": config.model_name_or_path,
        "trust_remote_code": config.trust_remote_code,
        "dtype": config.infer_dtype,
        "context_length": config.sglang_maxlen,
        "mem_fraction_static": config.sglang_mem_fraction,
        **sglang_parallel_kwargs(config.sglang_tp_size, config.sglang_config or {}, num_gpus),
        "log_level": "error",
    }
    if config.model_revision != "main":
        kwargs["revision"] = config.model_revision
    if config.cache_dir:
        kwargs["download_dir"] = config.cache_dir
    adapters = config.adapter_name_or_path or []
    if len(adapters) > 1:
        raise ConfigError("The sglang engine applies one LoRA adapter per request; give one adapter path.",
                          param="adapter_name_or_path")
    if adapters:
        kwargs.update(enable_lora=True, lora_paths=[f"{ADAPTER_NAME}={adapters[0]}"],
                      lora_backend=config.sglang_lora_backend)
    return {**kwargs, **(config.sglang_config or {})}


def finish_reason(meta_info: dict[str, Any]) -> str | None:
    """lmchat's finish reason from SGLang's ``meta_info`` (None while the request runs)."""
    reason = meta_info.get("finish_reason")
    if reason is None:
        return None
    kind = reason.get("type") if isinstance(reason, dict) else str(reason)
    return {"length": "length", "abort": "abort"}.get(kind, "stop")
