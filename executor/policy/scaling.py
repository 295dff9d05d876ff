"""How many pilots each pool should start now. Pure; the driver applies the decision.

Demand is the work the driver has for a pool (jobs handed to it plus jobs waiting
for room). A pool starts enough pilots to give every such job a worker, within
``min_blocks`` and ``max_blocks``. Pilots that ended (walltime, lost, cancelled) no
longer count, so a lost pilot is replaced while work remains.
"""

from __future__ import annotations

import math

from executor.policy.pools import PoolConfig


def blocks_to_start(*, demand: int, active_blocks: int, workers: int, pool: PoolConfig) -> int:
    """Pilots to start now for ``pool`` (never beyond ``max_blocks`` active at once).

    Parameters
    ----------
    demand
        Jobs that want a worker of this pool now.
    active_blocks
        Pilots of this pool that are pending or running.
    workers
        Worker slots per pilot.
    """
    wanted = math.ceil(demand / max(1, workers)) if demand > 0 else 0
    wanted = min(pool.max_blocks, max(pool.min_blocks, wanted))
    return max(0, wanted - active_blocks)
