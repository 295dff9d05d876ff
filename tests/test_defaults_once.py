"""A bad value in `defaults:` is one problem at the defaults' line, not one per job (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

import executor
from executor.errors import GraphError
from executor.formats import load_workflow


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "workflow.yaml"
    path.write_text(text)
    with pytest.raises(GraphError) as info:
        load_workflow(path)
    return info.value.problems


def test_a_bad_default_is_one_problem_at_the_defaults_line(tmp_path: Path):
    jobs = "".join(f"  - {{name: j{i}, command: 'true'}}\n" for i in range(1000))
    problems = _problems(tmp_path, f"name: wide\ndefaults: {{cores: 0}}\njobs:\n{jobs}")
    assert problems == [
        f"{tmp_path / 'workflow.yaml'}:2: defaults: cores: 0 must be a whole number of at least 1"
    ]


def test_each_bad_default_is_named_once_and_a_job_that_sets_the_key_is_checked(tmp_path: Path):
    text = (
        "name: demo\n"
        "defaults:\n"
        "  memory: lots\n"
        "  retries: -1\n"
        "  walltime: 10m\n"
        "jobs:\n"
        "  - {name: a, command: 'true'}\n"
        "  - {name: b, command: 'true', retries: -2}\n"
        "  - {name: c, command: 'true', memory: 1GB}\n"
    )
    problems = _problems(tmp_path, text)
    source = tmp_path / "workflow.yaml"
    assert sorted(problems) == sorted(
        [
            f"{source}:3: defaults: memory: 'lots' is not a memory size; write e.g. '4GB', "
            "'512MB' or '2GiB'",
            f"{source}:3: defaults: retries: -1 must be a whole number of 0 or more",
            f"{source}:8: job 'b': retries: -2 must be a whole number of 0 or more",
        ]
    )


def test_good_defaults_still_reach_every_job(tmp_path: Path):
    path = tmp_path / "workflow.yaml"
    path.write_text(
        "defaults: {cores: 2, memory: 2GB, environment: {A: '1'}}\n"
        "jobs: [{name: a, command: 'true'}, {name: b, command: 'true', cores: 1}]\n"
    )
    graph = load_workflow(path)
    a = graph["a"]
    assert (a.cores, a.memory, dict(a.environment)) == (2, 2000, {"A": "1"})
    assert graph["b"].cores == 1


def test_the_api_reports_a_bad_default_once_and_str_lists_the_problems():
    wf = executor.Workflow("demo", defaults={"cores": "two"})
    for i in range(3):
        wf.shell(f"j{i}", "true")
    wf.shell("bad", "true", memory="lots")
    with pytest.raises(GraphError) as info:
        wf.build()
    assert len(info.value.problems) == 2
    text = str(info.value)
    assert text.startswith("2 problem(s) in workflow 'demo':")
    assert "workflow 'demo': defaults: cores: 'two' must be a whole number of at least 1" in text
    assert "job 'bad': memory: 'lots' is not a memory size" in text


def test_a_single_message_graph_error_prints_as_itself():
    assert str(GraphError("x.yaml: cannot read the workflow file")) == (
        "x.yaml: cannot read the workflow file"
    )
