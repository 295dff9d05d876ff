"""A crash in user code is the user's failure, not a lost pilot (issue 19, item 3).

A function job without a memory request runs inside the worker process; a segfault
or ``os._exit`` there kills the worker, which Parsl reports as ``WorkerLost``. The job
then runs once alone, in its own process: its own exit code or signal decides, with
its own ``retries``, and its bundle-mates run again without using anything. Real
pilots on the local site, real crashes.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

from helpers import run_pilot, write_workflow
from hypothesis import given
from hypothesis import strategies as st

from executor.policy.crashes import triage_lost_bundle
from executor.store import Store, locate

DONE = 'echo "$PILOT_JOB_NAME" >> {done}'


def _attempts(job: str) -> list[dict]:
    with Store(locate().db) as store:
        return store.query(
            "SELECT attempt, state, failure_class, exit_code, signal, message FROM attempts "
            "WHERE job = ? ORDER BY attempt",
            [job],
        )


def _job(job: str) -> dict:
    with Store(locate().db) as store:
        return store.query("SELECT state, attempts FROM jobs WHERE name = ?", [job])[0]


def _events(job: str) -> list[str]:
    with Store(locate().db) as store:
        rows = store.query("SELECT detail FROM events WHERE job = ? ORDER BY id", [job])
    return [row["detail"] or "" for row in rows]


def test_os_exit_inside_the_worker_fails_with_its_exit_code_after_one_run_alone(
    tmp_path: Path, pilot_home: Path
):
    jobs = [{"name": "crash", "function": "os:_exit", "args": [3], "retries": 0}]
    path = write_workflow(tmp_path, {"name": "crash", "jobs": jobs})

    result = run_pilot("submit", path, timeout=240)

    assert result.returncode == 1, result.stdout + result.stderr
    attempts = _attempts("crash")
    # Not four pilot_lost attempts: one lost worker, then the job's own failure.
    assert [a["failure_class"] for a in attempts] == ["pilot_lost", "exit_code"]
    assert attempts[1]["exit_code"] == 3
    assert "run alone in its own process" in attempts[1]["message"]
    assert _job("crash") == {"state": "failed", "attempts": 2}
    assert any("running it once alone" in detail for detail in _events("crash"))


def test_a_segfault_inside_the_worker_is_the_jobs_signal(tmp_path: Path, pilot_home: Path):
    # ctypes.string_at(0) reads address 0: SIGSEGV in whatever process runs it.
    jobs = [{"name": "segv", "function": "ctypes:string_at", "args": [0], "retries": 1}]
    path = write_workflow(tmp_path, {"name": "segv", "jobs": jobs})

    result = run_pilot("submit", path, timeout=240)

    assert result.returncode == 1, result.stdout + result.stderr
    attempts = _attempts("segv")
    # The lost worker is not counted; the job's own retry is (retries: 1).
    assert [a["failure_class"] for a in attempts] == ["pilot_lost", "signal", "signal"]
    assert {a["signal"] for a in attempts[1:]} == {signal.SIGSEGV.value}
    assert "SIGSEGV" in attempts[2]["message"]


def test_a_job_that_runs_alone_successfully_was_not_at_fault(tmp_path: Path, pilot_home: Path):
    # Crashes the worker on its first call only: a lost pilot, as far as anyone can tell.
    (tmp_path / "flaky.py").write_text(
        "import os, sys\n"
        "def once(marker):\n"
        "    if not os.path.exists(marker):\n"
        "        open(marker, 'w').close()\n"
        "        os._exit(9)\n"
        "    return sys.argv[0]\n"  # '-c' in a process of its own (python -c)
    )
    jobs = [{"name": "flaky", "function": "flaky:once", "args": [str(tmp_path / "marker")]}]
    path = write_workflow(tmp_path, {"name": "flaky", "defaults": {"retries": 0}, "jobs": jobs})

    result = run_pilot("submit", path, timeout=240)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [a["state"] for a in _attempts("flaky")] == ["failed", "succeeded"]
    with Store(locate().db) as store:
        value = store.query("SELECT result FROM attempts WHERE job = 'flaky' AND attempt = 2")
    assert json.loads(value[0]["result"]) == "-c"  # it ran alone, in its own process


def test_bundle_mates_of_a_crash_run_again_without_using_their_retries(
    tmp_path: Path, pilot_home: Path
):
    done = tmp_path / "done.log"
    jobs = [
        {"name": "before", "cluster": "c", "command": DONE.format(done=done)},
        {"name": "crash", "cluster": "c", "function": "os:_exit", "args": [3]},
        {"name": "after", "cluster": "c", "command": DONE.format(done=done)},
    ]
    path = write_workflow(tmp_path, {"name": "mates", "cluster_by": "cluster",
                                     "defaults": {"retries": 0}, "jobs": jobs})  # fmt: skip

    result = run_pilot("submit", path, timeout=240)

    assert result.returncode == 1, result.stdout + result.stderr
    # "before" finished before the crash and never ran again; "after" never started, so it
    # ran again although it has no retries, and is not blamed.
    assert Counter(done.read_text().split()) == {"before": 1, "after": 1}
    assert _job("after") == {"state": "succeeded", "attempts": 2}
    assert any("crashed the worker before this one started" in d for d in _events("after"))
    assert _job("crash")["state"] == "failed"


# -- the policy ------------------------------------------------------------------------


def test_a_lost_pilot_blames_no_job():
    triage = triage_lost_bundle(
        ["a", "b"], worker_lost=False, started=lambda n: n == "a", in_worker=lambda n: True
    )
    assert triage.lost == ("a", "b") and not triage.suspects and not triage.bystanders


def test_a_lost_worker_blames_the_in_worker_job_that_was_running():
    triage = triage_lost_bundle(
        ["a", "b", "c"], worker_lost=True, started=lambda n: n == "b", in_worker=lambda n: True
    )
    assert (triage.suspects, triage.bystanders, triage.lost) == (("b",), ("a", "c"), ())


def test_a_subprocess_job_cannot_have_crashed_its_worker():
    triage = triage_lost_bundle(
        ["a", "b"], worker_lost=True, started=lambda n: n == "a", in_worker=lambda n: False
    )
    assert triage.lost == ("a", "b") and not triage.suspects


def test_without_an_outcome_log_every_in_worker_job_is_a_suspect():
    triage = triage_lost_bundle(
        ["f", "s", "g"], worker_lost=True, started=None, in_worker=lambda n: n != "s"
    )
    assert (triage.suspects, triage.lost) == (("f", "g"), ("s",))


@given(
    jobs=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=8),
    worker_lost=st.booleans(),
    logged=st.booleans(),
)
def test_every_unreported_job_is_sorted_exactly_once(jobs, worker_lost, logged):
    names = [f"j{i}" for i in range(len(jobs))]
    started = {n for n, (s, _) in zip(names, jobs, strict=True) if s}
    in_worker = {n for n, (_, w) in zip(names, jobs, strict=True) if w}
    triage = triage_lost_bundle(
        names, worker_lost=worker_lost, in_worker=in_worker.__contains__,
        started=started.__contains__ if logged else None,
    )  # fmt: skip
    sorted_out = triage.suspects + triage.bystanders + triage.lost
    assert Counter(sorted_out) == Counter(names)
    # Only a job that ran inside the worker is ever blamed, and only for a lost worker.
    assert set(triage.suspects) <= in_worker
    assert worker_lost or not triage.suspects
    # A bystander never started.
    assert not (set(triage.bystanders) & started) or not logged
