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
        # One worker per core; a job may use up to the whole machine's memory.
        return (PoolConfig(name="default", cores=1, memory=_machine_memory_mb()),)

    def make_provider(self, pool: PoolConfig) -> Any:
        from parsl.providers import LocalProvider

        # The driver starts blocks itself (no 5 s wait for Parsl's first strategy poll).
        return LocalProvider(
            init_blocks=0, min_blocks=0, max_blocks=pool.max_blocks, worker_init=self.worker_init
        )
