"""SGLang's parallelism settings (``sglang_tp_size`` and ``sglang_config`` keys), checked and completed before
SGLang sees them.

``tp_size`` splits each layer over GPUs (across nodes too), ``pp_size`` splits the layers, ``dp_size`` runs whole
copies (with ``enable_dp_attention`` it splits attention inside the tensor-parallel group instead), ``ep_size``
spreads MoE experts; ``nnodes``, ``node_rank`` and ``dist_init_addr`` start one engine over several machines (one
lmchat process per node). Left out, the tensor-parallel size fills every GPU of every node the others leave
(LLaMA-Factory's default: every GPU). docs/engines.md, "Parallelism".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmchat.errors import ConfigError

SIZES = ("tp_size", "pp_size", "dp_size", "ep_size", "nnodes")


def sglang_parallel_kwargs(tp_size: int, extra: Mapping[str, Any], num_gpus: int) -> dict[str, Any]:
    """``sglang.Engine`` parallelism arguments from ``sglang_tp_size`` (-1: unset), ``sglang_config`` and this
    node's GPU count."""
    sizes = {key: _size(extra, key) for key in SIZES}
    if tp_size > 0 and sizes["tp_size"] not in (None, tp_size):
        raise ConfigError(f"sglang_tp_size ({tp_size}) and sglang_config.tp_size ({sizes['tp_size']}) disagree; "
                          "give one.", param="sglang_tp_size")
    nodes, pipeline, data = sizes["nnodes"] or 1, sizes["pp_size"] or 1, sizes["dp_size"] or 1
    dp_attention = bool(extra.get("enable_dp_attention"))
    copies = 1 if dp_attention else data
    tensor = (tp_size if tp_size > 0 else sizes["tp_size"]) or max(1, num_gpus * nodes // (pipeline * copies))
    if dp_attention and tensor % data:
        raise ConfigError(f"enable_dp_attention splits the tensor-parallel group: tp_size ({tensor}) must be a "
                          f"multiple of dp_size ({data}).", param="sglang_config")
    needed = tensor * pipeline * copies
    if num_gpus and needed > num_gpus * nodes:
        raise ConfigError(
            f"SGLang is asked for {needed} GPUs (tp {tensor} x pp {pipeline}" + ("" if dp_attention else f" x dp "
            f"{data}") + f"); {nodes} node(s) of {num_gpus} GPUs have {num_gpus * nodes}. Lower the sizes or add "
            "nodes (nnodes, node_rank, dist_init_addr).", param="sglang_config",
        )
    kwargs: dict[str, Any] = {"tp_size": tensor}
    for key in ("pp_size", "dp_size", "ep_size"):
        if sizes[key] is not None:
            kwargs[key] = sizes[key]
    if nodes > 1:
        kwargs.update(nnodes=nodes, **_node_placement(extra, nodes))
    return kwargs


def _node_placement(extra: Mapping[str, Any], nodes: int) -> dict[str, Any]:
    address, rank = extra.get("dist_init_addr"), extra.get("node_rank")
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(f"nnodes {nodes} needs sglang_config.dist_init_addr, the first node's HOST:PORT, on every "
                          "node.", param="sglang_config")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < nodes:
        raise ConfigError(f"nnodes {nodes} needs sglang_config.node_rank, this node's number from 0 to {nodes - 1}, "
                          f"got {rank!r}.", param="sglang_config")
    return {"dist_init_addr": address, "node_rank": rank}


def _size(extra: Mapping[str, Any], key: str) -> int | None:
    value = extra.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"sglang_config.{key} must be a whole number of at least 1, got {value!r}.",
                          param="sglang_config")
    return value
