"""Which replica answers a request on Ray Serve: the less busy of two, wherever it runs.

Ray Serve's default router first tries the replicas on the proxy's own node and only spills over when they are
full; each lmchat replica accepts ``max_concurrent + max_queue`` requests, so the replicas on other nodes would sit
idle while one engine queues. For model replicas the network hop costs far less than a longer batch, so this
router compares ongoing requests across every replica (two sampled at random when there are more, the "power of
two choices"), first come first served.
"""

from __future__ import annotations

import random

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica


class LeastBusyRouter(FIFOMixin, RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """One rank of at most two replicas; Ray Serve sends the request to the one with fewer ongoing requests."""
        if len(candidate_replicas) > 2:
            return [random.sample(candidate_replicas, 2)]
        return [list(candidate_replicas)]
