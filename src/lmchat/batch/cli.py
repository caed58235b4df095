"""The batch flags of ``lmchat infer`` (and ``python -m lmchat.batch``); the model flags belong to ModelConfig.

``python -m lmchat.batch [config.yaml] --dataset alpaca_en_demo --dataset_dir data --model_name_or_path ...``.
Batch keys may also sit in the YAML file (``dataset``, ``dataset_dir``, ``max_samples``, ``save_name``, ...), as in
LLaMA-Factory's inference configs; flags override them. LLaMA-Factory's ``scripts/vllm_infer.py`` flags work too
(``--save_name``, ``--matrix_save_name``, ``--batch_size``, ``--pipeline_parallel_size``; ``--cutoff_len``,
``--image_max_pixels``, ``--vllm_config``, ... are model settings).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lmchat.batch.rows import FORMATS
from lmchat.batch.runner import BatchOptions, run_batch
from lmchat.batch.sources import load_rows
from lmchat.errors import ConfigError

_ALIASES = {"save_name": "output", "batch_size": "concurrency"}  # LLaMA-Factory's vllm_infer.py names
_LIST_KEYS = ("dataset", "input", "stop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the batch flags; a flag not given is absent from the namespace (its default lives in BatchOptions)."""
    group = parser.add_argument_group("batch inference")

    def add(flag: str, help_text: str, **kwargs: Any) -> None:
        name = flag.lstrip("-")
        field = BatchOptions.model_fields.get(kwargs.pop("field", name))
        value = field.get_default(call_default_factory=True) if field is not None else None
        shown = value not in (None, []) and not isinstance(value, bool) and "(default" not in help_text
        default = f" (default: {value})" if shown else ""
        group.add_argument(flag, default=argparse.SUPPRESS, help=help_text + default, **kwargs)

    add("--dataset", "dataset name(s) from DATASET_DIR/dataset_info.json, comma-separated", action="append")
    add("--dataset_dir", "folder of dataset_info.json and the dataset files")
    add("--media_dir", "folder the datasets' image/video/audio paths are relative to (default: DATASET_DIR)")
    add("--input", "a JSON/JSONL/Parquet/CSV file, a folder of them, or a datasets folder (repeatable)",
        action="append")
    add("--format", "row format of --input", choices=("auto", *FORMATS))
    add("--split", "split of a DatasetDict saved on disk")
    add("--output", "results file (JSON lines; rerunning resumes it)")
    add("--save_name", "same as --output (LLaMA-Factory's name)", dest="output", field="output")
    add("--summary", "summary file (default: OUTPUT with .summary.json)")
    add("--n", "answers per row", type=int)
    add("--max_samples", "use only the first rows of each dataset", type=int)
    add("--concurrency", "rows in flight at once", type=int)
    add("--batch_size", "same as --concurrency (LLaMA-Factory's name)", type=int, dest="concurrency",
        field="concurrency")
    add("--pipeline_parallel_size", "vLLM engine: pipeline-parallel stages (other engines: only 1)", type=int)
    add("--seed", "sampling seed", type=int)
    add("--adapter", "named LoRA adapter (lora_modules) answering rows without an adapter column of their own")
    add("--stop", "stop string (repeatable)", action="append")
    add("--metrics", "score predictions against labels: BLEU-4, ROUGE-1/2/L", action="store_true")
    add("--matrix_save_name", "write LLaMA-Factory's predict_* scores and timings to this JSON file (implies "
        "--metrics)")
    add("--overwrite", "start a new results file instead of resuming", action="store_true")
    add("--retry_failed", "when resuming, answer the failed rows again", action="store_true")
    add("--no_progress", "no progress bar", action="store_false", dest="progress", field="progress")
    add_ray_arguments(parser)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor ray`` and its flags (docs/batch.md, "On a Ray cluster")."""
    group = parser.add_argument_group("batch inference on Ray (--executor ray)")
    group.add_argument("--executor", choices=("local", "ray"), default=argparse.SUPPRESS,
                       help="local: this process (default); ray: a Ray Data pipeline over model replicas")
    group.add_argument("--replicas", type=int, default=argparse.SUPPRESS,
                       help="model replicas, each a Ray actor with its own ChatModel (default: 1); with ray, "
                            "--concurrency counts rows in flight per replica")
    group.add_argument("--gpus_per_replica", type=float, default=argparse.SUPPRESS,
                       help="GPUs each replica reserves (default: 0)")
    group.add_argument("--cpus_per_replica", type=float, default=argparse.SUPPRESS,
                       help="CPUs each replica reserves (default: 1)")
    group.add_argument("--ray_address", default=argparse.SUPPRESS,
                       help="the Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a new "
                            "local Ray)")


def batch_options(args: argparse.Namespace, model_config: dict[str, Any]) -> tuple[BatchOptions, dict[str, Any]]:
    """Batch options from the config's batch keys overridden by the flags, and the config without them."""
    model_config = dict(model_config)
    values: dict[str, Any] = {}
    for key in list(model_config):
        name = _ALIASES.get(key, key)
        if name in BatchOptions.model_fields:
            values[name] = model_config.pop(key)
    values.update({key: value for key, value in vars(args).items() if key in BatchOptions.model_fields})
    for key in _LIST_KEYS:
        if key in values:
            values[key] = _as_list(values[key], split_commas=key != "stop")
    options = BatchOptions.from_dict(values)
    return options, engine_settings(options, model_config)


def engine_settings(options: BatchOptions, model_config: dict[str, Any]) -> dict[str, Any]:
    """vllm_infer.py's engine flags: ``pipeline_parallel_size`` into ``vllm_config``, and a context of
    ``cutoff_len + max_new_tokens`` when no ``vllm_maxlen`` is given."""
    from lmchat.config.model_config import ModelConfig

    config = ModelConfig.from_dict(model_config)  # validated once here; errors name the setting
    if config.infer_backend != "vllm":
        if options.pipeline_parallel_size not in (None, 1):
            raise ConfigError(f"pipeline_parallel_size {options.pipeline_parallel_size} needs infer_backend vllm; "
                              f"the {config.infer_backend} engine runs on one device.", param="pipeline_parallel_size")
        return model_config
    model_config = dict(model_config)
    if options.pipeline_parallel_size is not None:
        model_config["vllm_config"] = {**(config.vllm_config or {}),
                                       "pipeline_parallel_size": options.pipeline_parallel_size}
    if config.cutoff_len is not None and "vllm_maxlen" not in config.model_fields_set:
        model_config["vllm_maxlen"] = config.cutoff_len + (config.max_new_tokens or 0)
    return model_config


def run(args: argparse.Namespace, model_config: dict[str, Any]) -> int:
    """Run batch inference; errors are raised as LmchatError for the caller's error boundary."""
    options, model_config = batch_options(args, model_config)
    rows = load_rows(options.dataset, options.dataset_dir, options.input, options.format, options.max_samples,
                     options.split, options.media_dir)
    run_batch(rows, model_config, options)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lmchat.batch [config.yaml] [batch flags] [model flags]``."""
    from lmchat.cli.argv import standalone_argv
    from lmchat.cli.failure import report
    from lmchat.config.sources import parse_flags

    parser = argparse.ArgumentParser(
        prog="python -m lmchat.batch", allow_abbrev=False,
        description="Batch inference over a dataset; other --key value flags (and a YAML file) configure the model.",
    )
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args, rest = parser.parse_known_args(standalone_argv(argv, parser))
    try:
        return run(args, parse_flags(rest))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the one error boundary of this entry point
        return report(exc, debug=args.debug)


def _as_list(value: Any, split_commas: bool) -> list[str]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        out += [part.strip() for part in str(item).split(",") if part.strip()] if split_commas else [str(item)]
    return out
