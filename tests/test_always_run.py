"""``always_run`` jobs run once their parents have ended, even when some of them failed.

The schedule's rules (pure), the field through the native format and a restart's saved
copy, its validation messages, and real ``pilot submit`` runs on the local site: one
where a job fails and the ``always_run`` job still runs (the run still fails), and one
cancelled with ``pilot cancel``, which runs nothing more, ``always_run`` jobs included.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from helpers import pilot_cmd, processes_with, run_pilot, status_json, wait_for, write_workflow

import executor
from executor.errors import GraphError
from executor.formats import load_workflow
from executor.formats.native import graph_from_dict, graph_from_saved, graph_to_dict
from executor.formats.saved import read_saved, saved_text
from executor.model.states import JobState
from executor.policy.schedule import Schedule
from executor.store import Store, locate
from executor.store.queries import job_states

S = JobState


def _graph(*jobs: dict) -> executor.JobGraph:
    wf = executor.Workflow("always")
    for job in jobs:
        fields = dict(job)
        wf.shell(fields.pop("name"), "true", **fields)
    return wf.build()


def _take(schedule: Schedule, *names: str) -> None:
    """Hand out exactly ``names`` (all ready), as the driver would."""
    taken = schedule.pop_ready(len(schedule.graph))
    assert sorted(taken) == sorted(names)


# -- the schedule -------------------------------------------------------------------


def test_a_failure_blocks_descendants_but_releases_the_always_run_job():
    graph = _graph(
        {"name": "a"},
        {"name": "b", "after": ["a"]},
        {"name": "c", "after": ["b"]},
        {"name": "sibling", "after": ["a"]},
        {"name": "x"},
        {"name": "final", "after": ["c", "x"], "always_run": True},
        {"name": "post", "after": ["final"]},
    )
    schedule = Schedule(graph)
    _take(schedule, "a", "x")

    blocked = schedule.fail("a")

    assert sorted(blocked) == ["b", "c", "sibling"]
    # Its other parent still runs: ended parents are not enough, all must have ended.
    assert schedule.state["final"] is S.PENDING and schedule.take_released() == []
    assert schedule.succeed("x") == ["final"]
    _take(schedule, "final")
    assert schedule.succeed("final") == ["post"]  # below it, jobs wait for it alone
    _take(schedule, "post")
    schedule.succeed("post")
    assert schedule.finished
    assert schedule.state == {
        "a": S.FAILED, "b": S.BLOCKED, "c": S.BLOCKED, "sibling": S.BLOCKED,
        "x": S.SUCCEEDED, "final": S.SUCCEEDED, "post": S.SUCCEEDED,
    }  # fmt: skip


def test_the_last_parent_failing_makes_it_ready_through_take_released():
    graph = _graph(
        {"name": "ok"},
        {"name": "bad"},
        {"name": "final", "after": ["ok", "bad"], "always_run": True},
        {"name": "post", "after": ["final"]},
    )
    schedule = Schedule(graph)
    _take(schedule, "ok", "bad")
    assert schedule.succeed("ok") == []

    assert schedule.fail("bad") == []  # neither final nor what waits for it is blocked

    assert schedule.take_released() == ["final"]
    assert schedule.take_released() == []  # handed over once
    assert schedule.state["final"] is S.READY and schedule.state["post"] is S.PENDING
    assert schedule.unfinished == 2
    _take(schedule, "final")
    schedule.fail("final")  # it may fail too: then what follows it is blocked
    assert schedule.state["post"] is S.BLOCKED and schedule.finished


def test_blocking_stops_at_the_always_run_job_but_not_around_it():
    # bad -> mid -> join, and bad -> final(always_run) -> join: join has a blocked parent.
    graph = _graph(
        {"name": "bad"},
        {"name": "mid", "after": ["bad"]},
        {"name": "final", "after": ["bad"], "always_run": True},
        {"name": "join", "after": ["mid", "final"]},
        {"name": "deep", "after": ["mid"]},
    )
    schedule = Schedule(graph)
    _take(schedule, "bad")

    blocked = schedule.fail("bad")

    assert sorted(blocked) == ["deep", "join", "mid"]
    assert schedule.take_released() == ["final"]
    _take(schedule, "final")
    assert schedule.succeed("final") == []  # join stays blocked
    assert schedule.finished


def test_an_always_run_job_below_a_blocked_one_counts_it_as_ended():
    graph = _graph(
        {"name": "bad"},
        {"name": "mid", "after": ["bad"]},
        {"name": "other"},
        {"name": "final", "after": ["mid", "other"], "always_run": True},
    )
    schedule = Schedule(graph)
    _take(schedule, "bad", "other")
    assert schedule.fail("bad") == ["mid"]
    assert schedule.take_released() == []  # other has not ended
    schedule.fail("other")
    assert schedule.take_released() == ["final"]


def test_without_failures_it_is_an_ordinary_job():
    graph = _graph(
        {"name": "a"},
        {"name": "final", "after": ["a"], "always_run": True},
    )
    schedule = Schedule(graph)
    _take(schedule, "a")
    assert schedule.succeed("a") == ["final"]
    assert schedule.take_released() == []


def test_a_cancel_cancels_an_always_run_job_that_has_not_started():
    graph = _graph(
        {"name": "long"},
        {"name": "final", "after": ["long"], "always_run": True},
    )
    schedule = Schedule(graph)
    _take(schedule, "long")

    assert schedule.cancel_unstarted() == ["final"]
    schedule.cancel("long")  # the running job, stopped by the cancel

    assert schedule.take_released() == []
    assert schedule.state == {"long": S.CANCELLED, "final": S.CANCELLED}
    assert schedule.finished


def test_a_throttled_always_run_job_is_released_within_its_label_limit():
    wf = executor.Workflow("always", max_running={"final": 1})
    wf.shell("bad", "false")
    wf.shell("final-1", "true", label="final", after=["bad"], always_run=True)
    wf.shell("final-2", "true", label="final", after=["bad"], always_run=True)
    schedule = Schedule(wf.build())
    _take(schedule, "bad")

    schedule.fail("bad")

    assert sorted(schedule.take_released()) == ["final-1", "final-2"]
    assert schedule.ready_count == 1 and schedule.held_count == 1


# -- the format, a restart's copy, validation ---------------------------------------------


def test_the_flag_survives_the_saved_copy_and_a_restart(tmp_path: Path):
    graph = _graph(
        {"name": "a"},
        {"name": "b", "after": ["a"]},
        {"name": "final", "after": ["b"], "always_run": True},
    )
    data = graph_to_dict(graph)
    entries = {job["name"]: job for job in data["jobs"]}
    assert entries["final"]["always_run"] is True
    assert "always_run" not in entries["a"]  # only what differs from the default
    copy = tmp_path / "workflow.json"
    copy.write_text(saved_text(data))

    # A restart rebuilds only the unfinished jobs (a succeeded).
    keep = {"b", "final"}
    restarted = graph_from_saved(read_saved(copy, keep=keep), source=str(copy), keep=keep)
    assert restarted["final"].always_run and not restarted["b"].always_run
    schedule = Schedule(restarted)
    _take(schedule, "b")
    schedule.fail("b")
    assert schedule.take_released() == ["final"]
    # And the native format reads its own output back the same.
    assert graph_from_dict(json.loads(copy.read_text()))["final"].always_run is True


def test_a_wrong_value_names_the_file_line_job_and_field(tmp_path: Path):
    path = write_workflow(tmp_path, {
        "name": "bad-flag",
        "jobs": [
            {"name": "a", "command": "true"},
            {"name": "final", "command": "true", "after": ["a"], "always_run": "yes"},
        ],
    })  # fmt: skip

    with pytest.raises(GraphError) as caught:
        load_workflow(path)

    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:")  # the line of the job
    assert "job 'final': always_run: 'yes' must be true or false" in problem


def test_always_run_is_refused_as_a_default_saying_where_it_goes(tmp_path: Path):
    path = write_workflow(tmp_path, {
        "name": "everything-always",
        "defaults": {"always_run": True},
        "jobs": [{"name": "a", "command": "true"}],
    })  # fmt: skip

    with pytest.raises(GraphError) as caught:
        load_workflow(path)

    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:")
    assert ": defaults: always_run: cannot be a default" in problem
    assert "set `always_run: true` on the jobs" in problem


def test_validate_lists_the_always_run_jobs(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "listed",
        "jobs": [
            {"name": "a", "command": "true"},
            {"name": "final", "command": "true", "after": ["a"], "always_run": True},
        ],
    })  # fmt: skip

    as_json = run_pilot("validate", path, "--json")
    text = run_pilot("validate", path)

    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["always_run"] == ["final"]
    assert "always run, even after failures: final" in text.stdout


# -- real runs ----------------------------------------------------------------------------


def test_a_run_with_a_failure_still_runs_the_always_run_job_and_fails(
    tmp_path: Path, pilot_home: Path
):
    # Each job that runs appends its name. `bad` fails after `ok` succeeded (its parent), so
    # final's parents have all ended when `bad` fails: the failure itself releases it.
    log = tmp_path / "ran.log"
    path = write_workflow(tmp_path, {
        "name": "finally",
        "jobs": [
            {"name": "ok", "command": f"echo ok >> {log}"},
            {"name": "bad", "command": f"echo bad >> {log}; exit 3", "after": ["ok"]},
            {"name": "mid", "command": f"echo mid >> {log}", "after": ["bad"]},
            {"name": "final", "command": f"echo final >> {log}", "after": ["mid", "ok"],
             "always_run": True},
            {"name": "post", "command": f"echo post >> {log}", "after": ["final"]},
        ],
    })  # fmt: skip

    result = run_pilot("submit", path, timeout=240)

    assert result.returncode == 1, result.stdout + result.stderr  # the run failed
    run_id = result.stdout.splitlines()[0].split()[1]
    # Once its parents had ended (ok succeeded, mid blocked), final ran; post after it.
    assert log.read_text().split() == ["ok", "bad", "final", "post"]
    status = status_json(run_id)
    assert status["state"] == "failed"
    assert {k: v for k, v in status["jobs"].items() if v} == {
        "succeeded": 3, "failed": 1, "blocked": 1,
    }  # fmt: skip
    with Store(locate().db) as store:
        assert job_states(store, run_id) == {
            "ok": "succeeded", "bad": "failed", "mid": "blocked",
            "final": "succeeded", "post": "succeeded",
        }  # fmt: skip
        [detail] = store.query(
            "SELECT detail FROM events WHERE run_id = ? AND job = 'final' AND state = 'ready'",
            [run_id],
        )
    assert detail["detail"] == "always_run, although bad failed"


def test_pilot_cancel_does_not_run_the_always_run_job(tmp_path: Path, pilot_home: Path):
    marker = f"always-{uuid.uuid4().hex}"
    log = tmp_path / "ran.log"
    path = write_workflow(tmp_path, {
        "name": "cancelled",
        "jobs": [
            {"name": "long", "command": f"exec -a {marker} sleep 300"},
            {"name": "final", "command": f"echo final >> {log}", "after": ["long"],
             "always_run": True},
        ],
    })  # fmt: skip
    with subprocess.Popen(pilot_cmd("submit", path), stdout=subprocess.PIPE, text=True) as driver:
        run_id = driver.stdout.readline().split()[1]
        wait_for(lambda: processes_with(marker), timeout=120, what="the long job to run")

        result = run_pilot("cancel", run_id)

        assert result.returncode == 0, result.stderr
        assert driver.wait(timeout=120) == 130
    status = status_json(run_id)
    assert status["state"] == "cancelled"
    assert status["jobs"]["cancelled"] == 2
    assert not log.exists()
