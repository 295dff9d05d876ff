"""Read-only questions about runs, answered from the monitoring database.

The shapes returned by :func:`run_summary` are the ``pilot status --json`` contract
(DESIGN.md): add fields freely, never rename them.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import psutil

from executor.errors import RunNotFound
from executor.model.states import SHOWN_STATES, JobState, RunState
from executor.store.database import Store

# A driver writes a heartbeat at least this often while it runs.
HEARTBEAT_INTERVAL = 10.0
# A running run whose heartbeat is older than this has lost its driver.
HEARTBEAT_TIMEOUT = 60.0


def driver_alive(run: dict[str, Any], now: float | None = None) -> bool:
    """Whether the driver recorded for ``run`` is still alive.

    On the driver's own host the process is checked directly (pid and start time, so a
    reused pid is not mistaken for the driver); elsewhere the heartbeat decides. A
    driver submitted as a batch job (``--driver-on``) that has not started yet is
    waiting in the queue, not lost.
    """
    now = time.time() if now is None else now
    if run.get("driver_job") and not run.get("pid"):
        return True
    if run.get("host") == socket.gethostname() and run.get("pid"):
        try:
            process = psutil.Process(run["pid"])
            started = process.create_time()
        except psutil.Error:
            return False
        recorded = run.get("pid_started")
        return recorded is None or abs(started - recorded) < 1.0
    heartbeat = run.get("heartbeat") or run.get("created") or 0
    return now - heartbeat < HEARTBEAT_TIMEOUT


def effective_state(run: dict[str, Any]) -> str:
    """The run's state as users should see it: ``driver_lost`` when its driver died."""
    if run["state"] == RunState.RUNNING.value and not driver_alive(run):
        return RunState.DRIVER_LOST.value
    return run["state"]


def get_run(store: Store, run_id: str) -> dict[str, Any]:
    """The run with this id, or the only run whose id starts with it.

    A prefix that several runs share is an error that lists them: ``cancel`` and
    ``restart`` must never act on a run the user did not mean.
    """
    rows = store.query("SELECT * FROM runs WHERE id = ?", [run_id])
    if rows:
        return rows[0]
    # Escaped for LIKE, so '_' and '%' in what the user typed match only themselves.
    pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    matches = store.query(
        "SELECT id, name, state FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY created DESC "
        "LIMIT 11",
        [pattern],
    )
    if len(matches) == 1:
        return get_run(store, matches[0]["id"])
    if matches:
        listed = "\n".join(f"  {m['id']}  {m['name']}  {m['state']}" for m in matches[:10])
        more = "\n  ..." if len(matches) > 10 else ""
        raise RunNotFound(
            f"{run_id!r} is the start of several run ids; give more of it:\n{listed}{more}"
        )
    raise RunNotFound(
        f"no run {run_id!r} in {store.path}; `pilot status` lists the runs there "
        "(use --db or PILOT_DB for another database)"
    )


def runs_query(
    *, owner: str | None = None, since: float | None = None, limit: int = 50
) -> tuple[str, list[Any]]:
    """The SQL (and its parameters) that lists runs, newest first.

    Served by the ``runs_owner_created`` index with an owner, ``runs_created`` without;
    tests assert on its query plan.
    """
    where: list[str] = []
    params: list[Any] = []
    if owner is not None:
        where.append("owner = ?")
        params.append(owner)
    if since is not None:
        where.append("created >= ?")
        params.append(since)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT * FROM runs{clause} ORDER BY created DESC LIMIT ?", [*params, limit]


def list_runs(
    store: Store, limit: int = 50, *, owner: str | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """Runs newest first; only ``owner``'s and only those created at or after ``since``."""
    sql, params = runs_query(owner=owner, since=since, limit=limit)
    return store.query(sql, params)


# Both read only an index (jobs_run_state, jobs_run_label_state_position): a status
# line for a million-job run never reads the jobs table itself.
JOB_COUNTS_SQL = "SELECT state, count(*) AS n FROM jobs WHERE run_id = ? GROUP BY state"
LABEL_COUNTS_SQL = (
    "SELECT label, state, count(*) AS n FROM jobs WHERE run_id = ? "
    "GROUP BY label, state ORDER BY min(min(position)) OVER (PARTITION BY label)"
)


# Running jobs whose current attempt has not started on a worker: shown queued. Reads
# only the running jobs (jobs_run_state) and their attempts by primary key.
QUEUED_SQL = (
    "SELECT j.label, count(*) AS n FROM jobs j LEFT JOIN attempts a "
    "ON a.run_id = j.run_id AND a.job = j.name AND a.attempt = j.attempts "
    "WHERE j.run_id = ? AND j.state = 'running' AND a.start IS NULL GROUP BY j.label"
)


def _split_queued(counts: dict[str, int], queued: int) -> None:
    counts["running"] -= queued
    counts["queued"] = queued


def job_counts(store: Store, run_id: str) -> dict[str, int]:
    """Jobs per state, with ``running`` split (:data:`~executor.model.states.SHOWN_STATES`):
    ``queued`` (handed to a pilot, the current attempt not started) and ``running``
    (started); the values still sum to the run's jobs."""
    counts = dict.fromkeys(SHOWN_STATES, 0)
    for row in store.query(JOB_COUNTS_SQL, [run_id]):
        counts[row["state"]] = row["n"]
    if counts["running"]:
        _split_queued(counts, sum(r["n"] for r in store.query(QUEUED_SQL, [run_id])))
    return counts


def label_counts(store: Store, run_id: str) -> dict[str, dict[str, int]]:
    """Jobs per label and state, ``running`` split as in :func:`job_counts`."""
    labels: dict[str, dict[str, int]] = {}
    # Labels in the order their first job was written, as the workflow reads.
    for row in store.query(LABEL_COUNTS_SQL, [run_id]):
        labels.setdefault(row["label"], dict.fromkeys(SHOWN_STATES, 0))[row["state"]] = row["n"]
    if any(counts["running"] for counts in labels.values()):
        for row in store.query(QUEUED_SQL, [run_id]):
            _split_queued(labels[row["label"]], row["n"])
    return labels


def run_summary(store: Store, run: dict[str, Any]) -> dict[str, Any]:
    """One run as the ``pilot status RUN --json`` contract describes it."""
    jobs = job_counts(store, run["id"])
    return {
        "run": run["id"],
        "state": effective_state(run),
        "name": run["name"],
        "site": run["site"],
        "owner": run["owner"],
        "host": run["host"],
        "created": run["created"],
        "ended": run["ended"],
        "heartbeat": run["heartbeat"],
        "total": run["n_jobs"],
        "jobs": jobs,
        "labels": label_counts(store, run["id"]),
        "run_dir": run["run_dir"],
        "workdir": run["workdir"],
        "message": run["message"],
        "pilots": pilots_of(store, run["id"]),
    }


def pilots_of(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's pilots (Parsl blocks), oldest first, each with the attempts it ran."""
    return store.query(
        "SELECT p.pool, p.block_id, p.job_id, p.state, p.submitted, p.start, p.end, p.node, "
        "p.cores, p.message, (SELECT count(*) FROM attempts a WHERE a.run_id = p.run_id "
        "AND a.pool = p.pool AND a.block_id = p.block_id) AS attempts "
        "FROM pilots p WHERE p.run_id = ? ORDER BY p.submitted, p.pool, p.block_id",
        [run_id],
    )


def failed_jobs(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Jobs that failed for good, each with its last attempt."""
    return store.query(
        "SELECT j.name, j.label, j.command, j.attempts, a.attempt, a.exit_code, a.signal, "
        "a.failure_class, a.error_type, a.message, a.stderr, a.stdout, a.host, a.start, a.end, "
        "a.memory_mb FROM jobs j LEFT JOIN attempts a "
        "ON a.run_id = j.run_id AND a.job = j.name AND a.attempt = j.attempts "
        "WHERE j.run_id = ? AND j.state = 'failed' ORDER BY j.label, j.name",
        [run_id],
    )


def attempts_of(store: Store, run_id: str, job: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT * FROM attempts WHERE run_id = ? AND job = ? ORDER BY attempt", [run_id, job]
    )


def job_row(store: Store, run_id: str, job: str) -> dict[str, Any] | None:
    rows = store.query("SELECT * FROM jobs WHERE run_id = ? AND name = ?", [run_id, job])
    return rows[0] if rows else None


def job_states(store: Store, run_id: str) -> dict[str, str]:
    return {
        row["name"]: row["state"]
        for row in store.query("SELECT name, state FROM jobs WHERE run_id = ?", [run_id])
    }


def job_names(store: Store, run_id: str) -> list[str]:
    """The names of a run's jobs, in no particular order."""
    return [row["name"] for row in store.query("SELECT name FROM jobs WHERE run_id = ?", [run_id])]


def unfinished_jobs(store: Store, run_id: str) -> dict[str, int]:
    """Each job of the run that has not succeeded, with its number of attempts so far."""
    rows = store.query(
        "SELECT name, attempts FROM jobs WHERE run_id = ? AND state != ?",
        [run_id, JobState.SUCCEEDED.value],
    )
    return {row["name"]: row["attempts"] for row in rows}


def running_attempts(store: Store, run_id: str) -> set[tuple[str, int]]:
    """The run's attempts recorded as running, as ``(job, attempt)``."""
    rows = store.query(
        "SELECT job, attempt FROM attempts WHERE run_id = ? AND state = 'running'", [run_id]
    )
    return {(row["job"], row["attempt"]) for row in rows}


def succeeded_per_label(store: Store, run_id: str) -> dict[str, int]:
    """How many jobs of each label of the run succeeded (labels with none are left out)."""
    rows = store.query(
        "SELECT label, count(*) AS n FROM jobs WHERE run_id = ? AND state = ? GROUP BY label",
        [run_id, JobState.SUCCEEDED.value],
    )
    return {row["label"]: row["n"] for row in rows}


def job_results(store: Store, run_id: str) -> dict[str, str]:
    """The return value (JSON text) of each succeeded job of the run that stored one.

    Function jobs store theirs; shell jobs have none. The last succeeded attempt wins.
    """
    rows = store.query(
        "SELECT a.job, a.result FROM attempts a "
        "JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ? AND j.state = ? AND a.state = ? AND a.result IS NOT NULL "
        "ORDER BY a.attempt",
        [run_id, JobState.SUCCEEDED.value, JobState.SUCCEEDED.value],
    )
    return {row["job"]: row["result"] for row in rows}
