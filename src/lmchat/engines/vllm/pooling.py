"""What the vLLM engine pools, from the tasks vLLM reports for the loaded model (no vllm import, unit-tested).

vLLM pools only on its pooling runner (``runner: pooling``, chosen by vLLM for embedding and classifier checkpoints,
or set with ``vllm_config: {runner: pooling, convert: embed}``): ``embed`` gives embeddings (and cosine pair scores),
``classify``/``score`` a classifier's scores. lmchat asks vLLM for the raw values (``use_activation: false``): the
facade normalises and applies the sigmoid, once for every engine.
"""

from __future__ import annotations

from collections.abc import Iterable

_GENERATE_NOTE = ("vLLM pools only on its pooling runner: load an embedding or classifier checkpoint, or set "
                  "vllm_config: {runner: pooling, convert: embed}")


def pooling_support(tasks: Iterable[str]) -> tuple[frozenset[str], str | None, tuple[tuple[str, str], ...]]:
    """(the pooling tasks lmchat runs, how pairs are scored, why not) for vLLM's supported tasks."""
    tasks = set(tasks)
    if "embed" in tasks:
        return frozenset({"embed", "score"}), "cosine", ()
    if tasks & {"classify", "score"}:
        return frozenset({"score"}), "classifier", (("embed", "it is a classifier: it scores pairs, use /v1/score "
                                                              "or /v1/rerank"),)
    return frozenset(), None, (("embed", _GENERATE_NOTE), ("score", _GENERATE_NOTE))


def pooling_params_kwargs(task: str) -> dict[str, object]:
    """``vllm.PoolingParams`` keyword arguments: the raw vector or score of ``task`` (embed, classify)."""
    return {"task": task, "use_activation": False}


def matryoshka_sizes(is_matryoshka: bool, sizes: Iterable[int] | None) -> tuple[int, ...] | None:
    """vLLM's model config says whether ``dimensions`` may cut the vectors (and to which sizes)."""
    if not is_matryoshka:
        return None
    return tuple(int(size) for size in sizes or ())
