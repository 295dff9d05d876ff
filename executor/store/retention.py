"""``pilot gc``: remove old runs from a database and their run directories.

A run is old when it ended (or its driver was lost) before the cutoff; a run whose
driver is alive is never removed, however old. Rows go in one transaction per run,
from every table with a ``run_id`` column (so tables added by later migrations, such
as pilots, are cleaned too).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.model.states import RunState
from executor.store.database import Store
from executor.store.queries import effective_state


@dataclass(frozen=True)
class Removal:
    """One run that ``gc`` removed (or, in a dry run, would remove)."""

    run_id: str
    owner: str
    state: str
    last_activity: float
    run_dir: str
    dir_removed: bool
    problem: str | None = None


def old_runs(
    store: Store, older_than: float, *, owner: str | None = None, now: float | None = None
) -> list[dict[str, Any]]:
    """Runs whose last activity is more than ``older_than`` seconds before ``now``."""
    now = time.time() if now is None else now
    cutoff = now - older_than
    sql = "SELECT * FROM runs WHERE created < ?"
    params: list[Any] = [cutoff]
    if owner is not None:
        sql += " AND owner = ?"
        params.append(owner)
    found = []
    for run in store.query(sql + " ORDER BY created", params):
        if effective_state(run) == RunState.RUNNING.value:
            continue
        last = run["ended"] or run["heartbeat"] or run["created"]
        if last < cutoff:
            found.append({**run, "last_activity": last})
    return found


def _run_tables(conn) -> list[str]:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'runs'"
        )
    ]
    return [
        t for t in tables if any(c[1] == "run_id" for c in conn.execute(f"PRAGMA table_info({t})"))
    ]


def _remove_dir(run: dict[str, Any]) -> tuple[bool, str | None]:
    run_dir = Path(run["run_dir"])
    if not run_dir.exists():
        return False, None
    # Only what is plainly a pilot run directory: named after the run, with its workflow.
    if run_dir.name != run["id"] or not (run_dir / "workflow.json").exists():
        return False, f"left {run_dir} alone: it does not look like the run's directory"
    try:
        shutil.rmtree(run_dir)
    except OSError as exc:
        return False, f"could not remove {run_dir}: {exc.strerror or exc}"
    return True, None


def collect(
    store: Store,
    older_than: float,
    *,
    owner: str | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> list[Removal]:
    """Remove (or, with ``dry_run``, list) the runs :func:`old_runs` finds."""
    removals = []
    for run in old_runs(store, older_than, owner=owner, now=now):
        dir_removed, problem = False, None
        if not dry_run:

            def delete(conn, run_id: str = run["id"]) -> None:
                for table in _run_tables(conn):
                    conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

            store.write(delete)
            dir_removed, problem = _remove_dir(run)
        removals.append(
            Removal(
                run_id=run["id"],
                owner=run["owner"],
                state=effective_state(run),
                last_activity=run["last_activity"],
                run_dir=run["run_dir"],
                dir_removed=dir_removed,
                problem=problem,
            )
        )
    return removals
