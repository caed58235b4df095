"""vLLM's parallelism settings (``vllm_config`` keys), checked and completed before vLLM sees them.

``tensor_parallel_size`` splits each layer over GPUs, ``pipeline_parallel_size`` splits the layers,
``data_parallel_size`` runs whole copies (each of ``tensor x pipeline`` GPUs); ``distributed_executor_backend:
ray`` lets one engine span the nodes of a Ray cluster. Left out, the tensor-parallel size fills the GPUs the
other two leave (LLaMA-Factory's default: every GPU). docs/engines.md, "Parallelism".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmchat.errors import ConfigError

SIZES = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")
BACKENDS = ("ray", "mp", "uni", "external_launcher")  # vLLM's DistributedExecutorBackend
DATA_PARALLEL_BACKENDS = ("ray", "mp")


def vllm_parallel_kwargs(extra: Mapping[str, Any], num_gpus: int) -> dict[str, Any]:
    """``AsyncEngineArgs`` parallelism arguments from the ``vllm_config`` mapping and this machine's GPU count."""
    sizes = {key: _size(extra, key) for key in SIZES}
    pipeline, data = sizes["pipeline_parallel_size"] or 1, sizes["data_parallel_size"] or 1
    tensor = sizes["tensor_parallel_size"] or max(1, num_gpus // (pipeline * data))
    kwargs: dict[str, Any] = {"tensor_parallel_size": tensor, "pipeline_parallel_size": pipeline,
                              "data_parallel_size": data}
    backend = _choice(extra, "distributed_executor_backend", BACKENDS)
    data_backend = _choice(extra, "data_parallel_backend", DATA_PARALLEL_BACKENDS)
    needed = tensor * pipeline * data
    if num_gpus and needed > num_gpus and "ray" not in (backend, data_backend):
        raise ConfigError(
            f"vllm_config asks for {tensor} (tensor) x {pipeline} (pipeline) x {data} (data) = {needed} GPUs; this "
            f"machine has {num_gpus}. Lower the sizes, or span a Ray cluster's nodes with "
            "distributed_executor_backend: ray.", param="vllm_config",
        )
    if backend is not None:
        kwargs["distributed_executor_backend"] = backend
    if data_backend is not None:
        kwargs["data_parallel_backend"] = data_backend
    return kwargs


def _size(extra: Mapping[str, Any], key: str) -> int | None:
    value = extra.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"vllm_config.{key} must be a whole number of at least 1, got {value!r}.",
                          param="vllm_config")
    return value


def _choice(extra: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str | None:
    value = extra.get(key)
    if value is not None and value not in choices:
        raise ConfigError(f"vllm_config.{key} must be one of {', '.join(choices)}, got {value!r}.",
                          param="vllm_config")
    return value
