"""Which process drives a run: the run row's driver fields, as drivers start and move.

A run names its driver by host, pid and the pid's start time (so a reused pid is not
mistaken for it), or, while a driver submitted as a batch job (``--driver-on``) waits
in the queue, by that job's id alone (:func:`executor.store.queries.driver_alive`).
Each function is one transaction, and each refreshes the heartbeat, so the run never
looks ``driver_lost`` while its driver changes.
"""

from __future__ import annotations

import time

from executor.model.states import RunState
from executor.store.database import Store


def name_driver(store: Store, run_id: str, *, host: str, pid: int, pid_started: float) -> None:
    """Record the process ``pid`` on ``host``, started at ``pid_started``, as the run's driver."""
    now = time.time()
    store.write(
        lambda conn: conn.execute(
            "UPDATE runs SET host = ?, pid = ?, pid_started = ?, heartbeat = ? WHERE id = ?",
            (host, pid, pid_started, now, run_id),
        )
    )


def queue_driver_job(store: Store, run_id: str, job_id: str, message: str) -> None:
    """Record that the run's driver waits in batch job ``job_id``: no process drives it yet.

    ``message`` becomes the run's message, for ``pilot status`` to show meanwhile.
    """
    now = time.time()
    store.write(
        lambda conn: conn.execute(
            "UPDATE runs SET pid = NULL, pid_started = NULL, driver_job = ?, heartbeat = ?, "
            "message = ? WHERE id = ?",
            (job_id, now, message, run_id),
        )
    )


def adopt_driver(
    store: Store,
    run_id: str,
    *,
    host: str,
    pid: int,
    pid_started: float,
    job_id: str | None,
) -> None:
    """In a driver job that started: name its process the driver, if the run still runs.

    ``job_id`` is the batch job's id as the job sees it (None keeps the recorded one). A
    run that ended meanwhile (cancelled while its driver waited in the queue) is left
    as it is, and names no driver.
    """
    now = time.time()
    store.write(
        lambda conn: conn.execute(
            "UPDATE runs SET host = ?, pid = ?, pid_started = ?, heartbeat = ?, "
            "driver_job = coalesce(?, driver_job) WHERE id = ? AND state = ?",
            (host, pid, pid_started, now, job_id, run_id, RunState.RUNNING.value),
        )
    )
