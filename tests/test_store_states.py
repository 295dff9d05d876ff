"""The legal job-state moves (executor.model.states), enforced by the store for every writer."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from seed import seed_run

from executor.errors import StoreError
from executor.model.states import REDEFINED_FROM, JobState, RunState, can_move, legal_sources
from executor.store import Store
from executor.store.queries import get_run, job_states
from executor.store.recorder import (
    RunRecorder,
    abandon_unfinished,
    claim_for_restart,
    recover_outcomes,
)
from executor.store.revisions import Revision, revise_jobs

STATES = list(JobState)
LEGAL = [(old, new) for old in STATES for new in STATES if can_move(old, new)]
ILLEGAL = [(old, new) for old in STATES for new in STATES if not can_move(old, new)]
NOBODY = {"host": "elsewhere.invalid", "pid": 1, "pid_started": 0.0}


def _ids(pair: tuple[JobState, JobState]) -> str:
    return f"{pair[0]}->{pair[1]}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "monitoring.db") as opened:
        yield opened


def _run(store: Store, tmp_path: Path, states: dict[str, JobState], **kwargs) -> None:
    """Run ``run-1`` with a job in each of ``states``, reached by legal moves."""
    jobs = [{"name": name, "label": "x", "state": state.value} for name, state in states.items()]
    seed_run(store, tmp_path / "runs", "run-1", jobs=jobs, **kwargs)


def _events(store: Store) -> int:
    return store.query("SELECT count(*) AS n FROM events")[0]["n"]


# -- the table ---------------------------------------------------------------------------
@pytest.mark.parametrize("target", STATES, ids=str)
def test_legal_sources_are_the_tables_predecessors(target: JobState) -> None:
    assert legal_sources(target) == tuple(s.value for s in STATES if can_move(s, target))


def test_only_unrecorded_moves_widen_the_sources_and_only_a_revision_leaves_succeeded() -> None:
    recoverable = legal_sources(JobState.SUCCEEDED, through=(JobState.READY, JobState.RUNNING))
    assert recoverable == ("pending", "ready", "running")
    assert all("succeeded" not in legal_sources(s) for s in STATES)
    assert "succeeded" in REDEFINED_FROM and "pending" not in REDEFINED_FROM


# -- the driver's recorder -----------------------------------------------------------------
@pytest.mark.parametrize(("old", "new"), LEGAL, ids=_ids)
def test_the_recorder_records_every_legal_move(
    store: Store, tmp_path: Path, old: JobState, new: JobState
) -> None:
    _run(store, tmp_path, {"a": old}, state=RunState.RUNNING)
    recorder = RunRecorder(store, "run-1")
    recorder.job_state("a", new)
    recorder.flush()
    assert job_states(store, "run-1") == {"a": new.value}


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=_ids)
def test_the_recorder_refuses_every_illegal_move_and_writes_nothing_of_its_flush(
    store: Store, tmp_path: Path, old: JobState, new: JobState
) -> None:
    _run(store, tmp_path, {"a": old, "b": JobState.PENDING}, state=RunState.RUNNING)
    before = (job_states(store, "run-1"), get_run(store, "run-1"), _events(store))
    recorder = RunRecorder(store, "run-1")
    recorder.job_state("b", JobState.READY)  # legal, but in the same flush
    recorder.attempt_submitted("b", 1, time.time())
    recorder.job_state("a", new)
    with pytest.raises(StoreError, match=f"illegal move of job 'a' in run run-1: {old} -> {new}"):
        recorder.flush()
    assert (job_states(store, "run-1"), get_run(store, "run-1"), _events(store)) == before
    # (A seeded running job has its started attempt: nothing of b's.)
    assert store.query("SELECT * FROM attempts WHERE job = 'b'") == []
    assert recorder.pending  # kept queued, as after any failed write


def test_a_batch_checks_each_queued_move_and_the_first_against_the_store(
    store: Store, tmp_path: Path
) -> None:
    _run(store, tmp_path, {"a": JobState.PENDING, "b": JobState.SUCCEEDED})
    recorder = RunRecorder(store, "run-1")
    # One flush may carry a job through several moves; only the first meets the store.
    for state in (JobState.READY, JobState.RUNNING, JobState.READY, JobState.RUNNING):
        recorder.job_state("a", state, attempts=2)
    with pytest.raises(StoreError, match="'a' in run run-1: running -> blocked"):
        recorder.job_state("a", JobState.BLOCKED)
    recorder.job_state("a", JobState.SUCCEEDED)
    recorder.flush()
    assert job_states(store, "run-1") == {"a": "succeeded", "b": "succeeded"}
    assert store.query("SELECT attempts FROM jobs WHERE name = 'a'") == [{"attempts": 2}]
    # A succeeded job never runs again, however the batch that says so goes on.
    recorder.job_state("b", JobState.RUNNING)
    recorder.job_state("b", JobState.SUCCEEDED)
    with pytest.raises(StoreError, match="succeeded -> running .* only from ready"):
        recorder.flush()


def test_the_recorder_refuses_a_job_the_run_does_not_have(store: Store, tmp_path: Path) -> None:
    _run(store, tmp_path, {"a": JobState.PENDING})
    recorder = RunRecorder(store, "run-1")
    recorder.job_state("a", JobState.READY)
    recorder.job_state("ghost", JobState.READY)
    with pytest.raises(StoreError, match="no job 'ghost' in run run-1"):
        recorder.flush()
    assert job_states(store, "run-1") == {"a": "pending"}


# -- the bulk writers: restart, cancel, recovery, revision -------------------------------------
@pytest.mark.parametrize("old", STATES, ids=str)
def test_a_restart_moves_to_pending_exactly_the_jobs_that_may(
    store: Store, tmp_path: Path, old: JobState
) -> None:
    _run(store, tmp_path, {"a": old}, state=RunState.FAILED)
    to_run = claim_for_restart(store, "run-1", NOBODY)
    moves = old.value in legal_sources(JobState.PENDING) or old is JobState.PENDING
    assert job_states(store, "run-1") == {"a": "pending" if moves else old.value}
    assert to_run == (["a"] if moves else [])
    assert (old is JobState.SUCCEEDED) is not moves  # succeeded -> pending is refused


@pytest.mark.parametrize("old", STATES, ids=str)
def test_abandoning_a_run_cancels_exactly_the_jobs_that_may_be(
    store: Store, tmp_path: Path, old: JobState
) -> None:
    _run(store, tmp_path, {"a": old}, state=RunState.RUNNING)
    abandon_unfinished(store, "run-1", RunState.CANCELLED, "cancelled after its driver was lost")
    moves = old.value in legal_sources(JobState.CANCELLED)
    assert job_states(store, "run-1") == {"a": "cancelled" if moves else old.value}
    assert moves is (old in (JobState.PENDING, JobState.READY, JobState.RUNNING))
    assert get_run(store, "run-1")["state"] == "cancelled"


@pytest.mark.parametrize("old", STATES, ids=str)
def test_recovery_marks_succeeded_only_jobs_a_dead_driver_may_have_run(
    store: Store, tmp_path: Path, old: JobState, caplog: pytest.LogCaptureFixture
) -> None:
    _run(store, tmp_path, {"a": old}, state=RunState.RUNNING)
    record = {"job": "a", "attempt": 1, "state": "succeeded", "start": 1.0, "end": 2.0}
    with caplog.at_level(logging.WARNING, logger="executor.store.recorder"):
        recovered = recover_outcomes(store, "run-1", [record])
    attempts = store.query("SELECT state FROM attempts WHERE job = 'a'")
    if old in (JobState.PENDING, JobState.READY, JobState.RUNNING):
        assert recovered == 1 and job_states(store, "run-1") == {"a": "succeeded"}
        assert attempts == [{"state": "succeeded"}]
    elif old is JobState.SUCCEEDED:  # already known: the same outcome twice
        assert recovered == 0 and job_states(store, "run-1") == {"a": "succeeded"}
    else:  # refused, attempt and all; a restart runs the job again
        assert recovered == 0 and job_states(store, "run-1") == {"a": old.value}
        assert attempts == []
        assert f"{old} -> succeeded is not a legal move" in caplog.text


def test_a_revision_redefines_only_the_jobs_it_reruns(store: Store, tmp_path: Path) -> None:
    states = {f"old-{s}": s for s in STATES} | {"kept": JobState.SUCCEEDED, "gone": JobState.FAILED}
    _run(store, tmp_path, states, state=RunState.FAILED)
    rerun = {f"old-{s}" for s in STATES} | {"new"}
    names = [*states, "new"]
    names.remove("gone")
    revision = Revision(
        jobs=[(name, "x", f"echo {name}") for name in names],
        added={"new"}, removed={"gone"}, rerun=rerun,
        workflow_hash="1" * 64, workflow_source="/w.yaml", workflow_copy="/w.2.json",
    )  # fmt: skip
    revise_jobs(store, get_run(store, "run-1"), revision)
    expected = dict.fromkeys(rerun, "pending") | {"kept": "succeeded"}
    assert job_states(store, "run-1") == expected
    run = get_run(store, "run-1")
    assert (run["n_jobs"], run["workflow_copy"]) == (len(names), "/w.2.json")
    # A restart after it reruns what the revision reset, never the unchanged success.
    assert sorted(claim_for_restart(store, "run-1", NOBODY)) == sorted(rerun)
