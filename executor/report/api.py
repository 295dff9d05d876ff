"""The JSON the dashboard reads: runs, one run's details, one run's plots.

Plain functions of an open store, so they are tested without a server. Values are raw
user data; the dashboard page puts them into the page as text (never as HTML).
"""

from __future__ import annotations

import time
from typing import Any

from executor.report import activity
from executor.report.figures import run_figures
from executor.store import Store
from executor.store.queries import get_run, list_runs, run_summary

_FINAL = ("succeeded", "failed", "blocked", "cancelled")


def _progress(summary: dict[str, Any]) -> dict[str, Any]:
    done = sum(summary["jobs"].get(state, 0) for state in _FINAL)
    return {"done": done, "total": summary["total"], "running": summary["jobs"]["running"]}


def runs(
    store: Store, *, owner: str | None = None, since: float | None = None, limit: int = 200
) -> dict[str, Any]:
    """Every run in the database (newest first), each with its progress."""
    summaries = []
    for row in list_runs(store, limit, owner=owner, since=since):
        summary = run_summary(store, row)
        summaries.append({**summary, "progress": _progress(summary)})
    return {"db": str(store.path), "now": time.time(), "runs": summaries}


def pilots(store: Store, run_id: str, *, now: float) -> tuple[list[dict[str, Any]], str]:
    """The run's pilots, each with how many attempts it ran and how many run now."""
    spans, source = activity.pilot_spans(store, run_id, now=now)
    counts = {
        str(r["block_id"]): r
        for r in store.query(
            "SELECT block_id, count(*) AS attempts, "
            "sum(state = 'running') AS running, max(host) AS host FROM attempts "
            "WHERE run_id = ? AND block_id IS NOT NULL GROUP BY block_id",
            [run_id],
        )
    }
    out = []
    for span in spans:
        row = counts.get(str(span["block_id"]), {})
        out.append(
            {
                "block_id": span["block_id"],
                "start": span["start"],
                "end": span["end"],
                "attempts": row.get("attempts", 0),
                "running": row.get("running", 0),
                "host": row.get("host"),
            }
        )
    return out, source


def run_detail(store: Store, run_id: str, *, tail_lines: int = 20) -> dict[str, Any]:
    """One run: its summary, progress, pilots and failures grouped by cause with log tails."""
    now = time.time()
    run = get_run(store, run_id)
    summary = run_summary(store, run)
    pilot_rows, source = pilots(store, run["id"], now=now)
    return {
        **summary,
        "now": now,
        "progress": _progress(summary),
        "pilots": pilot_rows,
        "pilot_source": source,
        "failures": activity.failure_groups(store, run["id"], tail_lines=tail_lines),
    }


def run_plots(store: Store, run_id: str) -> dict[str, Any]:
    """The plots of the HTML report, as plotly figure JSON."""
    return run_figures(store, get_run(store, run_id))
