"""``lmchat infer``'s run: load rows, skip those already written, answer the rest concurrently, write each line as
it arrives, then order the file, and write the summary (with BLEU/ROUGE when asked)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmchat.batch.output import ResultsFile, read_lines
from lmchat.batch.records import is_failed, label_and_prediction, to_record
from lmchat.batch.rows import Row
from lmchat.batch.sampler import DEFAULT_CONCURRENCY, Sample, Sampler
from lmchat.chat.chat_model import ChatModel
from lmchat.config.validation import explain
from lmchat.errors import ConfigError

DEFAULT_OUTPUT = "generated_predictions.jsonl"  # LLaMA-Factory's name
RAY_FIELDS = ("replicas", "gpus_per_replica", "cpus_per_replica", "ray_address")


class BatchOptions(BaseModel):
    """What to read, where to write, and how to sample. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    dataset: list[str] = Field(default_factory=list, description="Dataset names from dataset_info.json.")
    dataset_dir: str = Field("data", description="Folder holding dataset_info.json and the dataset files.")
    media_dir: str | None = Field(None, description="Folder the datasets' media paths are relative to (default: "
                                                    "dataset_dir).")
    input: list[str] = Field(default_factory=list, description="Files or folders of rows.")
    format: str = Field("auto", description="auto, alpaca, sharegpt, openai or openai_batch.")
    split: str = Field("train", description="Split of a datasets.DatasetDict saved on disk.")
    output: str = Field(DEFAULT_OUTPUT, description="Results file (JSON lines).")
    summary: str | None = Field(None, description="Summary file; default: OUTPUT with .summary.json.")
    n: int = Field(1, ge=1, le=128, description="Answers per row.")
    max_samples: int | None = Field(None, ge=1, description="Use only the first rows of each dataset.")
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, description="Rows in flight at once.")
    seed: int | None = Field(None, description="Sampling seed of every row (answer i uses seed + i).")
    adapter: str | None = Field(None, description="The named LoRA adapter answering every row without an adapter "
                                                  "column of its own.")
    stop: list[str] = Field(default_factory=list, description="Stop strings.")
    metrics: bool = Field(False, description="Score predictions against labels (BLEU-4, ROUGE-1/2/L).")
    matrix_save_name: str | None = Field(None, description="LLaMA-Factory's scores file (predict_* keys).")
    pipeline_parallel_size: int | None = Field(None, ge=1, description="vLLM: pipeline-parallel stages.")
    overwrite: bool = Field(False, description="Start a new results file instead of resuming.")
    retry_failed: bool = Field(False, description="When resuming, answer failed rows again.")
    progress: bool = Field(True, description="Show a progress bar.")
    executor: Literal["local", "ray"] = Field("local", description="local (this process) or ray (a Ray cluster).")
    replicas: int = Field(1, ge=1, description="Ray: model replicas (actors), each with its own ChatModel.")
    gpus_per_replica: float = Field(0, ge=0, description="Ray: GPUs each replica reserves.")
    cpus_per_replica: float = Field(1, gt=0, description="Ray: CPUs each replica reserves.")
    ray_address: str | None = Field(None, description="Ray: the cluster (auto, HOST:PORT, ray://...); default "
                                                      "RAY_ADDRESS, else a new local Ray.")

    @model_validator(mode="after")
    def _ray_fields_need_ray(self) -> BatchOptions:
        given = [name for name in RAY_FIELDS if name in self.model_fields_set]
        if given and self.executor != "ray":
            raise ValueError(f"{', '.join(given)} only apply with executor ray (--executor ray)")
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BatchOptions:
        try:
            return cls(**values)
        except ValidationError as exc:
            raise explain(exc, kind="batch option", valid_names=cls.model_fields, error_cls=ConfigError) from None

    def summary_path(self) -> Path:
        output = Path(self.output)
        return Path(self.summary) if self.summary else output.with_name(output.stem + ".summary.json")

    def generation(self) -> dict[str, Any]:
        # a given n (even 1) is also the most answers a row may ask for (batch/sampler.py capped_generation)
        options: dict[str, Any] = {"n": self.n} if self.n != 1 or "n" in self.model_fields_set else {}
        if self.seed is not None:
            options["seed"] = self.seed
        if self.adapter is not None:
            options["adapter"] = self.adapter
        if self.stop:
            options["stop"] = list(self.stop)
        return options


def run_batch(rows: list[Row], model: ChatModel | Mapping[str, Any], options: BatchOptions,
              log: TextIO | None = None) -> dict[str, Any]:
    """Answer every row not yet in ``options.output``; returns the summary (also written to the summary file)."""
    log = log or sys.stderr
    results = ResultsFile(options.output, overwrite=options.overwrite, retry_failed=options.retry_failed)
    try:
        return _run(rows, model, options, results, log)
    finally:
        results.release()


def _run(rows: list[Row], model: ChatModel | Mapping[str, Any], options: BatchOptions, results: ResultsFile,
         log: TextIO) -> dict[str, Any]:
    todo = [row for row in rows if row.id not in results.done]
    if results.removed and not options.retry_failed:
        print(f"Removed {results.removed} repeated lines of {results.path} (one line per row is kept).", file=log)
    if results.repaired:
        print(f"Cut off a partial last line of {results.path} (a run was interrupted).", file=log)
    if len(todo) < len(rows):
        print(f"Resuming: {len(rows) - len(todo)} of {len(rows)} rows are already in {results.path}.", file=log)
    tally = _Tally(total=len(rows), skipped=len(rows) - len(todo))
    placement = _answer_rows(todo, model, options, results, tally, log) if todo else None
    results.sort({row.id: row.position for row in rows})
    summary = tally.summary(results.path)
    if placement:
        summary["ray"] = placement
    if options.metrics or options.matrix_save_name:
        from lmchat.batch.metrics import similarity_scores

        summary["metrics"] = similarity_scores(filter(None, map(label_and_prediction, read_lines(results.path))))
    if options.matrix_save_name:
        write_llamafactory_scores(Path(options.matrix_save_name), summary, tally, options.concurrency, log)
    path = options.summary_path()
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(_summary_line(summary, path), file=log)
    return summary


def write_llamafactory_scores(path: Path, summary: dict[str, Any], tally: _Tally, batch_size: int,
                              log: TextIO) -> None:
    """vllm_infer.py's ``matrix_save_name`` file: the predict_* scores, then preparation and run times and rates."""
    scores = {name: value for name, value in summary["metrics"].items() if name.startswith("predict_")}
    for name, value in scores.items():
        print(f"{name}: {value:.4f}", file=log)
    runtime = tally.elapsed()
    steps = -(-tally.completed // batch_size)
    scores.update({
        "predict_model_preparation_time": round(tally.preparation, 4),
        "predict_runtime": round(runtime, 4),
        "predict_samples_per_second": round(tally.completed / runtime, 3) if runtime > 0 else 0.0,
        "predict_steps_per_second": round(steps / runtime, 3) if runtime > 0 else 0.0,
    })
    path.write_text(json.dumps(scores, indent=4) + "\n", encoding="utf-8")
    print(f"Score file saved to {path}.", file=log)


def _answer_rows(rows: list[Row], model: ChatModel | Mapping[str, Any], options: BatchOptions,
                 results: ResultsFile, tally: _Tally, log: TextIO) -> dict[str, Any] | None:
    """Answer ``rows`` into ``results``; returns where they ran (Ray) or None (this process)."""
    began = time.perf_counter()
    with _open_sampler(model, options) as sampler:
        tally.preparation = time.perf_counter() - began
        bar = _progress_bar(len(rows), options.progress, log, initial=tally.skipped, total=tally.total)
        tally.start()
        with results:
            try:
                for sample in sampler.stream_samples(rows):
                    results.write(to_record(sample, _model_name(sampler)))
                    tally.add(sample)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(tally.rates(), refresh=False)
            finally:
                tally.stop()
                if bar is not None:
                    bar.close()
                if sampler.capped_rows:
                    print(f"{sampler.capped_rows} rows asked for more than this run's "
                          f"{_limits(sampler.max_new_tokens_cap, options)} and were capped to it.", file=log)
        return sampler.summary() if options.executor == "ray" else None


def _limits(max_new_tokens: int | None, options: BatchOptions) -> str:
    """The run's limits a row cannot exceed, for the capped-rows notice."""
    limits = [f"max_new_tokens ({max_new_tokens})"] if max_new_tokens is not None else []
    return " or ".join(limits + ([f"n ({options.n})"] if "n" in options.generation() else []))


def _open_sampler(model: ChatModel | Mapping[str, Any], options: BatchOptions):
    if options.executor == "ray":
        from lmchat.batch.ray_executor import RaySampler

        return RaySampler(model, replicas=options.replicas, concurrency=options.concurrency,
                          gpus_per_replica=options.gpus_per_replica, cpus_per_replica=options.cpus_per_replica,
                          address=options.ray_address, **options.generation())
    return Sampler(model, concurrency=options.concurrency, **options.generation())


def _model_name(sampler: Any) -> str:
    name = getattr(sampler, "model_name", None)  # a RaySampler learns it from its replicas
    return name if isinstance(name, str) else sampler.model.engine.info.name


class _Tally:
    """Counts and timing of this run."""

    def __init__(self, total: int, skipped: int) -> None:
        self.total, self.skipped = total, skipped
        self.completed = self.failed = self.prompt_tokens = self.completion_tokens = 0
        self.started = self.finished = None
        self.preparation = 0.0  # seconds to load the model

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.finished = time.perf_counter()

    def add(self, sample: Sample) -> None:
        self.completed += 1
        self.failed += sample.failure is not None
        self.prompt_tokens += sample.prompt_tokens
        self.completion_tokens += sample.completion_tokens

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started

    def rates(self) -> str:
        elapsed = self.elapsed() or 1e-9
        return f"{self.completion_tokens / elapsed:.1f} tok/s, {self.failed} failed"

    def summary(self, output: Path) -> dict[str, Any]:
        elapsed = self.elapsed()
        lines = list(read_lines(output)) if output.exists() else []
        return {
            "output": str(output),
            "rows": self.total,
            "skipped": self.skipped,
            "completed": self.completed,
            "failed": self.failed,
            "failed_in_file": sum(1 for line in lines if is_failed(line)),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(self.completed / elapsed, 3) if elapsed else None,
            "tokens_per_s": round(self.completion_tokens / elapsed, 1) if elapsed else None,
        }


def _progress_bar(count: int, enabled: bool, log: TextIO, initial: int, total: int):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="row", file=log, desc="infer", dynamic_ncols=True)


def _summary_line(summary: dict[str, Any], path: Path) -> str:
    text = (
        f"{summary['completed']} rows answered ({summary['failed']} failed, {summary['skipped']} already done) in "
        f"{summary['elapsed_s']:.1f} s: {summary['prompt_tokens']} prompt + {summary['completion_tokens']} "
        f"completion tokens"
    )
    if summary["rows_per_s"]:
        text += f", {summary['rows_per_s']:.2f} rows/s, {summary['tokens_per_s']:.1f} tok/s"
    if "metrics" in summary:
        metrics = summary["metrics"]
        text += "; " + ", ".join(f"{name} {value:.2f}" for name, value in metrics.items() if name != "rows")
    return f"{text}. Results: {summary['output']}; summary: {path}"

