"""The ``local`` backend: pilots are processes on this machine. The default site."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from executor.policy.pools import PoolConfig
from executor.sites.base import SiteConfig


def _machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1_000_000


@dataclass(frozen=True, kw_only=True)
class LocalSite(SiteConfig):
    """Workers run as local processes (Parsl's ``LocalProvider``)."""

    backend: ClassVar[str] = "local"

    def default_pools(self) -> tuple[PoolConfig, ...]:
        # One worker per core; a job may ask for up to all the cores (a `cores: 2` job
        # runs on a laptop without a site file) and the whole machine's memory.
        cores = self.node_cores()
        return (
            PoolConfig(name="default", cores=cores, memory=_machine_memory_mb(), workers=cores),
        )

    def executor_options(self, pool: PoolConfig) -> dict[str, Any]:
        # Parsl starts min(workers, machine cores / cores_per_worker) workers; here the
        # pool's `workers` is what counts (jobs share the machine's cores), so a pool of
        # 2-core workers or more workers than cores still gets every worker it asks for.
        return {"cores_per_worker": min(pool.cores, self.node_cores() / self.workers(pool))}

    def make_provider(self, pool: PoolConfig) -> Any:
        from parsl.providers import LocalProvider

        # The driver starts blocks itself (no 5 s wait for Parsl's first strategy poll).
        return LocalProvider(
            init_blocks=0, min_blocks=0, max_blocks=pool.max_blocks, worker_init=self.worker_init
        )
