"""``lmchat serve --replicas N``: the flags that put the server on Ray Serve, and the scaling plan they give.

No Ray import here: the flags are listed by ``lmchat serve --help`` whether or not Ray is installed. Any of
``--replicas``, ``--min-replicas``, ``--max-replicas`` or ``--ray-address`` serves on Ray (docs/server.md, "On a
Ray cluster"); without them the server runs in this process, as before.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from lmchat.errors import ConfigError

RAY_FLAGS = ("replicas", "min_replicas", "max_replicas", "ray_address")


@dataclass(frozen=True)
class ServeScaling:
    """How many engine replicas serve, what each reserves, and where the cluster is.

    ``replicas`` alone: a fixed number. ``min_replicas``/``max_replicas``: Ray Serve's autoscaler keeps the count
    between them, aiming at ``target_ongoing_requests`` per replica (default: the server's ``max_concurrent``);
    ``replicas`` is then the count to start with.
    """

    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    ray_address: str | None = None

    def __post_init__(self) -> None:
        _check(self.replicas is None or self.replicas >= 1, "--replicas must be at least 1.", "replicas")
        _check(self.min_replicas is None or self.min_replicas >= 0, "--min-replicas must be 0 or more.",
               "min_replicas")
        _check(self.max_replicas is None or self.max_replicas >= 1, "--max-replicas must be at least 1.",
               "max_replicas")
        _check(self.min_replicas is None or self.max_replicas is not None,
               "--min-replicas needs --max-replicas (the autoscaler's upper bound).", "max_replicas")
        low, high = self.min_replicas or 0, self.max_replicas
        _check(high is None or low <= high, f"--min-replicas ({low}) is above --max-replicas ({high}).",
               "min_replicas")
        _check(high is None or self.replicas is None or low <= self.replicas <= high,
               f"--replicas ({self.replicas}) must lie between --min-replicas ({low}) and --max-replicas ({high}).",
               "replicas")
        _check(self.target_ongoing_requests is None or self.target_ongoing_requests > 0,
               "--target-ongoing-requests must be more than 0.", "target_ongoing_requests")
        _check(self.target_ongoing_requests is None or high is not None,
               "--target-ongoing-requests needs --max-replicas (it steers the autoscaler).", "target_ongoing_requests")
        _check(self.gpus_per_replica >= 0, "--gpus-per-replica must be 0 or more.", "gpus_per_replica")
        _check(self.cpus_per_replica > 0, "--cpus-per-replica must be more than 0.", "cpus_per_replica")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    def deployment_options(self, max_concurrent: int, max_queue: int, shutdown_grace: float) -> dict[str, Any]:
        """``serve.deployment(...).options(...)`` keyword arguments.

        Each replica admits ``max_concurrent`` running plus ``max_queue`` waiting requests itself and answers the
        next one with lmchat's 429 (``Retry-After``), as one process does, so Ray Serve may send it one more than
        it admits; ``LeastBusyRouter`` sends each request to the less busy of two replicas.
        """
        options: dict[str, Any] = {
            "max_ongoing_requests": max_concurrent + max_queue + 1,
            "request_router_config": {"request_router_class": "lmchat.server.ray_routing.LeastBusyRouter"},
            "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica},
            "graceful_shutdown_timeout_s": shutdown_grace,
            "health_check_period_s": 5.0,
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas or 0, "max_replicas": self.max_replicas,
                "initial_replicas": self.replicas if self.replicas is not None else max(1, self.min_replicas or 0),
                "target_ongoing_requests": self.target_ongoing_requests or max_concurrent,
            }
        else:
            options["num_replicas"] = self.replicas or 1
        return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving on Ray Serve (any of --replicas, --min-replicas, --max-replicas, "
                                      "--ray-address)")
    group.add_argument("--replicas", type=int, metavar="N",
                       help="Serve on Ray Serve with N engine replicas, each its own ChatModel (with autoscaling: "
                            "the count to start with).")
    group.add_argument("--min-replicas", type=int, metavar="N", help="Autoscaling: fewest replicas (0 allowed).")
    group.add_argument("--max-replicas", type=int, metavar="N", help="Autoscaling: most replicas.")
    group.add_argument("--target-ongoing-requests", type=float, metavar="N",
                       help="Autoscaling: requests per replica to aim at (default: --max-concurrent).")
    group.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="N",
                       help="GPUs each replica reserves (default: %(default)s).")
    group.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="N",
                       help="CPUs each replica reserves (default: %(default)s).")
    group.add_argument("--ray-address", metavar="ADDRESS",
                       help="The Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a new "
                            "local Ray).")


def scaling_from_args(args: argparse.Namespace) -> ServeScaling | None:
    """The plan, or None when no Ray flag was given (serve in this process)."""
    if not any(getattr(args, name, None) is not None for name in RAY_FLAGS):
        _check(getattr(args, "target_ongoing_requests", None) is None,
               "--target-ongoing-requests needs --max-replicas (it steers the autoscaler).", "target_ongoing_requests")
        for name, default in (("gpus_per_replica", 0.0), ("cpus_per_replica", 1.0)):
            _check(getattr(args, name, default) == default,
                   f"--{name.replace('_', '-')} only applies on Ray Serve (--replicas N).", name)
        return None
    return ServeScaling(
        replicas=args.replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests, gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica, ray_address=args.ray_address,
    )


def _check(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise ConfigError(message, param=param)
