"""Every finished job counts: the outcome log, per-job isolation in a bundle, recovery."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from seed import seed_run

from executor.driver.delivery import code_never_arrived
from executor.driver.parsl_session import outcomes_of
from executor.errors import RunNotFound, RunStateError
from executor.model.states import FailureClass, JobState, RunState
from executor.runs.cancel import cancel
from executor.store import Store
from executor.store.queries import get_run
from executor.store.recorder import RunRecorder, recover_outcomes
from executor.worker import bundle as worker
from executor.worker import outcome_log
from executor.worker.outcome import FIELDS, failed, is_start, succeeded


def _spec(tmp_path: Path, job: str, command: str | None = None, **extra) -> dict:
    logs = tmp_path / "run" / "logs" / job
    return {
        "run_id": "r", "run_dir": str(tmp_path / "run"), "job": job, "attempt": 1,
        "kind": "shell", "command": command, "function": None, "args": [], "kwargs": {},
        "environment": {}, "environment_file": None, "workdir": str(tmp_path),
        "walltime": None, "stdout": str(logs / "attempt-1.out"),
        "stderr": str(logs / "attempt-1.err"), "cancel_path": str(tmp_path / "run" / "cancel"),
        "memory": None, "memory_tolerance": 0.0, "in_process": False,
        "outcome_log": str(tmp_path / "run"), **extra,
    }  # fmt: skip


# -- the log itself -------------------------------------------------------------------
def test_reader_returns_each_complete_record_once(tmp_path: Path) -> None:
    reader = outcome_log.OutcomeReader(tmp_path)
    assert reader.read_new() == []  # nothing finished yet: no directory
    assert outcome_log.append(str(tmp_path), {"job": "a", "attempt": 1, "state": "succeeded"})
    assert [r["job"] for r in reader.read_new()] == ["a"]
    assert reader.read_new() == []
    outcome_log.append(str(tmp_path), {"job": "b", "attempt": 2, "state": "failed"})
    assert [(r["job"], r["attempt"]) for r in reader.read_new()] == [("b", 2)]


def test_a_line_still_being_written_waits_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    directory = tmp_path / outcome_log.DIRECTORY
    directory.mkdir()
    path = directory / "node-1.jsonl"
    path.write_bytes(b'{"job": "a", "attempt": 1}\n{"job": "b", "att')
    reader = outcome_log.OutcomeReader(tmp_path)
    assert [r["job"] for r in reader.read_new()] == ["a"]
    with open(path, "ab") as handle:  # the writer finishes its line
        handle.write(b'empt": 1}\nnot json\n{"job": "c", "attempt": 1}\n')
    assert [r["job"] for r in reader.read_new()] == ["b", "c"]


def test_an_unwritable_run_directory_never_fails_the_job(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert outcome_log.append(str(blocker / "run"), {"job": "a", "attempt": 1}) is False


# -- one job never changes another's outcome ------------------------------------------------
def test_a_job_killed_by_a_real_time_signal_fails_alone(tmp_path: Path) -> None:
    specs = [
        _spec(tmp_path, "before", "true"),
        _spec(tmp_path, "realtime", "kill -40 $$"),
        _spec(tmp_path, "after", "true"),
    ]
    outcomes = worker.run_bundle(specs)
    assert [o["state"] for o in outcomes] == ["succeeded", "failed", "succeeded"]
    assert outcomes[1]["failure_class"] == "signal"
    assert outcomes[1]["signal"] == 40
    assert outcomes[1]["message"] == f"killed by signal SIGRTMIN+{40 - signal.SIGRTMIN}"


def test_a_fault_of_the_worker_with_one_job_is_that_jobs_failure_with_its_traceback(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "no-log-dir").write_text("")  # a file where the job's log directory goes
    (logs / "in-worker" / "attempt-1.out").mkdir(parents=True)  # a log that cannot be opened
    # Logs are created only when a job writes to them: these jobs write.
    specs = [
        _spec(tmp_path, "first", "true"),
        _spec(tmp_path, "no-log-dir", "echo out"),
        _spec(tmp_path, "in-worker", kind="function", function="builtins:print", args=[1],
              in_process=True),
        _spec(tmp_path, "last", "true"),
    ]  # fmt: skip
    outcomes = worker.run_bundle(specs)
    assert [o["state"] for o in outcomes] == ["succeeded", "failed", "failed", "succeeded"]
    assert [o["failure_class"] for o in outcomes[1:3]] == ["worker_error", "worker_error"]
    assert "Traceback" in outcomes[1]["message"]
    assert "NotADirectoryError" in outcomes[1]["message"]
    assert "IsADirectoryError" in outcomes[2]["message"]
    # The worker process is intact: a function job after the fault runs in it as usual.
    again = worker.run_bundle([_spec(tmp_path, "fn", kind="function", function="json:dumps",
                                     args=[[1]], in_process=True)])  # fmt: skip
    assert again[0]["state"] == "succeeded" and again[0]["result"] == '"[1]"'


def test_each_finished_job_is_recorded_as_it_ends(tmp_path: Path) -> None:
    specs = [_spec(tmp_path, "a", "true"), _spec(tmp_path, "b", "exit 3")]
    worker.run_bundle(specs)
    records = outcome_log.read_all(tmp_path / "run")
    assert [(r["job"], r["attempt"], r["state"]) for r in records] == [
        ("a", 1, "succeeded"),
        ("b", 1, "failed"),
    ]
    assert records[1]["exit_code"] == 3
    # Where the site has no shared filesystem the driver asks for no record.
    worker.run_bundle([_spec(tmp_path, "c", "true", outcome_log=None)])
    assert len(outcome_log.read_all(tmp_path / "run")) == 2


def test_a_job_records_its_start_as_it_starts_apart_from_its_outcome(tmp_path: Path) -> None:
    # The job reads the log while it runs: its own start record is there already.
    log_dir = tmp_path / "run" / outcome_log.DIRECTORY
    spec = _spec(tmp_path, "a", f"cat {log_dir}/*.jsonl")
    outcome = worker.run_bundle([spec])[0]
    seen = json.loads((tmp_path / "run" / "logs" / "a" / "attempt-1.out").read_text())
    assert seen == {
        "event": "started", "job": "a", "attempt": 1, "start": outcome["start"],
        "host": socket.gethostname(), "block_id": None, "batch_job_id": None,
        "stdout": spec["stdout"], "stderr": spec["stderr"],
    }  # fmt: skip
    records = outcome_log.OutcomeReader(tmp_path / "run").read_new()
    assert [is_start(r) for r in records] == [True, False]
    assert records[1]["state"] == "succeeded"
    # Restart and cancel read outcomes only.
    assert [r.get("event") for r in outcome_log.read_all(tmp_path / "run")] == [None]
    # A job cancelled before it starts never records a start.
    (tmp_path / "run" / "cancel").touch()
    worker.run_bundle([_spec(tmp_path, "b", "true")])
    assert [r["job"] for r in outcome_log.read_all(tmp_path / "run")] == ["a", "b"]
    assert sum(map(is_start, outcome_log.OutcomeReader(tmp_path / "run").read_new())) == 1


def test_the_record_is_written_before_the_next_job_of_the_bundle_starts(tmp_path: Path) -> None:
    # The second job reads the first one's record: durable before the bundle returns.
    log_dir = tmp_path / "run" / outcome_log.DIRECTORY
    specs = [_spec(tmp_path, "a", "true"), _spec(tmp_path, "b", f"cat {log_dir}/*.jsonl")]
    worker.run_bundle(specs)
    seen = (tmp_path / "run" / "logs" / "b" / "attempt-1.out").read_text()
    assert [json.loads(line)["job"] for line in seen.splitlines()] == ["a", "a", "b"]


# -- recovery: a restart or cancel of a dead driver's run ------------------------------------
@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "monitoring.db") as opened:
        yield opened


# -- one definition of an outcome, for the worker, the driver and the store -------------------
def test_every_outcome_field_is_a_column_of_the_attempts_table(store: Store) -> None:
    # The recorder writes every field: a field added to Outcome needs a migration too.
    columns = {row["name"] for row in store.query("PRAGMA table_info(attempts)")}
    assert set(FIELDS) - columns == set()


def test_outcomes_the_driver_makes_have_every_field_like_the_workers() -> None:
    class ManagerLost(Exception):
        pass

    class LostBundle:
        def result(self):
            raise ManagerLost("the pilot went away")

    lost = outcomes_of(LostBundle(), 2)
    assert isinstance(lost, list) and lost[0] is not lost[1]
    made = [*lost, code_never_arrived({"ab" * 32: [0]}), failed("timeout", "late"), succeeded()]
    for outcome in made:
        assert tuple(outcome) == FIELDS
        assert outcome["end"] is not None
    assert lost[0]["failure_class"] == FailureClass.PILOT_LOST.value
    assert made[2]["failure_class"] == FailureClass.CODE_UNAVAILABLE.value
    assert made[-1]["state"] == "succeeded" and made[-1]["failure_class"] is None


def _running_run(store: Store, tmp_path: Path, names: list[str]) -> dict:
    row = seed_run(
        store, tmp_path / "runs", "run-1", state=RunState.RUNNING,
        jobs=[{"name": n, "label": "x", "state": "pending"} for n in names],
    )  # fmt: skip
    recorder = RunRecorder(store, "run-1")
    for name in names:
        recorder.job_state(name, JobState.READY)
    recorder.job_state(names[0], JobState.RUNNING, attempts=1)
    recorder.attempt_submitted(names[0], 1, time.time(), pool="default")
    recorder.flush()
    return row


def test_recovery_marks_recorded_successes_succeeded_even_unseen_attempts(
    store: Store, tmp_path: Path
) -> None:
    _running_run(store, tmp_path, ["known", "unseen", "failed"])
    now = time.time()
    records = [
        {"job": "known", "attempt": 1, "state": "succeeded", "start": now, "end": now + 1,
         "exit_code": 0, "host": "n1"},
        # The driver handed this one to Parsl but died before committing anything of it.
        {"job": "unseen", "attempt": 1, "state": "succeeded", "start": now, "end": now + 1},
        {"job": "failed", "attempt": 1, "state": "failed", "failure_class": "exit_code",
         "exit_code": 2, "start": now, "end": now + 1},
        {"job": "ghost", "attempt": 1, "state": "succeeded"},  # not in this run
    ]  # fmt: skip
    assert recover_outcomes(store, "run-1", records) == 2
    jobs = {r["name"]: r for r in store.query("SELECT * FROM jobs WHERE run_id = 'run-1'")}
    assert jobs["known"]["state"] == jobs["unseen"]["state"] == "succeeded"
    assert jobs["unseen"]["attempts"] == 1
    assert jobs["failed"]["state"] == "ready"  # a restart decides what runs again
    attempts = {r["job"]: r for r in store.query("SELECT * FROM attempts WHERE run_id = 'run-1'")}
    assert attempts["known"]["state"] == "succeeded" and attempts["known"]["host"] == "n1"
    assert attempts["failed"]["exit_code"] == 2
    # Applying the same records again changes nothing.
    assert recover_outcomes(store, "run-1", records) == 0


def test_recovery_ignores_start_records(store: Store, tmp_path: Path) -> None:
    _running_run(store, tmp_path, ["known", "unseen"])
    starts = [
        {"event": "started", "job": name, "attempt": 1, "start": time.time(), "host": "n1",
         "block_id": "0", "batch_job_id": None, "stdout": "o", "stderr": "e"}
        for name in ("known", "unseen")
    ]  # fmt: skip
    assert recover_outcomes(store, "run-1", starts) == 0
    attempts = store.query("SELECT job, state, start, host FROM attempts WHERE run_id = 'run-1'")
    assert attempts == [{"job": "known", "state": "running", "start": None, "host": None}]


def test_cancel_of_a_dead_drivers_run_keeps_what_finished_and_closes_attempts(
    store: Store, tmp_path: Path
) -> None:
    row = _running_run(store, tmp_path, ["done", "open", "waiting"])
    recorder = RunRecorder(store, "run-1")
    recorder.job_state("open", JobState.RUNNING, attempts=1)
    recorder.attempt_submitted("open", 1, time.time())
    recorder.flush()
    outcome_log.append(row["run_dir"], {"job": "done", "attempt": 1, "state": "succeeded"})
    # seed_run's driver runs "elsewhere" with an old heartbeat: it is lost.
    store.write(lambda conn: conn.execute("UPDATE runs SET heartbeat = 1"))

    assert cancel(store, "run-1", wait=0) == "cancelled"

    states = {r["name"]: r["state"] for r in store.query("SELECT name, state FROM jobs")}
    assert states == {"done": "succeeded", "open": "cancelled", "waiting": "cancelled"}
    assert not store.query("SELECT * FROM attempts WHERE state = 'running'")
    assert get_run(store, "run-1")["state"] == "cancelled"


def test_cancel_of_a_run_whose_driver_cannot_be_reached_says_whose_it_is(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user's live driver on this host. Tests run as root, which may signal and
    # write anything, so the two refusals the kernel would give are stood in for here.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        seed_run(
            store, tmp_path / "runs", "run-1", owner="bob", state=RunState.RUNNING,
            host=socket.gethostname(), jobs=[{"name": "a", "label": "x", "state": "running"}],
        )  # fmt: skip
        import psutil

        started = psutil.Process(sleeper.pid).create_time()
        store.write(
            lambda conn: conn.execute(
                "UPDATE runs SET pid = ?, pid_started = ?", (sleeper.pid, started)
            )
        )

        def refuse(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")

        with monkeypatch.context() as patched:
            patched.setattr(os, "kill", refuse)
            patched.setattr(Path, "touch", refuse)
            with pytest.raises(RunStateError, match=r"belongs to 'bob'.*ask bob"):
                cancel(store, "run-1", wait=0)
        assert get_run(store, "run-1")["state"] == "running"  # nothing was changed
    finally:
        sleeper.kill()
        sleeper.wait()


# -- a run id prefix must name one run --------------------------------------------------------
def test_a_run_id_prefix_must_be_unique(store: Store, tmp_path: Path) -> None:
    for run_id in ("20261202-100000-aaaa", "20261202-100000-bbbb", "20261203-090000-cccc"):
        seed_run(store, tmp_path / "runs", run_id, jobs=[])
    assert get_run(store, "20261203")["id"] == "20261203-090000-cccc"
    with pytest.raises(RunNotFound, match="several") as raised:
        get_run(store, "20261202")
    assert "20261202-100000-aaaa" in str(raised.value)
    assert "20261202-100000-bbbb" in str(raised.value)
    # Not a fragment from the middle: `cancel bbbb` must not guess.
    with pytest.raises(RunNotFound, match="no run"):
        get_run(store, "bbbb")
    with pytest.raises(RunNotFound, match="no run"):
        get_run(store, "2026120_")  # LIKE wildcards in the input match only themselves


# -- restart --workflow switches workflows atomically -------------------------------------
def test_a_revision_that_cannot_be_recorded_leaves_the_run_as_it_was(
    tmp_path: Path, pilot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from executor.errors import StoreError
    from executor.formats import load_workflow
    from executor.runs.resume import load_run
    from executor.runs.revise import revise_run
    from executor.runs.start import start_run
    from executor.sites import get_site
    from executor.store import locate

    original = tmp_path / "workflow.yaml"
    original.write_text(yaml.safe_dump({"name": "w", "jobs": [{"name": "a", "command": "true"}]}))
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump({"name": "w", "jobs": [
        {"name": "a", "command": "true"}, {"name": "b", "command": "true", "after": ["a"]},
    ]}))  # fmt: skip
    locations = locate()
    with Store(locations.db) as opened:
        context = start_run(load_workflow(original), get_site(None), opened, locations)
        run = get_run(opened, context.run_id)
        saved = Path(run["workflow_copy"]).read_text()

        def crash(operation):  # the machine goes down before the store commits
            raise StoreError("simulated crash")

        with monkeypatch.context() as patched:
            patched.setattr(opened, "write", crash)
            with pytest.raises(StoreError):
                revise_run(opened, run, edited)

        # The run still reads as it was: its workflow copy and its jobs agree.
        assert Path(get_run(opened, run["id"])["workflow_copy"]).read_text() == saved
        assert set(load_run(opened, run["id"]).graph.names) == {"a"}
        # And the revision, once it can be recorded, switches both together.
        revise_run(opened, get_run(opened, run["id"]), edited)
        assert set(load_run(opened, run["id"]).graph.names) == {"a", "b"}
        assert Path(run["workflow_copy"]).read_text() == saved  # earlier copies stay
