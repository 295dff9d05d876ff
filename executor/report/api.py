"""The JSON the dashboard reads: runs, one run's details, one run's plots.

Plain functions of an open store, so they are tested without a server. Values are raw
user data; the dashboard page puts them into the page as text (never as HTML).
"""

from __future__ import annotations

import time
from typing import Any

from executor.report import activity
from executor.report.efficiency import describe as describe_efficiency
from executor.report.efficiency import pilot_efficiency
from executor.report.failures import NAMES_SHOWN, failure_groups, final_failures
from executor.report.figures import run_figures
from executor.report.palette import done
from executor.report.retries import retried_jobs
from executor.store import Store
from executor.store.queries import get_run, list_runs, run_summary


def _progress(summary: dict[str, Any]) -> dict[str, Any]:
    # done = final (report.palette); the page draws the bar from the counts per state.
    return {
        "done": done(summary["jobs"]),
        "total": summary["total"],
        "running": summary["jobs"]["running"],
        "queued": summary["jobs"].get("queued", 0),
    }


def runs(
    store: Store, *, owner: str | None = None, since: float | None = None, limit: int = 200
) -> dict[str, Any]:
    """Every run in the database (newest first), each with its progress."""
    summaries = []
    for row in list_runs(store, limit, owner=owner, since=since):
        summary = run_summary(store, row)
        summaries.append({**summary, "progress": _progress(summary)})
    return {"db": str(store.path), "now": time.time(), "runs": summaries}


def run_detail(store: Store, run_id: str, *, tail_lines: int = 20) -> dict[str, Any]:
    """One run: its summary, progress, pilots and failures grouped by cause with log tails.

    ``failures`` are the groups of ``pilot report --json`` (recovered jobs counted),
    with at most :data:`~executor.report.failures.NAMES_SHOWN` names each. Their
    reproduce scripts are written only where missing: the page polls this, and
    rewriting them would read the whole workflow copy every time.
    """
    now = time.time()
    run = get_run(store, run_id)
    summary = run_summary(store, run)
    pilot_rows, source = activity.pilot_activity(store, run["id"], now=now)
    groups = failure_groups(
        run,
        final_failures(store, run["id"]),
        retried_jobs(store, run["id"]),
        tail_lines=tail_lines,
        examples=NAMES_SHOWN,
        rewrite=False,
    )
    return {
        **summary,
        "now": now,
        "progress": _progress(summary),
        "pilots": pilot_rows,
        "pilot_source": source,
        "efficiency": describe_efficiency(pilot_efficiency(store, run, now=now)),
        "failures": groups,
    }


def run_plots(store: Store, run_id: str) -> dict[str, Any]:
    """The plots of the HTML report, as plotly figure JSON."""
    return run_figures(store, get_run(store, run_id))
