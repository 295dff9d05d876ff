"""A run's jobs one by one: what ``pilot jobs`` lists, ``pilot report --tsv`` exports,
and the failures ``pilot submit`` and ``pilot attach`` print as they happen.

Each question is one query over one run (primary keys, or the ``events_run`` index);
ordering names for people and shaping the rows is :mod:`executor.report.jobs`'s business.
"""

from __future__ import annotations

import re
from typing import Any

from executor.model.states import JobState
from executor.store.database import Store

# The detail the driver records with a job it blocks (executor/driver/loop.py).
_ANCESTOR = re.compile(r"^ancestor (?P<name>.+) failed$", re.DOTALL)


def job_rows(
    store: Store,
    run_id: str,
    *,
    now: float,
    states: tuple[str, ...] = (),
    label: str | None = None,
) -> list[dict[str, Any]]:
    """Each job of the run (only those in ``states`` and of ``label``, when given), in no
    particular order, with the facts of its last attempt.

    Each row has ``job``, ``label``, ``state``, ``attempts`` and, from the last attempt
    (``None`` for a job that never ran), ``exit_code``, ``signal``, ``failure_class``,
    ``error_type``, ``message``, ``runtime`` (seconds; so far, for one still running),
    ``peak_rss_mb``, ``host``, ``stdout`` and ``stderr``.
    """
    where, params = "j.run_id = ?", [now, run_id]
    if states:
        where += f" AND j.state IN ({', '.join('?' for _ in states)})"
        params.extend(states)
    if label is not None:
        where += " AND j.label = ?"
        params.append(label)
    return store.query(
        "SELECT j.name AS job, j.label, j.state, j.attempts, a.exit_code, a.signal, "
        "a.failure_class, a.error_type, a.message, coalesce(a.end, ?) - a.start AS runtime, "
        "a.peak_rss_mb, a.host, a.stdout, a.stderr FROM jobs j LEFT JOIN attempts a "
        "ON a.run_id = j.run_id AND a.job = j.name AND a.attempt = j.attempts "
        f"WHERE {where}",
        params,
    )


def blocked_by(store: Store, run_id: str) -> dict[str, str]:
    """Each blocked job of the run and the failed ancestor that blocked it.

    Read from the events the driver recorded (``ancestor X failed``); the latest event
    of a job counts, so a restart that blocked it again names the ancestor of then.
    """
    rows = store.query(
        "SELECT e.job, e.detail FROM events e JOIN jobs j ON j.run_id = e.run_id "
        "AND j.name = e.job WHERE e.run_id = ? AND e.state = ? AND j.state = ? ORDER BY e.id",
        [run_id, JobState.BLOCKED.value, JobState.BLOCKED.value],
    )
    found: dict[str, str] = {}
    for row in rows:
        match = _ANCESTOR.match(row["detail"] or "")
        if match:
            found[row["job"]] = match["name"]
    return found


def attempt_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every attempt of the run, in no particular order, with its job's ``label``.

    Each row has ``job``, ``attempt``, ``label``, ``state``, ``failure_class``,
    ``error_type``, ``exit_code``, ``signal``, ``submitted``, ``start``, ``end``, ``runtime``,
    ``peak_rss_mb``, ``cpu_seconds``, ``memory_mb``, ``pool``, ``host``, ``block_id``,
    ``batch_job_id``, ``stdout`` and ``stderr``.
    """
    return store.query(
        "SELECT a.job, a.attempt, j.label, a.state, a.failure_class, a.error_type, a.exit_code, "
        "a.signal, a.submitted, a.start, a.end, a.end - a.start AS runtime, a.peak_rss_mb, "
        "a.cpu_seconds, a.memory_mb, a.pool, a.host, a.block_id, a.batch_job_id, a.stdout, "
        "a.stderr FROM attempts a JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ?",
        [run_id],
    )


def last_event(store: Store, run_id: str) -> int:
    """The id of the run's latest event (0: none yet)."""
    rows = store.query("SELECT coalesce(max(id), 0) AS id FROM events WHERE run_id = ?", [run_id])
    return rows[0]["id"]


def failures_after(store: Store, run_id: str, after: int) -> tuple[list[dict[str, Any]], int]:
    """The jobs that failed for good in events after ``after``, in the order they failed,
    and the id to ask after next time.

    Each row has ``job``, ``label``, ``attempts`` and its last attempt's
    ``failure_class``, ``error_type``, ``exit_code``, ``signal``, ``message``, ``stdout``
    and ``stderr``. A job that failed and was then restarted is left out.
    """
    upto = last_event(store, run_id)
    rows = store.query(
        "SELECT e.job, j.label, j.attempts, a.failure_class, a.error_type, a.exit_code, "
        "a.signal, a.message, a.stdout, a.stderr FROM events e "
        "JOIN jobs j ON j.run_id = e.run_id AND j.name = e.job "
        "LEFT JOIN attempts a ON a.run_id = e.run_id AND a.job = e.job AND a.attempt = j.attempts "
        "WHERE e.run_id = ? AND e.id > ? AND e.id <= ? AND e.state = ? AND j.state = ? "
        "ORDER BY e.id",
        [run_id, after, upto, JobState.FAILED.value, JobState.FAILED.value],
    )
    return rows, max(after, upto)
