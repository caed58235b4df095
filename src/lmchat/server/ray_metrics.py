"""``GET /metrics`` over every Ray Serve replica: the same metric names as one process, summed across replicas.

Each replica keeps its own Prometheus registry (``server/metrics.py``) and reports a snapshot of it to one
``MetricsBoard`` actor (every second, and whenever it answers ``/metrics``); the replica that answers a scrape
returns the board's sum. Counters and histograms of a replica that died stay in the sum (totals never go down);
gauges (requests running and waiting) count only replicas heard from in the last few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from lmchat.server.metrics import ServerMetrics

Sample = tuple[str, tuple[tuple[str, str], ...], float]  # name, sorted labels, value
Family = tuple[str, str, str, list[Sample]]  # name, type, help, samples
logger = logging.getLogger("lmchat.server")
REPORT_INTERVAL_S = 1.0
LIVE_FOR_S = 5.0


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """A registry's metrics as plain, picklable tuples."""
    return [
        (metric.name, metric.type, metric.documentation,
         [(sample.name, tuple(sorted(sample.labels.items())), float(sample.value)) for sample in metric.samples])
        for metric in registry.collect()
    ]


def merge(reports: Iterable[tuple[list[Family], bool]]) -> list[Metric]:
    """The sum of several replicas' snapshots (``(families, is_live)`` pairs), in the first report's order.

    ``*_created`` samples (creation times) take the earliest value; gauges sum live replicas only.
    """
    families: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for report, is_live in reports:
        for name, kind, documentation, samples in report:
            families.setdefault(name, (kind, documentation))
            merged = values.setdefault(name, {})
            if kind == "gauge" and not name.endswith("_created") and not is_live:
                continue
            for sample_name, labels, value in samples:
                key = (sample_name, labels)
                if key not in merged:
                    merged[key] = value
                elif sample_name.endswith("_created"):
                    merged[key] = min(merged[key], value)
                else:
                    merged[key] += value
    metrics = []
    for name, (kind, documentation) in families.items():
        metric = Metric(name, documentation, kind)
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        metrics.append(metric)
    return metrics


def render(metrics: list[Metric]) -> bytes:
    """Prometheus text exposition of merged metrics."""

    class _Fixed:
        def collect(self) -> list[Metric]:
            return metrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry)


class MetricsBoard:
    """The Ray actor (``ray.remote`` is applied by ``ray_serve``) holding each replica's latest snapshot."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[float, list[Family]]] = {}

    def report(self, replica: str, families: list[Family]) -> None:
        self.reports[replica] = (time.monotonic(), families)

    def merged(self) -> bytes:
        now = time.monotonic()
        return render(merge((families, now - seen < LIVE_FOR_S) for seen, families in self.reports.values()))

    def by_replica(self) -> dict[str, list[Family]]:
        """Each replica's last snapshot, unsummed (to see how requests spread; ``ray.get_actor`` it by name)."""
        return {replica: families for replica, (_, families) in self.reports.items()}


class ClusterMetrics:
    """What the app's ``state.metrics`` is on a Ray Serve replica: its own metrics recorded locally (the same
    :class:`ServerMetrics` object), the cluster's sum rendered."""

    def __init__(self, local: ServerMetrics, board: Any, replica: str) -> None:
        self.local, self.board, self.replica = local, board, replica
        self.content_type = local.content_type
        self._task: asyncio.Task | None = None

    def __getattr__(self, name: str) -> Any:  # recording: count_request, time_to_first_token, ...
        return getattr(self.local, name)

    def start_reporting(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._report_forever())

    async def arender(self) -> bytes:
        await self._report()
        return await self.board.merged.remote()

    def render(self) -> bytes:
        return self.local.render()  # this replica alone (what `arender` sums)

    async def _report(self) -> None:
        await self.board.report.remote(self.replica, snapshot(self.local.registry))

    async def _report_forever(self) -> None:
        while True:
            try:
                await self._report()
            except Exception as exc:  # noqa: BLE001 - a board being restarted must not stop serving; next round
                logger.debug("Could not report metrics to the board: %s", exc)
            await asyncio.sleep(REPORT_INTERVAL_S)
