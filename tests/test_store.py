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
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import started_together

from executor.errors import RunStateError
from executor.states import JOB_STATES, JobState, RunState
from executor.store import Store
from executor.store.queries import (
    HEARTBEAT_TIMEOUT,
    driver_alive,
    effective_state,
    get_run,
    job_states,
    run_summary,
)
from executor.store.recorder import RunRecorder, claim_for_restart, create_run
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
    """A runs row as :func:`executor.runs.start_run` builds it."""
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
        recorder.job_state(name, state)
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
    recorder.job_state("a", JobState.FAILED)
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
    # Every state is present, zero counts included, in the documented order.
    assert list(summary["jobs"]) == SEVEN_STATES == list(JOB_STATES)
    assert summary["jobs"] == {
        "pending": 1, "ready": 0, "running": 1, "succeeded": 1,
        "failed": 0, "blocked": 0, "cancelled": 0,
    }  # fmt: skip
    assert list(summary["labels"]) == ["isr", "summary"]
    for counts in summary["labels"].values():
        assert list(counts) == SEVEN_STATES
    zero = dict.fromkeys(SEVEN_STATES, 0)
    assert summary["labels"]["isr"] == zero | {"succeeded": 1, "running": 1}
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
        recorder.job_state(name, state, attempts=1 if name in ("busy", "done") else None)
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


def test_restart_of_an_ended_run(store: Store, tmp_path: Path) -> None:
    # A run that ended may be restarted even by the process that ran it.
    _restartable_run(store, tmp_path, _this_process())
    RunRecorder(store, "run-1").run_state(RunState.FAILED)
    to_run = claim_for_restart(store, "run-1", _this_process())
    assert "done" not in to_run and len(to_run) == len(RESTART_JOBS) - 1
    assert get_run(store, "run-1")["ended"] is None


# -- concurrency -----------------------------------------------------------------------

FLUSHES = 500

_WRITER = """
import sys
from executor.states import JobState
from executor.store import Store
from executor.store.recorder import RunRecorder

path, job, flushes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store(path) as store:
    recorder = RunRecorder(store, "run-1")
    print("ready", flush=True)
    sys.stdin.readline()
    states = [JobState.READY, JobState.RUNNING]
    for i in range(flushes):
        recorder.job_state(job, states[i % 2], attempts=i)
        recorder.flush()
print("done", flush=True)
"""


def _assert_no_lost_rows(db_path: Path, writers: list[str]) -> None:
    with Store(db_path) as store:
        for job in writers:
            n = _count(store, "SELECT count(*) AS n FROM events WHERE job = ?", [job])
            assert n == FLUSHES, job
            row = store.query("SELECT attempts FROM jobs WHERE name = ?", [job])[0]
            assert row["attempts"] == FLUSHES - 1
        total = _count(store, "SELECT count(*) AS n FROM events")
        assert total == FLUSHES * len(writers) + 1


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
                    recorder.job_state(job, JobState.RUNNING, attempts=i)
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
    _assert_no_lost_rows(db_path, writers)


def test_concurrent_processes_lose_no_row(db_path: Path, tmp_path: Path) -> None:
    writers = ["p-1", "p-2", "p-3"]
    with Store(db_path) as store:
        _new_run(store, tmp_path, [(w, "w") for w in writers])
    # Start all writers together: each has opened its Store and waits for "go".
    commands = [[sys.executable, "-c", _WRITER, db_path, job, FLUSHES] for job in writers]
    with started_together(commands) as children:
        results = [child.communicate(timeout=240) for child in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out == "done\n"
    _assert_no_lost_rows(db_path, writers)


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
