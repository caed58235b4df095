"""vLLM's and SGLang's parallelism keys (tensor, pipeline, data, expert, nodes, the Ray executor) through each
engine's engine-arguments mapping, tested without the engines; where vLLM imports, against its real AsyncEngineArgs."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from lmchat.config.model_config import ModelConfig
from lmchat.engines.sglang.sampling import to_sglang_engine_kwargs
from lmchat.engines.vllm.sampling import to_vllm_engine_kwargs
from lmchat.errors import ConfigError

PARALLEL = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def config(**args) -> ModelConfig:
    return ModelConfig.from_dict({"model_name_or_path": "org/model", **args})


def vllm_sizes(num_gpus: int, **vllm_config) -> tuple[int, int, int]:
    kwargs = to_vllm_engine_kwargs(config(vllm_config=vllm_config or None), num_gpus)
    return tuple(kwargs[key] for key in PARALLEL)


def test_vllm_default_is_every_gpu_in_tensor_parallel():
    assert vllm_sizes(4) == (4, 1, 1)
    assert vllm_sizes(0) == (1, 1, 1)  # CPU


def test_vllm_tensor_parallel_fills_what_pipeline_and_data_leave():
    assert vllm_sizes(8, pipeline_parallel_size=2) == (4, 2, 1)
    assert vllm_sizes(8, data_parallel_size=4) == (2, 1, 4)
    assert vllm_sizes(8, tensor_parallel_size=2, data_parallel_size=2) == (2, 1, 2)


def test_vllm_ray_backend_spans_more_gpus_than_this_node():
    kwargs = to_vllm_engine_kwargs(config(vllm_config={"tensor_parallel_size": 8, "pipeline_parallel_size": 2,
                                                       "distributed_executor_backend": "ray"}), 8)
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"]) == (8, 2)
    assert kwargs["distributed_executor_backend"] == "ray"
    with_ray_dp = to_vllm_engine_kwargs(config(vllm_config={"data_parallel_size": 4, "tensor_parallel_size": 4,
                                                            "data_parallel_backend": "ray"}), 8)
    assert with_ray_dp["data_parallel_backend"] == "ray"


def test_vllm_more_gpus_than_the_node_without_ray_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"4 \(tensor\) x 2 \(pipeline\) x 1 \(data\) = 8 GPUs; this machine has 4"):
        vllm_sizes(4, tensor_parallel_size=4, pipeline_parallel_size=2)
    with pytest.raises(ConfigError, match="distributed_executor_backend: ray"):
        vllm_sizes(2, data_parallel_size=2, tensor_parallel_size=2, distributed_executor_backend="mp")


@pytest.mark.parametrize(("extra", "message"), [
    ({"tensor_parallel_size": 0}, "tensor_parallel_size must be a whole number of at least 1, got 0"),
    ({"pipeline_parallel_size": "2"}, "pipeline_parallel_size must be a whole number"),
    ({"data_parallel_size": True}, "data_parallel_size must be a whole number"),
    ({"distributed_executor_backend": "slurm"}, "distributed_executor_backend must be one of ray, mp, uni"),
    ({"data_parallel_backend": "uni"}, "data_parallel_backend must be one of ray, mp"),
])
def test_vllm_bad_parallel_values_name_the_key(extra, message):
    with pytest.raises(ConfigError, match=message):
        to_vllm_engine_kwargs(config(vllm_config=extra), 1)


@pytest.mark.vllm  # runs in .venv-vllm with make test-vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed here")
def test_vllm_parallel_keys_are_async_engine_args_fields():
    from vllm import AsyncEngineArgs

    kwargs = to_vllm_engine_kwargs(config(vllm_config={"pipeline_parallel_size": 2, "data_parallel_size": 2,
                                                       "distributed_executor_backend": "ray"}), 8)
    args = AsyncEngineArgs(**kwargs)
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size) == (2, 2, 2)
    assert args.distributed_executor_backend == "ray"
    names = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
    assert {*PARALLEL, "distributed_executor_backend", "data_parallel_backend"} <= names


def sglang(num_gpus: int, tp_size: int = -1, **extra):
    return to_sglang_engine_kwargs(config(sglang_tp_size=tp_size, sglang_config=extra or None), num_gpus)


def test_sglang_tp_fills_the_gpus_the_others_leave():
    assert sglang(8)["tp_size"] == 8
    assert sglang(8, pp_size=2)["tp_size"] == 4
    assert (sglang(8, dp_size=2)["tp_size"], sglang(8, dp_size=2)["dp_size"]) == (4, 2)
    attention = sglang(8, dp_size=4, enable_dp_attention=True)
    assert (attention["tp_size"], attention["dp_size"]) == (8, 4)  # dp splits attention inside the tp group
    assert sglang(8, ep_size=8)["ep_size"] == 8
    assert sglang(8, tp_size=2)["tp_size"] == 2


def test_sglang_multi_node_needs_its_address_and_rank():
    kwargs = sglang(8, nnodes=2, node_rank=1, dist_init_addr="10.0.0.1:5000")
    assert (kwargs["tp_size"], kwargs["nnodes"], kwargs["node_rank"], kwargs["dist_init_addr"]) == (
        16, 2, 1, "10.0.0.1:5000")
    with pytest.raises(ConfigError, match="needs sglang_config.dist_init_addr"):
        sglang(8, nnodes=2, node_rank=0)
    with pytest.raises(ConfigError, match="node_rank, this node's number from 0 to 1, got 2"):
        sglang(8, nnodes=2, node_rank=2, dist_init_addr="h:1")


def test_sglang_impossible_layouts_are_clear_errors():
    with pytest.raises(ConfigError, match="asked for 16 GPUs"):
        sglang(8, tp_size=8, pp_size=2)
    with pytest.raises(ConfigError, match="tp_size \\(6\\) must be a multiple of dp_size \\(4\\)"):
        sglang(8, tp_size=6, dp_size=4, enable_dp_attention=True)
    with pytest.raises(ConfigError, match="sglang_tp_size \\(2\\) and sglang_config.tp_size \\(4\\) disagree"):
        to_sglang_engine_kwargs(config(sglang_tp_size=2, sglang_config={"tp_size": 4}), 8)
    with pytest.raises(ConfigError, match="pp_size must be a whole number"):
        sglang(8, pp_size=0)
