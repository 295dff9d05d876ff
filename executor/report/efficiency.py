"""How well a run used its pilots: allocated against busy core-seconds, waste, makespan.

Shops that share nodes ask users not to hold idle ones; this is the number they ask
about. *Allocated* is each pilot's cores from its start to its end; *busy* is the time
its workers ran attempts, times the cores of a worker; *waste* is the difference (a
pilot that waits for work, or drains, or idles before release). *Makespan* is the run's
wall time from its start to its end. ``pilot report`` (text and ``--json``), its HTML
page and the dashboard show the same numbers.
"""

from __future__ import annotations

from typing import Any

from executor.store import Store
from executor.store.pilots import pilot_usage


def pilot_efficiency(store: Store, run: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The run's totals and each pilot's share.

    Returns
    -------
    dict
        ``pilots`` (how many started), ``allocated_core_seconds``, ``busy_core_seconds``,
        ``waste_core_seconds``, ``utilisation`` (busy / allocated, ``None`` before any
        pilot started), ``makespan`` (seconds) and ``per_pilot`` (each pilot's ``pool``,
        ``block_id``, ``job_id``, ``state``, ``start``, ``end``, ``cores``, ``workers``
        and its core-seconds).
    """
    per_pilot = pilot_usage(store, run["id"], now)
    allocated = sum(p["allocated_core_seconds"] for p in per_pilot)
    busy = min(allocated, sum(p["busy_core_seconds"] for p in per_pilot))
    start = run.get("started") or run["created"]
    return {
        "pilots": sum(1 for p in per_pilot if p["start"] is not None),
        "allocated_core_seconds": allocated,
        "busy_core_seconds": busy,
        "waste_core_seconds": allocated - busy,
        "utilisation": busy / allocated if allocated else None,
        "makespan": max(0.0, (run.get("ended") or now) - start),
        "per_pilot": per_pilot,
    }


def describe(efficiency: dict[str, Any]) -> str:
    """``3 pilots: 1,204 core-s allocated, 1,010 busy (84%), 194 wasted; makespan 412.0s``."""
    if not efficiency["pilots"]:
        return f"no pilot started; makespan {efficiency['makespan']:.1f}s"
    share = efficiency["utilisation"]
    busy = f"{efficiency['busy_core_seconds']:,.0f} busy" + (
        f" ({share:.0%})" if share is not None else ""
    )
    plural = "pilot" if efficiency["pilots"] == 1 else "pilots"
    return (
        f"{efficiency['pilots']} {plural}: {efficiency['allocated_core_seconds']:,.0f} core-s "
        f"allocated, {busy}, {efficiency['waste_core_seconds']:,.0f} wasted; "
        f"makespan {efficiency['makespan']:.1f}s"
    )
