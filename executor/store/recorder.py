"""The driver's writer: job and attempt changes, batched into one transaction per flush.

The driver queues changes as it learns them and calls :meth:`RunRecorder.flush`
before it reports them anywhere (progress bar, exit code), so what a user saw is
always in the database, and a killed driver loses at most the jobs in flight.

Every job-state write here goes through :mod:`executor.store.moves`, which refuses
moves that :mod:`executor.model.states` does not allow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from executor.errors import RunStateError, StoreError
from executor.model.states import JobState, RunState, legal_sources
from executor.store.database import Store
from executor.store.moves import apply_moves, legal, move_all
from executor.store.queries import driver_alive
from executor.worker.outcome import FIELDS as OUTCOME_FIELDS
from executor.worker.outcome import is_start

logger = logging.getLogger(__name__)

# A run-level event: no job.
_RUN_EVENT = "INSERT INTO events (run_id, time, job, state, detail) VALUES (?, ?, NULL, ?, ?)"

# The states a job may become succeeded from when a worker's outcome log says so: the
# driver that made it ready and running may have died before it committed either.
_RECOVERABLE = legal_sources(JobState.SUCCEEDED, through=(JobState.READY, JobState.RUNNING))

# An attempt's row holds every field of its outcome (executor.worker.outcome.Outcome).
_ATTEMPT_FIELDS = OUTCOME_FIELDS
# What a worker's start record adds to its attempt's row (executor.worker.outcome.StartRecord).
_START_FIELDS = ("start", "host", "block_id", "batch_job_id", "stdout", "stderr")


class RunRecorder:
    """Batched writes for one run."""

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.run_id = run_id
        # job -> (first state queued in this batch, last one, attempt count), as values
        self._jobs: dict[str, tuple[str, str, int | None]] = {}
        self._events: list[tuple[str, float, str | None, str, str | None]] = []
        self._new_attempts: list[tuple] = []
        self._started_attempts: list[dict[str, Any]] = []
        self._finished_attempts: list[dict[str, Any]] = []

    # -- queueing -------------------------------------------------------------------
    def job_state(
        self, name: str, state: JobState, *, detail: str | None = None, attempts: int | None = None
    ) -> None:
        """Queue a move of job ``name`` to ``state``, and its event.

        Raises
        ------
        StoreError
            When the move is illegal after a move of the job queued earlier in this
            batch; one from the job's stored state is refused by :meth:`flush`.
        """
        value = first = state.value
        if name in self._jobs:
            first, last, queued = self._jobs[name]
            if not legal(last, value):
                raise StoreError(
                    f"illegal move of job {name!r} in run {self.run_id}: {last} -> {value} "
                    "(see executor/model/states.py)"
                )
            if attempts is None:
                attempts = queued  # keep a count queued earlier in this batch
        self._jobs[name] = (first, value, attempts)
        self._events.append((self.run_id, time.time(), name, value, detail))

    def attempt_submitted(
        self,
        job: str,
        attempt: int,
        when: float,
        *,
        pool: str | None = None,
        memory: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> None:
        """Queue a new attempt, handed to a pilot and not started (``start`` stays empty).

        Its log paths are known now, so ``pilot logs`` finds them while it runs.
        """
        self._new_attempts.append(
            (self.run_id, job, attempt, "running", when, pool, memory, stdout, stderr)
        )

    def attempt_started(self, job: str, attempt: int, record: Mapping[str, Any]) -> None:
        """Queue the start of an attempt (a worker's start record): when, where, its logs.

        An attempt with a start time runs; one without is queued in its pilot
        (:func:`executor.store.queries.job_counts`). A start that arrives after the
        attempt's outcome changes nothing.
        """
        row = {key: record.get(key) for key in _START_FIELDS}
        row.update(run_id=self.run_id, job=job, attempt=attempt)
        self._started_attempts.append(row)

    def attempt_finished(self, job: str, attempt: int, outcome: Mapping[str, Any]) -> None:
        row = {key: outcome.get(key) for key in _ATTEMPT_FIELDS}
        row.update(run_id=self.run_id, job=job, attempt=attempt)
        self._finished_attempts.append(row)

    def discard_pending(self) -> None:
        """Forget queued changes (a driver that failed: its store records the outcome)."""
        self._jobs, self._events, self._new_attempts, self._finished_attempts = {}, [], [], []
        self._started_attempts = []

    @property
    def pending(self) -> bool:
        return bool(
            self._jobs
            or self._events
            or self._new_attempts
            or self._started_attempts
            or self._finished_attempts
        )

    # -- writing --------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything queued in one transaction.

        Raises
        ------
        StoreError
            When the database cannot be written, or a job's first queued move is illegal
            from its stored state (:func:`executor.store.moves.apply_moves`); nothing is
            written then, and the changes stay queued.
        """
        if not self.pending:
            return
        now = time.time()
        jobs = self._jobs
        events, new_attempts, finished = self._events, self._new_attempts, self._finished_attempts
        started = self._started_attempts
        assignments = ", ".join(f"{key} = :{key}" for key in _ATTEMPT_FIELDS)
        start_assignments = ", ".join(f"{key} = :{key}" for key in _START_FIELDS)

        def write(conn) -> None:
            apply_moves(conn, self.run_id, jobs, now)
            conn.executemany(
                "INSERT OR REPLACE INTO attempts "
                "(run_id, job, attempt, state, submitted, pool, memory_mb, stdout, stderr) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                new_attempts,
            )
            conn.executemany(
                f"UPDATE attempts SET {start_assignments} WHERE run_id = :run_id "
                "AND job = :job AND attempt = :attempt AND state = 'running' AND start IS NULL",
                started,
            )
            conn.executemany(
                f"UPDATE attempts SET {assignments} "
                "WHERE run_id = :run_id AND job = :job AND attempt = :attempt",
                finished,
            )
            conn.executemany(
                "INSERT INTO events (run_id, time, job, state, detail) VALUES (?, ?, ?, ?, ?)",
                events,
            )
            conn.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (now, self.run_id))

        self.store.write(write)
        self._jobs, self._events, self._new_attempts, self._finished_attempts = {}, [], [], []
        self._started_attempts = []

    # -- run-level ------------------------------------------------------------------
    def heartbeat(self) -> None:
        now = time.time()
        self.store.write(
            lambda conn: conn.execute(
                "UPDATE runs SET heartbeat = ? WHERE id = ?", (now, self.run_id)
            )
        )

    def run_state(self, state: RunState, *, message: str | None = None, ended: bool = True) -> None:
        self.flush()
        now = time.time()
        self.store.write(
            lambda conn: (
                conn.execute(
                    "UPDATE runs SET state = ?, ended = ?, message = coalesce(?, message) "
                    "WHERE id = ?",
                    (state.value, now if ended else None, message, self.run_id),
                ),
                conn.execute(_RUN_EVENT, (self.run_id, now, state.value, message)),
            )
        )


def create_run(store: Store, run: Mapping[str, Any], jobs: Iterable[tuple[str, str, str]]) -> None:
    """Insert a new run and its jobs (name, label, command), all pending, in one transaction."""
    rows = [
        (run["id"], name, position, label, JobState.PENDING.value, command)
        for position, (name, label, command) in enumerate(jobs)
    ]

    def write(conn) -> None:
        columns = ", ".join(run)
        marks = ", ".join(f":{key}" for key in run)
        conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", dict(run))
        conn.executemany(
            "INSERT INTO jobs (run_id, name, position, label, state, command) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(_RUN_EVENT, (run["id"], run["created"], RunState.RUNNING.value, "submitted"))

    store.write(write)


def claim_for_restart(
    store: Store,
    run_id: str,
    driver: Mapping[str, Any],
    still_out: Collection[tuple[str, int]] = (),
) -> list[str]:
    """Take over a run for a new driver and reset every unfinished job to pending.

    Returns the names of the jobs that will run again: every job that may move to
    pending (:func:`executor.store.moves.move_all`), and those pending already.
    Succeeded jobs may not, so they keep their state and are never rerun.

    Attempts the dead driver left running become ``pilot_lost``, except those in
    ``still_out`` (``(job, attempt)``): the site says they may still be running, and
    the new driver reattaches to them (or loses them with :func:`lose_running_attempts`).
    """
    now = time.time()

    def write(conn) -> list[str]:
        # Checked under the write lock, so two restarts at once cannot both take over.
        cursor = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        columns = [c[0] for c in cursor.description]
        row = dict(zip(columns, cursor.fetchone(), strict=True))
        if row["state"] == RunState.RUNNING.value and driver_alive(row):
            raise RunStateError(
                f"run {run_id} is still running: its driver (pid {row['pid']} on {row['host']}) "
                "is alive; wait for it to end or cancel it first"
            )
        move_all(conn, run_id, JobState.PENDING, now)
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM jobs WHERE run_id = ? AND state = ?",
                (run_id, JobState.PENDING.value),
            )
        ]
        _lose_running(conn, run_id, now, _DRIVER_STOPPED, keep=still_out)
        conn.execute(
            "UPDATE runs SET state = ?, host = ?, pid = ?, pid_started = ?, heartbeat = ?, "
            "started = ?, ended = NULL, restarts = restarts + 1, message = NULL WHERE id = ?",
            (
                RunState.RUNNING.value,
                driver["host"],
                driver["pid"],
                driver["pid_started"],
                now,
                now,
                run_id,
            ),
        )
        conn.execute(
            _RUN_EVENT,
            (run_id, now, RunState.RUNNING.value, f"restarted; {len(names)} job(s) to run"),
        )
        return names

    return store.write(write)


_DRIVER_STOPPED = "the driver stopped before this attempt reported back"


def lose_running_attempts(
    store: Store, run_id: str, message: str, keep: Collection[tuple[str, int]] = ()
) -> int:
    """Mark the run's running attempts ``pilot_lost``, except ``keep``; how many were."""
    return store.write(lambda conn: _lose_running(conn, run_id, time.time(), message, keep))


def _lose_running(
    conn: Any, run_id: str, now: float, message: str, keep: Collection[tuple[str, int]]
) -> int:
    if not keep:
        return conn.execute(
            "UPDATE attempts SET state = 'failed', failure_class = 'pilot_lost', "
            "message = ?, end = ? WHERE run_id = ? AND state = 'running'",
            (message, now, run_id),
        ).rowcount
    kept = set(keep)
    lost = [
        (job, attempt)
        for job, attempt in conn.execute(
            "SELECT job, attempt FROM attempts WHERE run_id = ? AND state = 'running'", (run_id,)
        )
        if (job, attempt) not in kept
    ]
    conn.executemany(
        "UPDATE attempts SET state = 'failed', failure_class = 'pilot_lost', message = ?, "
        "end = ? WHERE run_id = ? AND job = ? AND attempt = ?",
        [(message, now, run_id, job, attempt) for job, attempt in lost],
    )
    return len(lost)


def recover_outcomes(store: Store, run_id: str, records: Iterable[Mapping[str, Any]]) -> int:
    """Record the attempts a dead driver never heard of, from the workers' outcome log.

    A worker writes each job's outcome to the run directory as the job ends
    (:mod:`executor.worker.outcome_log`); a driver killed before it read them, or before it
    committed the attempt at all, loses nothing: a succeeded job becomes succeeded
    here and is never run again. Only attempts the store does not know as finished
    are touched. Returns how many jobs this marked succeeded.

    A job becomes succeeded from running, or from ready or pending when the driver died
    before it committed those moves (:data:`_RECOVERABLE`). A success recorded for a
    job in any other state is refused, attempt and all, with a warning: the job keeps
    its state, and a restart runs it again.
    """
    records = list(records)
    if not records:
        return 0
    assignments = ", ".join(f"{key} = :{key}" for key in _ATTEMPT_FIELDS)
    now = time.time()

    def write(conn) -> int:
        known = {
            name: state
            for name, state in conn.execute(
                "SELECT name, state FROM jobs WHERE run_id = ?", (run_id,)
            )
        }
        succeeded = 0
        for record in records:
            job, attempt = record["job"], record["attempt"]
            if job not in known or is_start(record):  # a start says nothing of the outcome
                continue
            success = record.get("state") == JobState.SUCCEEDED.value
            if success and known[job] not in (*_RECOVERABLE, JobState.SUCCEEDED.value):
                logger.warning(
                    "refused the success of job %r attempt %s in run %s from the outcome "
                    "log: the job is %s, and %s -> succeeded is not a legal move; a restart "
                    "runs it again", job, attempt, run_id, known[job], known[job],
                )  # fmt: skip
                continue
            row = {key: record.get(key) for key in _ATTEMPT_FIELDS}
            row.update(run_id=run_id, job=job, attempt=attempt)
            # The driver may have died before committing the attempt it had submitted.
            conn.execute(
                "INSERT OR IGNORE INTO attempts (run_id, job, attempt, state, submitted) "
                "VALUES (?, ?, ?, 'running', ?)",
                (run_id, job, attempt, record.get("start") or now),
            )
            changed = conn.execute(
                f"UPDATE attempts SET {assignments} WHERE run_id = :run_id AND job = :job "
                "AND attempt = :attempt AND state = 'running'",
                row,
            ).rowcount
            if not changed or not success:
                continue
            if known[job] == JobState.SUCCEEDED.value:
                continue
            conn.execute(
                "UPDATE jobs SET state = ?, attempts = max(attempts, ?), updated = ? "
                "WHERE run_id = ? AND name = ?",
                (JobState.SUCCEEDED.value, attempt, now, run_id, job),
            )
            conn.execute(
                "INSERT INTO events (run_id, time, job, state, detail) VALUES (?, ?, ?, ?, ?)",
                (run_id, now, job, JobState.SUCCEEDED.value, "recovered from the outcome log"),
            )
            known[job] = JobState.SUCCEEDED.value
            succeeded += 1
        return succeeded

    return store.write(write)


def abandon_unfinished(store: Store, run_id: str, state: RunState, message: str) -> None:
    """End a run that no driver drives any more (cancelled, or failed on a driver error).

    Its unfinished jobs become cancelled (a restart runs them) and attempts that never
    reported back are closed, so nothing stays "running" without a driver.
    """
    now = time.time()

    def write(conn) -> None:
        move_all(conn, run_id, JobState.CANCELLED, now)  # the pending, ready and running
        conn.execute(
            "UPDATE attempts SET state = 'failed', failure_class = 'cancelled', message = ?, "
            "end = coalesce(end, ?) WHERE run_id = ? AND state = 'running'",
            (f"{message}; this attempt never reported back", now, run_id),
        )
        conn.execute(
            "UPDATE runs SET state = ?, ended = ?, message = ? WHERE id = ?",
            (state.value, now, message, run_id),
        )
        conn.execute(_RUN_EVENT, (run_id, now, state.value, message))

    store.write(write)
