"""Start at once while pilots queue: the site's ``start_locally`` workers.

A batch pilot may wait minutes in the queue; the user's first jobs need not. With
``start_locally: N`` the site adds one more executor, :data:`START_LOCALLY`, whose one
block is N workers on the submitting host, started with the run. A bundle goes there
while its pool has no worker of its own yet and the local workers have room; once the
pool's first pilot has a worker connected, its bundles go to its pilots again. When no
pool needs them any more (each has a worker of its own) and they hold no bundle, the
local block is held and released, and never used again (prior art: the "ImpatientSlurm"
branch of ctrl_bps_parsl).

Pools whose workers need more cores than this host has never start locally.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from executor.driver.elastic import release_idle_blocks
from executor.driver.pilots import managers_of
from executor.policy.pools import PoolConfig
from executor.sites.base import START_LOCALLY, SiteConfig

#: Seconds a pool's "has a worker" answer is reused (each asks its interchange).
CHECK_SECONDS = 1.0


class LocalStart:
    """Routes bundles to the local workers while pools have none of their own.

    Parameters
    ----------
    site
        The site, with ``start_locally`` workers (> 0).
    executors
        Every executor by label, :data:`START_LOCALLY` among them.
    load_via
        Bundles in flight per executor that is not their pool's
        (``BundlesInFlight.load_via``, read live).
    """

    def __init__(self, site: SiteConfig, executors: Mapping[str, Any], load_via: Mapping[str, int]):
        self.site = site
        self.executors = executors
        self.load_via = load_via
        self.workers = site.start_locally
        self.active = True
        self._seen: set[str] = set()  # pools that have had a worker of their own
        self._checked: dict[str, float] = {}

    def route(self, pool: PoolConfig) -> str:
        """The executor a new bundle of ``pool`` goes to."""
        if (
            self.active
            and pool.cores <= (os.cpu_count() or 1)
            and self.load_via.get(START_LOCALLY, 0) < self.workers
            and not self._pool_has_worker(pool.name)
        ):
            return START_LOCALLY
        return pool.name

    def step(self) -> None:
        """Release the local workers once every pool has its own and they hold nothing."""
        if not self.active or self.load_via.get(START_LOCALLY, 0):
            return
        if all(self._pool_has_worker(pool.name) for pool in self.site.pools):
            executor = self.executors[START_LOCALLY]
            blocks = [b for b, s in dict(executor.status_facade).items() if not s.terminal]
            if set(release_idle_blocks(executor, blocks)) == set(blocks):
                self.active = False

    def _pool_has_worker(self, pool: str) -> bool:
        """Whether ``pool`` has had a worker connected. Once true it stays true for the
        run: a pool between pilots queues its bundles at its interchange, as it would
        without ``start_locally``."""
        if pool in self._seen:
            return True
        now = time.monotonic()
        if now - self._checked.get(pool, -float("inf")) >= CHECK_SECONDS:
            self._checked[pool] = now
            if managers_of(self.executors[pool]):
                self._seen.add(pool)
        return pool in self._seen
