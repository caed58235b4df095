"""Batch inference on a Ray cluster (``lmchat infer --executor ray``): a Ray Data pipeline over ChatModel actors.

The driver reads the rows with the same readers as a local run (so ids, formats and resume rules are the same),
hands the rows not yet answered to Ray Data, and writes the samples that come back. The pipeline is
``from_items`` (one pickled :class:`Row` per item) -> ``map_batches(ChatModelReplica, ActorPoolStrategy)`` -> the
driver's iterator. Each replica is a Ray actor holding its own ``ChatModel`` (any engine) and answering batches
with the local :class:`Sampler`, so prompts, answers and failures are exactly those of a local run.

Fault tolerance is Ray Data's: an actor that dies is restarted and the batches it held are run again, so no row is
lost; the driver drops a second answer for a row it has already written, so none is written twice.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lmchat.batch.rows import Row
from lmchat.batch.sampler import DEFAULT_CONCURRENCY, Sample, as_rows, capped_generation, run_token_cap
from lmchat.errors import ConfigError, InvalidRequestError


@dataclass(frozen=True)
class RayPlan:
    """How the rows are spread: replicas (actors), rows in flight per replica, resources per replica."""

    replicas: int = 1
    concurrency: int = DEFAULT_CONCURRENCY
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    start_timeout: float = 600.0  # seconds for every replica to load its model before rows are sent

    def __post_init__(self) -> None:
        _check(self.replicas >= 1, "replicas must be at least 1.", "replicas")
        _check(self.concurrency >= 1, "concurrency must be at least 1.", "concurrency")
        _check(self.gpus_per_replica >= 0, "gpus_per_replica must be 0 or more.", "gpus_per_replica")
        _check(self.cpus_per_replica > 0, "cpus_per_replica must be more than 0.", "cpus_per_replica")
        _check(self.start_timeout > 0, "start_timeout must be more than 0 seconds.", "start_timeout")

    def describe(self) -> str:
        gpus = f", {self.gpus_per_replica:g} GPU" if self.gpus_per_replica else ""
        return f"{self.replicas} replica(s) of {self.cpus_per_replica:g} CPU{gpus} each"

    @property
    def calls_per_replica(self) -> int:
        """Batches a replica works on at once: two, so a new batch starts while the last rows of one finish."""
        return 1 if self.concurrency == 1 else 2

    @property
    def batch_size(self) -> int:
        return math.ceil(self.concurrency / self.calls_per_replica)


class ChatModelReplica:
    """The Ray Data UDF: one ChatModel per actor; each call answers one batch of pickled rows.

    A model that cannot be opened (missing path, bad key, missing engine package) is answered, batch after batch,
    with the pickled error in the ``error`` column: Ray keeps only the text of an exception raised in an actor
    (its constructor or a call), and the driver should raise lmchat's own error, a clear one-line message.
    """

    def __init__(self, model_config: Mapping[str, Any], generation: Mapping[str, Any], concurrency: int) -> None:
        import ray

        from lmchat.batch.sampler import Sampler
        from lmchat.errors import LmchatError

        self.sampler, self.load_error = None, None
        try:
            self.sampler = Sampler(dict(model_config), concurrency=concurrency, **generation)
        except LmchatError as exc:
            self.load_error = exc
        context = ray.get_runtime_context()
        self.node_id, self.actor_id = context.get_node_id(), context.get_actor_id()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        if self.sampler is None:
            samples, model_name, error = [b""] * len(batch["row"]), "", pickle.dumps(self.load_error)
        else:
            rows = [pickle.loads(item) for item in batch["row"]]
            samples = [pickle.dumps(sample) for sample in self.sampler.stream_samples(rows)]
            model_name, error = self.sampler.model.engine.info.name, b""
        count = len(samples)
        return {
            "sample": np.array(samples, dtype=object),
            "error": np.array([error] * count, dtype=object),
            "model": np.array([model_name] * count, dtype=object),
            "node": np.array([self.node_id] * count, dtype=object),
            "replica": np.array([self.actor_id] * count, dtype=object),
        }

    def __del__(self) -> None:
        sampler = getattr(self, "sampler", None)
        if sampler is not None:
            sampler.close()


class RaySampler:
    """The sampler API on a Ray cluster: ``batch_infer`` / ``stream_samples`` as :class:`Sampler` has them.

    ``model`` is the ChatModel config dict each replica opens (the model path must be readable on every node);
    ``generation`` holds per-call options (``n``, ``seed``, ``stop``, ...) for every row. ``address`` names the
    cluster (default: ``RAY_ADDRESS``, else a new local Ray); a session the caller opened with ``ray.init`` is used.
    """

    def __init__(self, model: Mapping[str, Any], *, replicas: int = 1, concurrency: int = DEFAULT_CONCURRENCY,
                 gpus_per_replica: float = 0.0, cpus_per_replica: float = 1.0, address: str | None = None,
                 start_timeout: float = 600.0, **generation: Any) -> None:
        if not isinstance(model, Mapping):
            raise ConfigError("The Ray executor needs the model's config (a dict); each replica opens its own "
                              "ChatModel from it.", param="model")
        self.model_config, config = _checked_config(model, generation)
        self.max_new_tokens_cap = run_token_cap(config)  # each replica's Sampler caps rows by it; counted here
        self.capped_rows = 0
        self.plan = RayPlan(replicas, concurrency, gpus_per_replica, cpus_per_replica, start_timeout)
        self.generation = generation
        self.address = address
        self.model_name: str | None = None
        self.rows_by_node: dict[str, int] = {}
        self.replicas_seen: set[str] = set()

    def stream_samples(self, rows: Iterable[Row]) -> Iterator[Sample]:
        """Samples in the order they finish, each row exactly once."""
        from lmchat.distributed import ray_session

        rows = list(rows)
        if not rows:
            return
        with ray_session(self.address):
            yield from self._run(rows)

    def batch_infer(self, dataset: Any) -> list[Sample]:
        """One sample per row, in the dataset's order (rows, dicts of any supported format, or a path)."""
        rows = as_rows(dataset)
        samples = {sample.row.position: sample for sample in self.stream_samples(rows)}
        return [samples[row.position] for row in rows]

    def close(self) -> None:
        """Nothing stays open between runs: each run's actors end with it."""

    def __enter__(self) -> RaySampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def summary(self) -> dict[str, Any]:
        """Where the rows of the last run were answered."""
        return {"executor": "ray", "replicas": self.plan.replicas, "replicas_seen": len(self.replicas_seen),
                "rows_by_node": dict(self.rows_by_node)}

    # --- the pipeline ---------------------------------------------------------------------------------
    def _run(self, rows: list[Row]) -> Iterator[Sample]:
        import ray
        import ray.data

        from lmchat.distributed import lmchat_cause

        dataset = self._dataset(rows)
        expected = {row.id for row in rows}
        seen: set[str] = set()
        try:
            for item in dataset.iter_rows():
                if item["error"]:
                    raise pickle.loads(item["error"])  # no replica could open the model
                sample: Sample = pickle.loads(item["sample"])
                if sample.id in seen or sample.id not in expected:
                    continue  # a batch run again after its replica died: its rows are already written
                seen.add(sample.id)
                self._count(item)
                self.capped_rows += capped_generation(self.generation, sample.row.generation,
                                                      self.max_new_tokens_cap)[1]
                yield sample
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(
                f"The Ray cluster did not start {self.plan.describe()} within {self.plan.start_timeout:g} s: it may "
                "lack the resources (see 'ray status'), or the model loads slower than that.", param="replicas",
            ) from None
        except ray.exceptions.RayError as exc:
            cause = lmchat_cause(exc)
            if cause is not None:
                raise cause from None
            raise

    def _dataset(self, rows: list[Row]):
        import ray.data

        plan = self.plan
        items = [{"row": pickle.dumps(row)} for row in rows]
        blocks = max(1, math.ceil(len(items) / plan.batch_size), min(len(items), plan.replicas))  # one per replica
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            ChatModelReplica,
            fn_constructor_kwargs={"model_config": self.model_config, "generation": self.generation,
                                   "concurrency": plan.batch_size},
            batch_size=plan.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=plan.replicas, max_tasks_in_flight_per_actor=plan.calls_per_replica,
                max_concurrent_calls_per_actor=plan.calls_per_replica, enable_true_multi_threading=True,
            ),
            num_cpus=plan.cpus_per_replica,
            num_gpus=plan.gpus_per_replica or None,
        )
        _configure(dataset.context, plan)
        return dataset

    def _count(self, item: Mapping[str, Any]) -> None:
        self.model_name = item["model"]
        self.rows_by_node[item["node"]] = self.rows_by_node.get(item["node"], 0) + 1
        self.replicas_seen.add(item["replica"])


def _configure(context: Any, plan: RayPlan) -> None:
    """This dataset's settings: every replica up before rows are sent (a cluster without room for them fails
    after ``start_timeout`` instead of waiting forever), and no progress output of Ray Data's own: the caller shows
    one bar for the whole run."""
    import logging

    from ray.util.debug import log_once

    context.wait_for_min_actors_s = math.ceil(plan.start_timeout)
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    log_once("ray_data_progress_manager_disabled")  # Ray Data's notice that its bars are off, which we know
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _checked_config(model: Mapping[str, Any], generation: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """The config, validated here (unknown keys, bad generation options) before any replica starts: the dict the
    replicas open, and its ModelConfig."""
    from lmchat.config.model_config import ModelConfig
    from lmchat.generation.sampling import resolve_sampling

    config = ModelConfig.from_dict(dict(model))
    template_keys = ("chat_template_kwargs", "enable_thinking")
    resolve_sampling(config.generation_defaults(), {k: v for k, v in generation.items() if k not in template_keys})
    return dict(model), config


def _check(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise InvalidRequestError(message, param=param)
