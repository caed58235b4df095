"""Prometheus metrics (``GET /metrics``): requests by status, time to first token, tokens, running and waiting."""

from __future__ import annotations

from lmchat.errors import require

require("prometheus_client", "serve")

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from lmchat.server.admission import Admission  # noqa: E402

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, admission: Admission, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name}
        self.requests = Counter(
            "lmchat_requests", "HTTP requests by route and status code.", ["route", "status"], registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "lmchat_time_to_first_token_seconds", "Seconds from a generation request's arrival to its first token.",
            ["model_name"], buckets=_TTFT_BUCKETS, registry=self.registry,
        ).labels(**labels)
        self.request_latency = Histogram(
            "lmchat_request_duration_seconds", "Seconds from a generation request's arrival to its last token.",
            ["model_name"], registry=self.registry,
        ).labels(**labels)
        self.prompt_tokens = Counter(
            "lmchat_prompt_tokens", "Prompt tokens processed.", ["model_name"], registry=self.registry
        ).labels(**labels)
        self.generation_tokens = Counter(
            "lmchat_generation_tokens", "Tokens generated.", ["model_name"], registry=self.registry
        ).labels(**labels)
        running = Gauge("lmchat_requests_running", "Requests running on the engine.", ["model_name"],
                        registry=self.registry)
        running.labels(**labels).set_function(lambda: admission.running)
        waiting = Gauge("lmchat_requests_waiting", "Requests waiting for a free slot.", ["model_name"],
                        registry=self.registry)
        waiting.labels(**labels).set_function(lambda: admission.waiting)

    def count_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def arender(self) -> bytes:
        """What ``GET /metrics`` returns (on Ray Serve: every replica's sum, see ``server/ray_metrics.py``)."""
        return self.render()
