"""Starting pilots as the work grows: the driver's side of :mod:`executor.policy.scaling`.

The policy decides how many blocks a pool needs; this module asks each pool's Parsl
executor for them. Pilots are started with terminal signals blocked, so a Ctrl-C in
the user's terminal reaches the driver (which cancels cleanly), not the pilots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from executor.driver.parsl_session import terminal_signals_blocked
from executor.policy.scaling import blocks_to_start
from executor.sites.base import SiteConfig


def start_pilots(site: SiteConfig, executors: Mapping[str, Any], demand: Mapping[str, int]) -> None:
    """Start pilots for pools whose ``demand`` (bundles held and waiting) outgrows their
    pilots that have not ended."""
    for pool in site.pools:
        executor = executors[pool.name]
        active = sum(1 for status in executor.status_facade.values() if not status.terminal)
        wanted = blocks_to_start(
            demand=demand[pool.name], active_blocks=active, workers=site.workers(pool), pool=pool
        )
        if wanted:
            with terminal_signals_blocked():
                executor.scale_out_facade(wanted)
