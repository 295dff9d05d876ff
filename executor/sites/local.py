"""The ``local`` backend: pilots are processes on this machine. The default site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from executor.sites.base import SiteConfig


@dataclass(frozen=True, kw_only=True)
class LocalSite(SiteConfig):
    """Workers run as local processes (Parsl's ``LocalProvider``)."""

    backend: ClassVar[str] = "local"

    def make_provider(self) -> Any:
        from parsl.providers import LocalProvider

        # The driver starts blocks itself (no 5 s wait for Parsl's first strategy poll).
        return LocalProvider(
            init_blocks=0, min_blocks=0, max_blocks=self.max_blocks, worker_init=self.worker_init
        )
