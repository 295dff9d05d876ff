"""The monitoring database on a real SQLite file: schema, writes, queries, concurrency."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import started_together, wait_for
from seed import record_reaching

from executor.errors import RunStateError, StoreError
from executor.model.states import JOB_STATES, SHOWN_STATES, JobState, RunState
from executor.store import Store, database
from executor.store.queries import (
    HEARTBEAT_TIMEOUT,
    driver_alive,
    effective_state,
    get_run,
    job_states,
    run_summary,
)
from executor.store.recorder import (
    RunRecorder,
    claim_for_restart,
    create_run,
    lose_running_attempts,
)
from executor.store.schema import MIGRATIONS, apply_migrations

SEVEN_STATES = ["pending", "ready", "running", "succeeded", "failed", "blocked", "cancelled"]


# -- helpers ---------------------------------------------------------------------------


def _this_process() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
    }


@pytest.fixture(scope="module")
def dead_driver() -> dict[str, Any]:
    """The identity of a process on this host that has exited (and been reaped)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        started = psutil.Process(child.pid).create_time()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    # Even if the pid is reused meanwhile, its start time differs from the one recorded.
    return {"host": socket.gethostname(), "pid": child.pid, "pid_started": started}


def _run_row(run_id: str, tmp_path: Path, n_jobs: int, **overrides: Any) -> dict[str, Any]:
    """A runs row as :func:`executor.runs.start.start_run` builds it."""
    now = time.time()
    run_dir = tmp_path / "runs" / run_id
    row = {
        "id": run_id,
        "name": "demo",
        "owner": getpass.getuser(),
        "site": "local",
        "state": RunState.RUNNING.value,
        "n_jobs": n_jobs,
        "workflow_source": None,
        "workflow_copy": str(run_dir / "workflow.json"),
        "workflow_hash": "0" * 64,
        "run_dir": str(run_dir),
        "workdir": str(tmp_path),
        "created": now,
        "started": now,
        "heartbeat": now,
        "pilot_version": "0.0.test",
        **_this_process(),
    }
    row.update(overrides)
    return row


def _new_run(
    store: Store,
    tmp_path: Path,
    jobs: list[tuple[str, str]],
    run_id: str = "run-1",
    **overrides: Any,
) -> dict[str, Any]:
    row = _run_row(run_id, tmp_path, len(jobs), **overrides)
    create_run(store, row, [(name, label, f"echo {name}") for name, label in jobs])
    return row


def _set_states(store: Store, run_id: str, states: dict[str, JobState]) -> None:
    recorder = RunRecorder(store, run_id)
    for name, state in states.items():
        record_reaching(recorder, name, state)
    recorder.flush()


def _count(store: Store, sql: str, params: Any = ()) -> int:
    return store.query(sql, params)[0]["n"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "monitoring.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


# -- opening ---------------------------------------------------------------------------


def test_migrations_set_user_version(store: Store) -> None:
    version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS) >= 1
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "jobs", "attempts", "events"} <= tables


def test_migrations_apply_once(store: Store, db_path: Path) -> None:
    statements: list[str] = []
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    try:
        conn.set_trace_callback(statements.append)
        assert apply_migrations(conn) == len(MIGRATIONS)
    finally:
        conn.close()
    assert not any("CREATE" in s.upper() for s in statements), statements


def test_reopening_keeps_the_data(db_path: Path, tmp_path: Path) -> None:
    with Store(db_path) as first:
        _new_run(first, tmp_path, [("a", "a")])
    with Store(db_path) as second:
        assert second.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert [r["id"] for r in second.query("SELECT id FROM runs")] == ["run-1"]


def test_two_stores_on_one_file_at_once(db_path: Path, tmp_path: Path) -> None:
    with Store(db_path) as first, Store(db_path) as second:
        _new_run(first, tmp_path, [("a", "a")])
        assert get_run(second, "run-1")["name"] == "demo"
        _set_states(second, "run-1", {"a": JobState.READY})
        assert job_states(first, "run-1") == {"a": "ready"}


def test_journal_mode_is_wal(store: Store, db_path: Path) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # WAL is a property of the file, so every other reader sees it too.
    conn = sqlite3.connect(str(db_path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_new_database_file_is_not_world_accessible(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "nested" / "monitoring.db"
    old_umask = os.umask(0o022)
    try:
        with Store(path):
            pass
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_existing_file_mode_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.db"
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    with Store(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- writing ---------------------------------------------------------------------------


def test_create_run_writes_the_run_its_jobs_and_an_event(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("b-1", "b"), ("a-1", "a"), ("b-2", "b")])
    run = get_run(store, "run-1")
    assert run["state"] == "running" and run["n_jobs"] == 3 and run["restarts"] == 0
    jobs = store.query("SELECT name, position, label, state, attempts, command FROM jobs")
    assert sorted(jobs, key=lambda r: r["position"]) == [
        {"name": n, "position": i, "label": n[0], "state": "pending", "attempts": 0,
         "command": f"echo {n}"}
        for i, n in enumerate(["b-1", "a-1", "b-2"])
    ]  # fmt: skip
    events = store.query("SELECT job, state, detail FROM events")
    assert events == [{"job": None, "state": "running", "detail": "submitted"}]


def test_recorder_writes_jobs_attempts_and_events(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("a", "a"), ("b", "b")], heartbeat=1.0)
    recorder = RunRecorder(store, "run-1")
    submitted = time.time()
    recorder.job_state("a", JobState.READY)
    recorder.job_state("a", JobState.RUNNING, attempts=1)
    recorder.attempt_submitted("a", 1, submitted)
    # Queued but not flushed: nothing is in the database yet.
    assert recorder.pending
    assert job_states(store, "run-1") == {"a": "pending", "b": "pending"}
    recorder.flush()
    assert not recorder.pending

    assert job_states(store, "run-1") == {"a": "running", "b": "pending"}
    assert store.query("SELECT attempts FROM jobs WHERE name = 'a'") == [{"attempts": 1}]
    attempts = store.query("SELECT job, attempt, state, submitted, exit_code FROM attempts")
    assert attempts == [
        {"job": "a", "attempt": 1, "state": "running", "submitted": submitted, "exit_code": None}
    ]
    assert get_run(store, "run-1")["heartbeat"] > 1.0

    outcome = {"state": "succeeded", "exit_code": 0, "host": "node1", "start": 1.0, "end": 2.0,
               "stdout": "/x/out", "stderr": "/x/err", "not_a_column": "ignored"}  # fmt: skip
    recorder.attempt_finished("a", 1, outcome)
    recorder.job_state("a", JobState.SUCCEEDED, detail="exit 0")
    recorder.job_state("b", JobState.READY)
    recorder.flush()

    # attempts=None keeps the count recorded earlier.
    assert store.query("SELECT name, state, attempts FROM jobs ORDER BY name") == [
        {"name": "a", "state": "succeeded", "attempts": 1},
        {"name": "b", "state": "ready", "attempts": 0},
    ]
    row = store.query("SELECT * FROM attempts")[0]
    fields = ("state", "exit_code", "host", "start", "end", "stdout", "stderr")
    assert {k: row[k] for k in fields} == {
        "state": "succeeded", "exit_code": 0, "host": "node1", "start": 1.0, "end": 2.0,
        "stdout": "/x/out", "stderr": "/x/err",
    }  # fmt: skip
    assert row["submitted"] == submitted
    events = store.query("SELECT job, state, detail FROM events WHERE job IS NOT NULL ORDER BY id")
    assert events == [
        {"job": "a", "state": "ready", "detail": None},
        {"job": "a", "state": "running", "detail": None},
        {"job": "a", "state": "succeeded", "detail": "exit 0"},
        {"job": "b", "state": "ready", "detail": None},
    ]


def test_attempt_count_queued_earlier_in_a_batch_is_kept(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("a", "a")])
    recorder = RunRecorder(store, "run-1")
    recorder.job_state("a", JobState.READY)
    recorder.job_state("a", JobState.RUNNING, attempts=2)
    recorder.job_state("a", JobState.FAILED)
    recorder.flush()
    assert store.query("SELECT state, attempts FROM jobs") == [{"state": "failed", "attempts": 2}]


def test_flush_with_nothing_queued_writes_nothing(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("a", "a")], heartbeat=1.0)
    RunRecorder(store, "run-1").flush()
    assert get_run(store, "run-1")["heartbeat"] == 1.0
    assert _count(store, "SELECT count(*) AS n FROM events") == 1


def test_run_state_records_the_end(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("a", "a")])
    recorder = RunRecorder(store, "run-1")
    record_reaching(recorder, "a", JobState.FAILED)
    recorder.run_state(RunState.FAILED, message="1 job failed")
    run = get_run(store, "run-1")
    assert run["state"] == "failed" and run["ended"] is not None
    assert run["message"] == "1 job failed"
    # Queued job changes are flushed before the run's state.
    assert job_states(store, "run-1") == {"a": "failed"}


def test_failed_write_is_rolled_back(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("a", "a")])

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE jobs SET state = 'ready'")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        store.write(half_then_fail)
    assert job_states(store, "run-1") == {"a": "pending"}


# -- reading ---------------------------------------------------------------------------


def test_run_summary_shape(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("isr-1", "isr"), ("isr-2", "isr"), ("sum", "summary")])
    _set_states(store, "run-1", {"isr-1": JobState.SUCCEEDED, "isr-2": JobState.RUNNING})
    summary = run_summary(store, get_run(store, "run-1"))

    assert summary["run"] == "run-1"
    assert summary["state"] == "running"
    assert summary["total"] == 3
    # Every state is present, zero counts included, in the documented order; a running
    # job whose attempt has not started (here: none recorded) counts as queued.
    shown = [*SEVEN_STATES[:2], "queued", *SEVEN_STATES[2:]]
    assert list(summary["jobs"]) == shown == list(SHOWN_STATES)
    assert SEVEN_STATES == list(JOB_STATES)
    assert summary["jobs"] == {
        "pending": 1, "ready": 0, "queued": 1, "running": 0, "succeeded": 1,
        "failed": 0, "blocked": 0, "cancelled": 0,
    }  # fmt: skip
    assert list(summary["labels"]) == ["isr", "summary"]
    for counts in summary["labels"].values():
        assert list(counts) == shown
    zero = dict.fromkeys(shown, 0)
    assert summary["labels"]["isr"] == zero | {"succeeded": 1, "queued": 1}
    assert summary["labels"]["summary"] == zero | {"pending": 1}
    # The contract is JSON.
    assert json.loads(json.dumps(summary)) == summary


def test_labels_come_in_job_order(store: Store, tmp_path: Path) -> None:
    jobs = [("z-1", "zeta"), ("a-1", "alpha"), ("z-2", "zeta"), ("m-1", "mid"), ("a-2", "alpha")]
    _new_run(store, tmp_path, jobs)
    # Spread one label over several states so it appears in several groups.
    _set_states(store, "run-1", {"z-1": JobState.SUCCEEDED, "a-2": JobState.FAILED})
    summary = run_summary(store, get_run(store, "run-1"))
    assert list(summary["labels"]) == ["zeta", "alpha", "mid"]
    assert summary["labels"]["zeta"]["succeeded"] == 1
    assert summary["labels"]["zeta"]["pending"] == 1
    assert summary["labels"]["alpha"]["failed"] == 1


def test_summaries_of_two_runs_do_not_mix(store: Store, tmp_path: Path) -> None:
    _new_run(store, tmp_path, [("a", "a")], run_id="run-1")
    _new_run(store, tmp_path, [("a", "a"), ("b", "b")], run_id="run-2")
    _set_states(store, "run-2", {"a": JobState.SUCCEEDED})
    first = run_summary(store, get_run(store, "run-1"))
    assert first["jobs"]["pending"] == 1 and first["jobs"]["succeeded"] == 0
    assert list(first["labels"]) == ["a"]


def test_effective_state_of_a_dead_driver_is_driver_lost(
    tmp_path: Path, dead_driver: dict[str, Any]
) -> None:
    run = _run_row("run-1", tmp_path, 1, **dead_driver)
    assert not driver_alive(run)
    assert effective_state(run) == RunState.DRIVER_LOST.value


def test_effective_state_of_a_live_driver_is_running(tmp_path: Path) -> None:
    run = _run_row("run-1", tmp_path, 1, **_this_process())
    assert driver_alive(run)
    assert effective_state(run) == RunState.RUNNING.value


def test_reused_pid_is_not_mistaken_for_the_driver(tmp_path: Path) -> None:
    # Same pid, different start time: another process that got the driver's pid.
    identity = _this_process()
    run = _run_row("run-1", tmp_path, 1, **identity | {"pid_started": identity["pid_started"] - 60})
    assert effective_state(run) == RunState.DRIVER_LOST.value


def test_other_host_uses_the_heartbeat(tmp_path: Path) -> None:
    now = time.time()
    fresh = _run_row("run-1", tmp_path, 1, host="elsewhere.invalid", pid=1, heartbeat=now)
    stale = fresh | {"heartbeat": now - HEARTBEAT_TIMEOUT - 1}
    assert effective_state(fresh) == "running"
    assert effective_state(stale) == "driver_lost"


def test_ended_runs_keep_their_state(tmp_path: Path, dead_driver: dict[str, Any]) -> None:
    for state in ("succeeded", "failed", "cancelled"):
        assert effective_state(_run_row("run-1", tmp_path, 1, state=state, **dead_driver)) == state


def test_run_summary_reports_driver_lost(
    store: Store, tmp_path: Path, dead_driver: dict[str, Any]
) -> None:
    _new_run(store, tmp_path, [("a", "a")], **dead_driver)
    assert run_summary(store, get_run(store, "run-1"))["state"] == "driver_lost"
    # driver_lost is derived, never stored.
    assert get_run(store, "run-1")["state"] == "running"


# -- restart ---------------------------------------------------------------------------

RESTART_JOBS = [
    ("done", JobState.SUCCEEDED),
    ("broke", JobState.FAILED),
    ("stuck", JobState.BLOCKED),
    ("stopped", JobState.CANCELLED),
    ("busy", JobState.RUNNING),
    ("queued", JobState.READY),
    ("waiting", JobState.PENDING),
]


def _restartable_run(store: Store, tmp_path: Path, driver: dict[str, Any]) -> None:
    _new_run(store, tmp_path, [(name, "x") for name, _ in RESTART_JOBS], **driver)
    recorder = RunRecorder(store, "run-1")
    recorder.attempt_submitted("busy", 1, time.time())
    recorder.attempt_submitted("done", 1, time.time())
    recorder.attempt_finished("done", 1, {"state": "succeeded", "exit_code": 0})
    for name, state in RESTART_JOBS:
        record_reaching(recorder, name, state, attempts=1 if name in ("busy", "done") else None)
    recorder.flush()


def test_restart_is_refused_while_the_driver_lives(store: Store, tmp_path: Path) -> None:
    _restartable_run(store, tmp_path, _this_process())
    before_jobs = job_states(store, "run-1")
    before_run = get_run(store, "run-1")
    with pytest.raises(RunStateError, match=f"pid {os.getpid()}"):
        claim_for_restart(store, "run-1", _this_process())
    assert job_states(store, "run-1") == before_jobs
    assert get_run(store, "run-1") == before_run


def test_restart_resets_unfinished_jobs_and_keeps_succeeded(
    store: Store, tmp_path: Path, dead_driver: dict[str, Any]
) -> None:
    _restartable_run(store, tmp_path, dead_driver)
    me = _this_process()
    to_run = claim_for_restart(store, "run-1", me)

    assert sorted(to_run) == sorted(name for name, _ in RESTART_JOBS if name != "done")
    expected = {name: "pending" for name, _ in RESTART_JOBS} | {"done": "succeeded"}
    assert job_states(store, "run-1") == expected
    run = get_run(store, "run-1")
    assert run["state"] == "running" and run["ended"] is None and run["restarts"] == 1
    assert {key: run[key] for key in me} == me
    assert effective_state(run) == "running"
    # The attempt the dead driver left running is closed as lost; the finished one is kept.
    attempts = {
        r["job"]: (r["state"], r["failure_class"])
        for r in store.query("SELECT job, state, failure_class FROM attempts")
    }
    assert attempts == {"busy": ("failed", "pilot_lost"), "done": ("succeeded", None)}


def test_restart_keeps_attempts_the_site_still_runs_until_the_driver_reattaches(
    store: Store, tmp_path: Path, dead_driver: dict[str, Any]
) -> None:
    # Globus Compute: the service runs a task on after its driver died.
    _restartable_run(store, tmp_path, dead_driver)
    recorder = RunRecorder(store, "run-1")
    recorder.attempt_submitted("queued", 1, time.time())
    recorder.flush()
    claim_for_restart(store, "run-1", _this_process(), still_out={("busy", 1), ("queued", 1)})

    def attempts() -> dict[str, tuple[str, str | None]]:
        rows = store.query("SELECT job, state, failure_class FROM attempts WHERE job != 'done'")
        return {r["job"]: (r["state"], r["failure_class"]) for r in rows}

    assert attempts() == {"busy": ("running", None), "queued": ("running", None)}
    # The new driver found only busy's task: queued's attempt is lost, and reruns.
    assert lose_running_attempts(store, "run-1", "not found", keep=[("busy", 1)]) == 1
    assert attempts() == {"busy": ("running", None), "queued": ("failed", "pilot_lost")}


def test_restart_of_an_ended_run(store: Store, tmp_path: Path) -> None:
    # A run that ended may be restarted even by the process that ran it.
    _restartable_run(store, tmp_path, _this_process())
    RunRecorder(store, "run-1").run_state(RunState.FAILED)
    to_run = claim_for_restart(store, "run-1", _this_process())
    assert "done" not in to_run and len(to_run) == len(RESTART_JOBS) - 1
    assert get_run(store, "run-1")["ended"] is None


# -- concurrency -----------------------------------------------------------------------

FLUSHES = 500


def _assert_no_lost_rows(db_path: Path, writers: list[str], updates: int) -> None:
    # Every update set its job's count to its number and added one event, in one write.
    with Store(db_path) as store:
        for job in writers:
            n = _count(store, "SELECT count(*) AS n FROM events WHERE job = ?", [job])
            assert n == updates, job
            row = store.query("SELECT attempts FROM jobs WHERE name = ?", [job])[0]
            assert row["attempts"] == updates, job
        total = _count(store, "SELECT count(*) AS n FROM events")
        assert total == updates * len(writers) + 1


def test_concurrent_threads_lose_no_row(db_path: Path, tmp_path: Path) -> None:
    writers = ["w-1", "w-2"]
    with Store(db_path) as store:
        _new_run(store, tmp_path, [(w, "w") for w in writers])
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def write(job: str) -> None:
        try:
            with Store(db_path) as own:
                recorder = RunRecorder(own, "run-1")
                start.wait(timeout=60)
                for i in range(FLUSHES):
                    # Back and forth, as a retried job moves: every move is legal.
                    state = JobState.RUNNING if i % 2 else JobState.READY
                    recorder.job_state(job, state, attempts=i + 1)
                    recorder.flush()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    _assert_no_lost_rows(db_path, writers, FLUSHES)


@contextmanager
def _reading(db_path: Path) -> Iterator[tuple[Store, sqlite3.Connection, list[str]]]:
    """A store in rollback-journal mode, and a reader holding a shared lock on it.

    The store's lock timeout is short, so that its COMMIT gives up waiting for the
    reader at once; the statements it runs are listed as it runs them.
    """
    with Store(db_path, journal="delete") as store:
        store.write(lambda conn: conn.execute("CREATE TABLE counts (n INTEGER)"))
        store.conn.execute("PRAGMA busy_timeout = 50")
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        reader = sqlite3.connect(str(db_path), isolation_level=None)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM counts").fetchone() == (0,)
            yield store, reader, statements
        finally:
            reader.close()


def _commit_failed(statements: list[str]) -> bool:
    # A ROLLBACK right after a COMMIT: the COMMIT failed.
    return ("COMMIT", "ROLLBACK") in zip(statements, statements[1:], strict=False)


def _insert(store: Store) -> None:
    store.write(lambda conn: conn.execute("INSERT INTO counts VALUES (1)"))


def test_a_commit_that_readers_block_is_retried(db_path: Path) -> None:
    with _reading(db_path) as (store, reader, statements):
        failures: list[BaseException] = []

        def write() -> None:
            try:
                _insert(store)
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            # The reader's shared lock keeps the writer from committing. (A retry that
            # found the failed COMMIT's transaction still open would end the thread.)
            wait_for(
                lambda: _commit_failed(statements) or not writer.is_alive(),
                timeout=60,
                what="the writer's COMMIT to fail busy",
            )
            assert reader.execute("SELECT count(*) FROM counts").fetchone() == (0,)
        finally:
            reader.execute("COMMIT")
            writer.join(timeout=60)
        assert failures == []
        assert not writer.is_alive()
        assert _commit_failed(statements)
        assert not store.conn.in_transaction
        _insert(store)
        assert _count(store, "SELECT count(*) AS n FROM counts") == 2


def test_a_write_that_gives_up_leaves_the_store_usable(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "_PATIENCE", 0.5)
    with _reading(db_path) as (store, reader, statements):
        with pytest.raises(StoreError, match=r"still busy \(database is locked\)") as caught:
            _insert(store)
        assert "within a transaction" not in str(caught.value)
        assert statements.count("COMMIT") > 1  # it retried before it gave up
        assert not store.conn.in_transaction
        with pytest.raises(StoreError, match="still busy"):
            _insert(store)  # the reader still reads
        reader.execute("COMMIT")
        _insert(store)
        assert _count(store, "SELECT count(*) AS n FROM counts") == 1


def test_transactions_do_not_nest(store: Store) -> None:
    with store.snapshot():
        with pytest.raises(StoreError, match="inside another write or snapshot"):
            store.write(lambda conn: conn.execute("UPDATE runs SET name = 'x'"))
        with pytest.raises(StoreError, match="inside another write or snapshot"):
            with store.snapshot():
                pass
    assert not store.conn.in_transaction
    with pytest.raises(ValueError), store.snapshot():
        raise ValueError("a failed read ends its snapshot too")
    assert not store.conn.in_transaction


WRITERS, UPDATES = 8, 5_000

# One driver changing its own job UPDATES times, one write per flush of `batch` changes.
# A COMMIT followed at once by a ROLLBACK failed (readers held the lock): the first one
# is signalled by a file, and all are counted.
_WRITER = """
import json, sys, time
from pathlib import Path
from executor.model.states import JobState
from executor.store import Store
from executor.store.recorder import RunRecorder

path, journal, job = sys.argv[1], sys.argv[2], sys.argv[3]
updates, batch, marker = int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6])
last, busy_commits = None, 0

def trace(sql):
    global last, busy_commits
    if sql == "ROLLBACK" and last == "COMMIT":
        busy_commits += 1
        marker.touch()
    last = sql

with Store(path, journal=journal) as store:
    store.conn.set_trace_callback(trace)
    recorder = RunRecorder(store, "run-1")
    print("ready", flush=True)
    sys.stdin.readline()
    started, longest = time.time(), 0.0
    for i in range(updates):
        state = JobState.RUNNING if i % 2 else JobState.READY  # every move legal
        recorder.job_state(job, state, attempts=i + 1)
        if i % batch == batch - 1:
            before = time.monotonic()
            recorder.flush()
            longest = max(longest, time.monotonic() - before)
    recorder.flush()
    ended = time.time()
print(json.dumps(
    {"started": started, "ended": ended, "busy_commits": busy_commits, "longest": longest}
))
"""

# One statement, so one consistent read even outside a snapshot.
_PROGRESS = (
    "SELECT name, attempts, coalesce(n, 0) AS events FROM jobs LEFT JOIN "
    "(SELECT job, count(*) AS n FROM events WHERE run_id = 'run-1' GROUP BY job) "
    "ON job = name ORDER BY name"
)
_WRITTEN = "SELECT count(*) AS n FROM events WHERE job IS NOT NULL"


# Every COMMIT in rollback-journal mode syncs the journal and the database file (1 ms
# on a 2-CPU virtual machine's disk), so 40,000 single-change writes took 30 to 55 s
# there, against 3 to 5 s in WAL mode; flushing 5 changes at a time still leaves
# 8,000 writes contending.
@pytest.mark.parametrize(("journal", "batch"), [("wal", 1), ("delete", 5)], ids=["wal", "delete"])
def test_concurrent_processes_lose_no_row(
    db_path: Path, tmp_path: Path, journal: str, batch: int
) -> None:
    writers = [f"p-{i}" for i in range(WRITERS)]
    with Store(db_path, journal=journal) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == journal
        _new_run(store, tmp_path, [(w, "w") for w in writers])
    signals = tmp_path / "busy-commits"
    signals.mkdir()
    commands = [
        [sys.executable, "-c", _WRITER, db_path, journal, job, UPDATES, batch, signals / job]
        for job in writers
    ]
    started = time.monotonic()
    snapshots = 0
    last: dict[str, int] = {}
    with started_together(commands) as children, Store(db_path, readonly=True) as reader:

        def progress() -> list[dict[str, Any]]:
            rows = reader.query(_PROGRESS)
            for row in rows:
                # Its count and its event are one write: never one without the other.
                assert row["events"] == row["attempts"] >= last.get(row["name"], 0)
                last[row["name"]] = row["attempts"]
            return rows

        def failed() -> bool:
            return any(child.poll() not in (None, 0) for child in children)

        wait_for(lambda: failed() or sum(r["attempts"] for r in progress()) > 0)
        with reader.snapshot():
            held = progress()
            if journal == "delete":
                # Holding a shared lock, the reader blocks every COMMIT, until one gives
                # up (after SQLite's own 10 s wait) and has to be retried.
                wait_for(lambda: failed() or any(signals.iterdir()), what="a busy COMMIT")
            else:
                # WAL: the writers go on; the snapshot does not see them.
                before = sum(row["events"] for row in held)
                with Store(db_path, readonly=True) as other:
                    wait_for(lambda: failed() or _count(other, _WRITTEN) >= before + 1000)
            assert progress() == held
        while any(child.poll() is None for child in children):
            with reader.snapshot():
                progress()
            snapshots += 1
            time.sleep(0.01)  # leave the two CPUs to the writers
        results = [child.communicate(timeout=240) for child in children]
    elapsed = time.monotonic() - started
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    reports = [json.loads(out) for out, _ in results]
    # All were writing at the same time: the last to start began before the first ended.
    assert max(r["started"] for r in reports) < min(r["ended"] for r in reports)
    busy_commits = sum(r["busy_commits"] for r in reports)
    if journal == "delete":
        assert busy_commits > 0
    _assert_no_lost_rows(db_path, writers, UPDATES)
    longest = max(r["longest"] for r in reports)
    print(
        f"{journal}: {WRITERS}x{UPDATES} changes in {elapsed:.1f}s, longest write "
        f"{longest:.1f}s, {busy_commits} busy commits retried, {snapshots} snapshots"
    )


_OPENER = """
import sys
from executor.store import Store

print("ready", flush=True)
sys.stdin.readline()
with Store(sys.argv[1]) as store:
    version = store.conn.execute("PRAGMA user_version").fetchone()[0]
print(version, flush=True)
"""


def test_processes_creating_one_new_database_at_once(db_path: Path) -> None:
    with started_together([[sys.executable, "-c", _OPENER, db_path]] * 4) as children:
        results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out == f"{len(MIGRATIONS)}\n"
    with Store(db_path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
