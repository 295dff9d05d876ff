"""Following a run from another terminal: ``pilot attach``, ``pilot status --watch`` and
``pilot logs -f``.

Both read only the store (never the driver), so they work on any run in the
database, detached or not, and leave it running when interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from rich.console import Console
from rich.live import Live

from executor.model.states import RunState
from executor.store import Store
from executor.store.queries import (
    attempts_of,
    effective_state,
    get_run,
    label_counts,
    run_summary,
)

POLL_SECONDS = 0.5


def attach(store: Store, run_id: str, update: Callable[[dict[str, dict[str, int]]], None]) -> str:
    """Feed ``update`` with per-label counts until the run is no longer running.

    Returns the run's final state as users see it (``driver_lost`` included).
    """
    while True:
        with store.snapshot():
            counts = label_counts(store, run_id)
            state = effective_state(get_run(store, run_id))
        update(counts)
        if state != RunState.RUNNING.value:
            return state
        time.sleep(POLL_SECONDS)


def watch(
    store: Store, run_id: str, render: Callable[[dict[str, Any]], Any], console: Console
) -> str:
    """Redraw the run's status in place until it is no longer running; return its state."""
    with Live(console=console, auto_refresh=False) as live:
        while True:
            with store.snapshot():
                summary = run_summary(store, get_run(store, run_id))
            live.update(render(summary), refresh=True)
            if summary["state"] != RunState.RUNNING.value:
                return summary["state"]
            time.sleep(POLL_SECONDS * 2)


def exit_code_for(state: str) -> int:
    """The exit code `pilot submit` would have given for a run that ended in ``state``."""
    return {"succeeded": 0, "cancelled": 130}.get(state, 1)


def attempt_running(store: Store, run_id: str, job: str, attempt: int) -> bool:
    """Whether the attempt may still write to its logs: not final, and its run driven."""
    with store.snapshot():
        rows = [a for a in attempts_of(store, run_id, job) if a["attempt"] == attempt]
        driven = effective_state(get_run(store, run_id)) == RunState.RUNNING.value
    return driven and bool(rows) and rows[0]["state"] == "running"


def follow_file(
    path: Path, still_running: Callable[[], bool], out: BinaryIO, poll: float = POLL_SECONDS
) -> None:
    """Copy ``path`` to ``out`` as it grows (it may not exist yet) until ``still_running()``
    says no; what the file holds by then is copied too."""
    offset = 0
    while True:
        running = still_running()  # asked first: what was written before the end is shown
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:  # queued: the worker creates it as the job starts
            data = b""
        if data:
            out.write(data)
            out.flush()
            offset += len(data)
        if not running:
            return
        time.sleep(poll)
