"""Cancel a run from anywhere: ask its live driver, or clean up after a dead one."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from executor.errors import RunStateError
from executor.model.states import RunState
from executor.runs.resume import recover_finished_jobs
from executor.store import Store
from executor.store.queries import driver_alive, get_run
from executor.store.recorder import (
    abandon_unfinished,
)


def cancel(store: Store, run_id: str, *, wait: float = 30.0) -> str:
    """Cancel a run started anywhere; return its state afterwards.

    A live driver is asked to stop (SIGTERM on this host, and the run's cancel marker,
    which a driver on another host reads) and given ``wait`` seconds to record the
    cancel. For a run whose driver is gone, what it left running is stopped, the jobs
    its workers finished are recorded, and the rest is marked cancelled.

    Raises :class:`RunStateError` when the run's driver can be reached neither way
    (another user's run in a shared database).
    """
    from executor.store.queries import effective_state

    run = get_run(store, run_id)
    if run["state"] != RunState.RUNNING.value:
        return run["state"]
    queued = bool(run.get("driver_job")) and not run.get("pid")
    if queued:  # its driver job has not started: take it out of the queue
        from executor.runs.detach import cancel_driver_job

        cancel_driver_job(store, run)
    elif driver_alive(run):
        _ask_driver_to_stop(run)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            state = effective_state(get_run(store, run["id"]))
            if state != RunState.RUNNING.value:
                return state
            time.sleep(0.2)
        return RunState.RUNNING.value
    from executor.runs.detach import clean_up_after_dead_driver

    clean_up_after_dead_driver(store, run)
    recover_finished_jobs(store, run)
    abandon_unfinished(store, run["id"], RunState.CANCELLED, "cancelled after its driver was lost")
    return RunState.CANCELLED.value


def _ask_driver_to_stop(run: dict[str, Any]) -> None:
    """Write the run's cancel marker and, on the driver's host, send it SIGTERM."""
    import signal

    reached = []
    try:
        (Path(run["run_dir"]) / "cancel").touch()
        reached.append("marker")
    except OSError:  # another user's run directory, or not mounted here
        pass
    if run["host"] == socket.gethostname():
        try:
            os.kill(run["pid"], signal.SIGTERM)
            reached.append("signal")
        except ProcessLookupError:
            reached.append("signal")  # it just ended: the wait sees how
        except PermissionError:
            pass
    if not reached:
        raise RunStateError(
            f"cannot cancel run {run['id']}: its driver (pid {run['pid']} on {run['host']}) "
            f"belongs to {run['owner']!r}, and you may neither signal it nor write its run "
            f"directory {run['run_dir']}; ask {run['owner']} to run `pilot cancel {run['id']}`"
        )
