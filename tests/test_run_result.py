"""`executor.run` returns each job's state and each function job's value (issue 19)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import executor
from executor.model.states import JobState, RunState


def test_run_result_has_job_states_and_function_values(pilot_home: Path):
    wf = executor.Workflow("values")
    parsed = wf.function("parse", "json:loads", args=['{"a": [1, 2], "b": null}'])
    wf.function("dump", "json:dumps", args=[[1, "x"]], after=[parsed])
    wf.shell("shell", "true")
    wf.shell("broken", "exit 3")
    wf.function("never", "json:dumps", args=[1], after=["broken"])

    result = executor.run(wf)

    assert isinstance(result, executor.RunResult)
    assert result.state is RunState.FAILED
    assert result.jobs == {
        "parse": JobState.SUCCEEDED,
        "dump": JobState.SUCCEEDED,
        "shell": JobState.SUCCEEDED,
        "broken": JobState.FAILED,
        "never": JobState.BLOCKED,
    }
    assert result.values == {"parse": {"a": [1, 2], "b": None}, "dump": '[1, "x"]'}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a machine with 2 cores")
def test_a_two_core_job_runs_on_the_local_site_without_a_site_file(pilot_home: Path):
    wf = executor.Workflow("wide")
    wf.function("wide", "json:dumps", args=[2], cores=2)

    result = executor.run(wf, site="local")

    assert result.state is RunState.SUCCEEDED
    assert result.values == {"wide": "2"}
