"""Joining a Ray cluster, shared by batch inference on Ray Data and serving on Ray Serve.

lmchat does not schedule work across machines itself: Ray does. This module only connects (or starts a local Ray
when no cluster is named), turns connection problems into clear errors, and leaves a cluster it did not start
running.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from lmchat.errors import ConfigError, LmchatError, require

ADDRESS_ENV = "RAY_ADDRESS"


@contextlib.contextmanager
def ray_session(address: str | None = None, *, namespace: str | None = None) -> Iterator[None]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``; default: the
    ``RAY_ADDRESS`` environment variable, else a new single-machine Ray) for the duration of the block.

    A session that was already connected (``ray.init`` called by the user) is reused and left open.
    """
    require("ray", "ray")
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict = {"logging_level": logging.WARNING, "namespace": namespace}
    if address is None and not os.environ.get(ADDRESS_ENV):
        kwargs["include_dashboard"] = False  # a private single-machine Ray: no dashboard to expose
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get(ADDRESS_ENV) or "a new local Ray"
        raise ConfigError(
            f"Cannot connect to the Ray cluster at {where}: {exc}. Start one with 'ray start --head', or give its "
            f"address with --ray_address / {ADDRESS_ENV}.", param="ray_address",
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


def lmchat_cause(exc: BaseException) -> LmchatError | None:
    """The lmchat error inside a Ray error (a replica that could not load its model, say), if there is one.

    Ray re-raises a remote exception as a class that is both a RayTaskError and the original's class; the
    original (its plain message, no remote traceback) is what the user should see.
    """
    from ray.exceptions import RayError

    pending, seen = [exc], set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LmchatError) and not isinstance(current, RayError):
            return current
        cause = getattr(current, "cause", None)  # RayTaskError keeps the user's exception here
        pending += [cause if isinstance(cause, BaseException) else None, current.__cause__, current.__context__]
    return None
