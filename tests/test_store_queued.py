"""A running job is shown queued until its attempt starts (executor.model.states.SHOWN_STATES)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from seed import seed_run

from executor.model.states import SHOWN_STATES, JobState, RunState
from executor.store import Store
from executor.store.queries import attempts_of, job_counts, label_counts
from executor.store.recorder import RunRecorder


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "monitoring.db") as opened:
        yield opened


def _start(name: str, when: float) -> dict:
    return {
        "event": "started", "job": name, "attempt": 1, "start": when, "host": "n1",
        "block_id": "0", "batch_job_id": "77", "stdout": "s.out", "stderr": "s.err",
    }  # fmt: skip


def test_running_jobs_count_queued_until_their_attempt_starts(store: Store, tmp_path: Path):
    jobs = [{"name": f"{label}-{i}", "label": label, "state": "pending"}
            for label in ("a", "b") for i in range(3)]  # fmt: skip
    seed_run(store, tmp_path / "runs", "run-1", state=RunState.RUNNING, jobs=jobs)
    recorder = RunRecorder(store, "run-1")
    now = time.time()
    for job in jobs:
        recorder.job_state(job["name"], JobState.READY)
        recorder.job_state(job["name"], JobState.RUNNING, attempts=1)
        recorder.attempt_submitted(job["name"], 1, now, stdout=f"{job['name']}.out", stderr="e")
    recorder.attempt_started("a-0", 1, _start("a-0", now + 1))  # in the same flush
    recorder.flush()
    assert (job_counts(store, "run-1")["running"], job_counts(store, "run-1")["queued"]) == (1, 5)
    recorder.attempt_started("b-2", 1, _start("b-2", now + 2))
    recorder.flush()

    counts = job_counts(store, "run-1")
    assert list(counts) == list(SHOWN_STATES)
    assert (counts["running"], counts["queued"], sum(counts.values())) == (2, 4, 6)
    labels = label_counts(store, "run-1")
    assert [(c["running"], c["queued"]) for c in labels.values()] == [(1, 2), (1, 2)]
    attempt = attempts_of(store, "run-1", "a-0")[0]
    assert (attempt["start"], attempt["host"], attempt["block_id"]) == (now + 1, "n1", "0")
    assert (attempt["stdout"], attempt["batch_job_id"]) == ("s.out", "77")
    assert attempts_of(store, "run-1", "a-1")[0]["stdout"] == "a-1.out"  # known at submit


def test_a_start_arriving_after_the_outcome_changes_nothing(store: Store, tmp_path: Path):
    seed_run(store, tmp_path / "runs", "run-1", state=RunState.RUNNING,
             jobs=[{"name": "x", "label": "l", "state": "pending"}])  # fmt: skip
    recorder = RunRecorder(store, "run-1")
    now = time.time()
    recorder.job_state("x", JobState.READY)
    recorder.job_state("x", JobState.RUNNING, attempts=1)
    recorder.attempt_submitted("x", 1, now)
    recorder.attempt_finished("x", 1, {"state": "failed", "start": None, "end": now})
    recorder.job_state("x", JobState.FAILED)
    recorder.flush()
    recorder.attempt_started("x", 1, _start("x", now))
    recorder.flush()
    assert attempts_of(store, "run-1", "x")[0]["start"] is None
    assert job_counts(store, "run-1")["queued"] == 0
