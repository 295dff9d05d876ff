"""Reading workflow files: valid files load, and every mistake is reported precisely.

Every validation message must name the file (and line for YAML), the job and the field,
and say how to fix it; all problems of a file are reported together.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from executor.errors import GraphError
from executor.formats import graph_from_dict, graph_to_dict, load_workflow
from executor.formats.native import graph_from_saved
from executor.formats.yamlio import read_yaml
from executor.model.graph import JobGraph

VALID_YAML = """\
name: demo
description: a small pipeline
defaults:
  cores: 2
  memory: 2GB
  walltime: 10m
  retries: 1
  environment: {OMP_NUM_THREADS: "2", SHARED: from-defaults}
jobs:
  - name: isr-1
    command: python -m mypkg.isr --visit 1
    memory: 4GB
  - name: isr-2
    command: [python, -m, mypkg.isr, --visit, "2"]
    environment: {SHARED: from-job, EXTRA: "x"}
  - name: sum
    label: summary
    function: mypkg.stats:summarize
    args: [1, two]
    kwargs: {scale: 0.5}
    after: [isr-1, isr-2]
    cores: 1
    walltime: 01:30:00
    retries: 0
"""


def write(tmp_path: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(GraphError) as info:
        load_workflow(path)
    return info.value.problems


def job_fields(graph: JobGraph) -> list[dict]:
    return [dataclasses.asdict(job) for job in graph]


def one_problem(problems: list[str], *needles: str) -> str:
    """The single problem that contains every needle (and fail clearly if not exactly one)."""
    found = [p for p in problems if all(n in p for n in needles)]
    assert len(found) == 1, f"expected one problem with {needles}, got {problems}"
    return found[0]


# -- valid files -----------------------------------------------------------------------


def test_valid_yaml_loads_every_field(tmp_path):
    graph = load_workflow(write(tmp_path, VALID_YAML))
    assert graph.name == "demo"
    assert graph.names == ["isr-1", "isr-2", "sum"]
    assert graph.source == str(tmp_path / "workflow.yaml")
    isr1, isr2, total = graph["isr-1"], graph["isr-2"], graph["sum"]

    assert isr1.command == "python -m mypkg.isr --visit 1"
    assert isr1.kind == "shell"
    assert isr1.memory == 4000  # the job overrides the default
    assert isr1.cores == 2 and isr1.walltime == 600 and isr1.retries == 1  # defaults

    assert isr2.command == ("python", "-m", "mypkg.isr", "--visit", "2")
    assert isr2.memory == 2000

    assert total.kind == "function"
    assert total.function == "mypkg.stats:summarize"
    assert total.args == (1, "two")
    assert dict(total.kwargs) == {"scale": 0.5}
    assert total.after == ("isr-1", "isr-2")
    assert total.label == "summary"
    assert total.cores == 1 and total.retries == 0
    assert total.walltime == 5400


def test_environment_merges_defaults_and_job(tmp_path):
    graph = load_workflow(write(tmp_path, VALID_YAML))
    assert dict(graph["isr-1"].environment) == {"OMP_NUM_THREADS": "2", "SHARED": "from-defaults"}
    assert dict(graph["isr-2"].environment) == {
        "OMP_NUM_THREADS": "2",
        "SHARED": "from-job",
        "EXTRA": "x",
    }


def test_default_label_drops_trailing_index(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: isr-12, command: "true"}
          - {name: calib_3, command: "true"}
          - {name: coadd.7, command: "true"}
          - {name: step42, command: "true"}
          - {name: "2024", command: "true"}
          - {name: plain, command: "true"}
          - {name: isr-13, label: custom, command: "true"}
        """,
    )
    graph = load_workflow(path)
    labels = [job.label for job in graph]
    assert labels == ["isr", "calib", "coadd", "step", "2024", "plain", "custom"]
    assert graph.labels() == dict.fromkeys(labels, 1)


def test_label_in_defaults_applies_to_every_job(tmp_path):
    path = write(
        tmp_path,
        """\
        defaults: {label: batch}
        jobs:
          - {name: a-1, command: "true"}
          - {name: b-2, command: "true", label: own}
        """,
    )
    graph = load_workflow(path)
    assert [job.label for job in graph] == ["batch", "own"]


def test_name_defaults_to_file_stem(tmp_path):
    graph = load_workflow(write(tmp_path, "jobs: [{name: a, command: 'true'}]\n", "night.yml"))
    assert graph.name == "night"


def test_json_file_loads_like_yaml(tmp_path):
    data = yaml.safe_load(VALID_YAML.replace("01:30:00", '"01:30:00"'))
    json_path = write(tmp_path, json.dumps(data, indent=2), "workflow.json")
    yaml_path = write(tmp_path, VALID_YAML)
    from_json, from_yaml = load_workflow(json_path), load_workflow(yaml_path)
    assert job_fields(from_json) == job_fields(from_yaml)
    assert from_json.workdir == from_yaml.workdir == tmp_path.resolve()


def test_default_workdir_is_the_files_directory(tmp_path, monkeypatch):
    sub = tmp_path / "project"
    sub.mkdir()
    path = write(sub, "jobs: [{name: a, command: 'true'}]\n")
    monkeypatch.chdir(tmp_path)
    assert load_workflow("project/workflow.yaml").workdir == sub.resolve()
    assert load_workflow(path).workdir == sub.resolve()


def test_relative_workdir_resolves_against_the_files_directory(tmp_path, monkeypatch):
    sub = tmp_path / "project"
    sub.mkdir()
    write(sub, "workdir: ../data/out\njobs: [{name: a, command: 'true'}]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    graph = load_workflow(Path("..") / "project" / "workflow.yaml")
    assert graph.workdir == (tmp_path / "data" / "out").resolve()


def test_absolute_workdir_is_kept(tmp_path):
    target = tmp_path / "abs"
    graph = load_workflow(write(tmp_path, f"workdir: {target}\njobs: [{{name: a, command: x}}]\n"))
    assert graph.workdir == target.resolve()


# -- the YAML 1.1 base-60 trap -----------------------------------------------------------


def test_clock_walltimes_stay_text_in_yaml(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: a, command: "true", walltime: 2:00:00}
          - {name: b, command: "true", walltime: 30:00}
          - {name: c, command: "true", walltime: 1:30}
          - {name: d, command: "true", walltime: 1-00:00:00}
        """,
    )
    raw = read_yaml(path)
    assert [job["walltime"] for job in raw["jobs"]] == ["2:00:00", "30:00", "1:30", "1-00:00:00"]
    graph = load_workflow(path)
    assert graph["a"].walltime == 7200
    assert graph["b"].walltime == 1800  # Slurm M:S, 30 minutes
    assert graph["c"].walltime == 90
    assert graph["d"].walltime == 86400


def test_clock_resolver_does_not_change_plain_yaml():
    # pilot's loader copies the resolver table; yaml.safe_load keeps YAML 1.1 behaviour.
    assert yaml.safe_load("t: 2:00:00") == {"t": 7200}
    assert yaml.safe_load("n: 12") == {"n": 12}


def test_other_scalars_keep_their_types(tmp_path):
    path = write(
        tmp_path,
        "jobs: [{name: a, command: 'true', cores: 4, retries: 2, memory: 1024, walltime: 90}]\n",
    )
    job = load_workflow(path)["a"]
    assert (job.cores, job.retries, job.memory, job.walltime) == (4, 2, 1024, 90.0)


# -- errors: each names file, job and field, and says how to fix it ------------------------


def test_duplicate_names(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: a, command: "true"}
          - {name: b, command: "true"}
          - {name: a, command: "true"}
        """,
    )
    problem = one_problem(problems_of(path), "duplicate")
    assert problem == (
        f"{path}:4: job 'a': name: duplicate job name (also job #1); job names must be unique"
    )


def test_duplicate_names_count_jobs_from_the_file(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: a, command: "true"}
          - {name: a, command: "true"}
          - {name: b, command: "true"}
          - {name: b, command: "true"}
        """,
    )
    problem = one_problem(problems_of(path), "job 'b'", "duplicate")
    assert "(also job #3)" in problem


def test_unknown_after_suggests_the_closest_name(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: calibrate, command: "true"}
          - {name: sum, command: "true", after: [calibrte]}
          - {name: other, command: "true", after: [zzz]}
        """,
    )
    problems = problems_of(path)
    assert one_problem(problems, "calibrte") == (
        f"{path}:3: job 'sum': after: no job named 'calibrte'; did you mean 'calibrate'?"
    )
    assert one_problem(problems, "zzz") == f"{path}:4: job 'other': after: no job named 'zzz'"


def test_after_itself(tmp_path):
    path = write(tmp_path, "jobs: [{name: a, command: 'true', after: [a]}]\n")
    assert one_problem(problems_of(path), "after") == (
        f"{path}:1: job 'a': after: a job cannot run after itself"
    )


def test_after_as_a_single_string(tmp_path):
    path = write(
        tmp_path,
        "jobs: [{name: a, command: 'true'}, {name: b, command: 'true', after: a}]\n",
    )
    assert load_workflow(path)["b"].after == ("a",)


def test_cycle_is_printed(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: a, command: "true", after: [c]}
          - {name: b, command: "true", after: [a]}
          - {name: c, command: "true", after: [b]}
          - {name: d, command: "true", after: [a]}
        """,
    )
    with pytest.raises(GraphError) as info:
        load_workflow(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "the graph has a cycle: a -> b -> c -> a" in message
    assert "remove one of these 'after' edges" in message
    assert info.value.problems == [message]


def test_cycle_not_through_the_first_job(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - {name: start, command: "true"}
          - {name: x, command: "true", after: [start, z]}
          - {name: y, command: "true", after: [x]}
          - {name: z, command: "true", after: [y]}
        """,
    )
    with pytest.raises(GraphError, match="cycle: x -> y -> z -> x;"):
        load_workflow(path)


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "name: x\ndefualts: {}\njobs: [{name: a, command: 'true'}]\n")
    assert problems_of(path) == [f"{path}: unknown key 'defualts'; did you mean 'defaults'?"]


def test_unknown_top_level_key_without_a_close_match_lists_valid_keys(tmp_path):
    path = write(tmp_path, "zzzz: 1\njobs: [{name: a, command: 'true'}]\n")
    assert problems_of(path) == [
        f"{path}: unknown key 'zzzz'; valid keys: name, description, defaults, workdir, jobs, "
        "cluster_by, cluster_max, max_running, code, code_limit"
    ]


def test_unknown_key_in_defaults(tmp_path):
    path = write(tmp_path, "defaults: {walltme: 5m}\njobs: [{name: a, command: 'true'}]\n")
    assert problems_of(path) == [
        f"{path}:1: defaults: unknown key 'walltme'; did you mean 'walltime'?"
    ]


def test_unknown_key_in_a_job(tmp_path):
    path = write(
        tmp_path,
        """\
        jobs:
          - name: a
            command: "true"
            memroy: 4GB
        """,
    )
    assert problems_of(path) == [f"{path}:2: job 'a': unknown key 'memroy'; did you mean 'memory'?"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("memory", "lots", "'lots' is not a memory size; write e.g. '4GB', '512MB' or '2GiB'"),
        ("memory", "-1GB", "'-1GB' is not a memory size; write e.g. '4GB', '512MB' or '2GiB'"),
        ("memory", "0", "'0' must be positive; write e.g. '4GB' or '512MB'"),
        (
            "walltime",
            "soon",
            "'soon' is not a duration; write e.g. '30m', '2h', '90s' or '01:30:00'",
        ),
        ("walltime", "0m", "'0m' must be positive; write e.g. '30m', '2h' or '01:30:00'"),
    ],
)
def test_bad_memory_and_walltime(tmp_path, field, value, expected):
    path = write(tmp_path, f"jobs:\n  - name: a\n    command: 'true'\n    {field}: '{value}'\n")
    assert problems_of(path) == [f"{path}:2: job 'a': {field}: {expected}"]


def test_bad_memory_in_defaults_is_reported_once_at_the_defaults(tmp_path):
    path = write(
        tmp_path,
        "defaults: {memory: huge}\njobs: [{name: a, command: x}, {name: b, command: x}]\n",
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:1: defaults: memory: 'huge' is not a memory size")


@pytest.mark.parametrize(
    ("body", "which"),
    [
        ("label: x", "neither"),
        ("command: 'true'\n    function: 'm:f'", "both"),
    ],
)
def test_command_and_function_exactly_one(tmp_path, body, which):
    path = write(tmp_path, f"jobs:\n  - name: a\n    {body}\n")
    assert one_problem(problems_of(path), "command/function") == (
        f"{path}:2: job 'a': command/function: job has {which} of 'command' and 'function'; "
        "give exactly one"
    )


def test_bad_function_reference(tmp_path):
    path = write(tmp_path, "jobs: [{name: a, function: not-a-function}]\n")
    assert problems_of(path) == [
        f"{path}:1: job 'a': function: 'not-a-function' must look like 'package.module:callable'"
    ]


def test_environment_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "jobs: [{name: a, command: x, environment: [A=1]}]\n")
    assert problems_of(path) == [
        f"{path}:1: job 'a': environment: must be a mapping such as {{OMP_NUM_THREADS: '4'}}"
    ]


def test_environment_values_must_be_strings(tmp_path):
    path = write(tmp_path, "jobs: [{name: a, command: x, environment: {N: 4}}]\n")
    assert problems_of(path) == [f"{path}:1: job 'a': environment: N must be a string; quote it"]


def test_missing_jobs(tmp_path):
    path = write(tmp_path, "name: empty\n")
    assert problems_of(path) == [f"{path}: jobs: must be a non-empty list of jobs"]


def test_job_without_a_name(tmp_path):
    path = write(tmp_path, "jobs:\n  - {name: a, command: x}\n  - {command: y}\n")
    assert problems_of(path) == [f"{path}:3: job #2: name: every job needs a 'name' (a string)"]


def test_all_problems_are_reported_together(tmp_path):
    path = write(
        tmp_path,
        """\
        name: many
        jbos: []
        defaults: {cores: 1, walltme: 5m}
        jobs:
          - name: a
            command: "true"
            memroy: 4GB
          - name: b
            command: "true"
            memory: lots
            walltime: never
          - name: c
            after: [a, bb]
          - name: a
            command: "true"
        """,
    )
    with pytest.raises(GraphError) as info:
        load_workflow(path)
    problems = info.value.problems
    assert info.value.message == f"{len(problems)} problem(s) in {path}"
    assert str(info.value).startswith(f"{info.value.message}:\n  - ")  # and lists them
    expected = [
        f"{path}: unknown key 'jbos'; did you mean 'jobs'?",
        f"{path}:3: defaults: unknown key 'walltme'; did you mean 'walltime'?",
        f"{path}:5: job 'a': unknown key 'memroy'; did you mean 'memory'?",
        f"{path}:8: job 'b': memory: 'lots' is not a memory size",
        f"{path}:8: job 'b': walltime: 'never' is not a duration",
        f"{path}:12: job 'c': command/function: job has neither",
        f"{path}:14: job 'a': name: duplicate job name (also job #1)",
        f"{path}:12: job 'c': after: no job named 'bb'; did you mean 'b'?",
    ]
    for text in expected:
        one_problem(problems, text)
    assert len(problems) == len(expected)


def test_all_problems_reported_together_in_json(tmp_path):
    data = {
        "jobs": [
            {"name": "a", "command": "x", "cores": 0},
            {"name": "b", "command": "x", "after": ["c"], "retries": -1},
        ]
    }
    path = write(tmp_path, json.dumps(data), "wf.json")
    problems = problems_of(path)
    assert problems == [
        f"{path} (job #1): job 'a': cores: 0 must be a whole number of at least 1",
        f"{path} (job #2): job 'b': retries: -1 must be a whole number of 0 or more",
        f"{path} (job #2): job 'b': after: no job named 'c'",
    ]


def test_yaml_syntax_error_reports_the_line(tmp_path):
    path = write(
        tmp_path,
        """\
        name: broken
        jobs:
          - name: a
            command: [python, -c
          - name: b
        """,
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: YAML syntax error at line 5, column ")
    assert problem.endswith("; check indentation and quoting")


def test_yaml_bad_indentation_reports_the_line(tmp_path):
    path = write(tmp_path, "jobs:\n  - name: a\n    command: x\n   cores: 2\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: YAML syntax error at line 4, column ")


def test_yaml_duplicate_key_reports_the_line(tmp_path):
    path = write(tmp_path, "jobs:\n  - name: a\n    command: x\n    command: y\n")
    assert problems_of(path) == [
        f"{path}: line 4: key 'command' appears twice in one mapping; keep one"
    ]


def test_json_syntax_error_reports_the_line(tmp_path):
    path = write(
        tmp_path, '{\n  "name": "x",\n  "jobs": [\n    {"name": "a",, }\n  ]\n}\n', "w.json"
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: JSON syntax error at line 4, column ")


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert problems_of(path) == [
        f"{path}: a workflow must be a mapping with 'name' and 'jobs', not list"
    ]


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(GraphError, match="no such workflow file"):
        load_workflow(tmp_path / "nope.yaml")
    path = write(tmp_path, "jobs: []\n", "workflow.toml")
    with pytest.raises(GraphError, match=r"unknown workflow format '\.toml'; use \.yaml, \.yml"):
        load_workflow(path)


# -- the native dict form round-trips ----------------------------------------------------


def test_graph_to_dict_round_trip_preserves_every_field(tmp_path):
    graph = load_workflow(write(tmp_path, VALID_YAML))
    data = graph_to_dict(graph)
    again = graph_from_dict(json.loads(json.dumps(data)), source="copy.json")
    assert again.name == graph.name
    assert again.workdir == graph.workdir
    assert job_fields(again) == job_fields(graph)
    assert again.edges() == graph.edges()
    # A second trip is byte-for-byte stable.
    assert graph_to_dict(again) == data


def test_graph_to_dict_is_explicit(tmp_path):
    graph = load_workflow(write(tmp_path, VALID_YAML))
    data = graph_to_dict(graph)
    assert data["workdir"] == str(tmp_path.resolve())
    assert data["jobs"][0] == {
        "name": "isr-1",
        "label": "isr",
        "command": "python -m mypkg.isr --visit 1",
        "cores": 2,
        "memory": 4000,
        "walltime": 600.0,
        "retries": 1,
        "environment": {"OMP_NUM_THREADS": "2", "SHARED": "from-defaults"},
    }
    assert data["jobs"][1]["command"] == ["python", "-m", "mypkg.isr", "--visit", "2"]
    assert data["jobs"][2]["args"] == [1, "two"]
    assert data["jobs"][2]["kwargs"] == {"scale": 0.5}
    assert "command" not in data["jobs"][2]


def test_round_trip_without_optional_fields():
    graph = graph_from_dict({"name": "min", "jobs": [{"name": "only", "command": "true"}]})
    data = graph_to_dict(graph)
    assert data == {
        "name": "min",
        "jobs": [{"name": "only", "label": "only", "command": "true", "cores": 1, "retries": 0}],
    }
    assert job_fields(graph_from_dict(data)) == job_fields(graph)


def test_static_clustering_settings_are_checked_and_saved(tmp_path):
    from executor.formats.native import graph_from_saved, graph_to_dict

    good = write(tmp_path, "cluster_by: cluster\ncluster_max: 4\n"
                 "jobs: [{name: a, command: 'true', cluster: v1}]\n")  # fmt: skip
    graph = load_workflow(good)
    assert (graph.clustering.by, graph.clustering.max_size, graph["a"].cluster) == (
        "cluster", 4, "v1")  # fmt: skip
    again = graph_from_saved(graph_to_dict(graph), source="copy")
    assert again.clustering == graph.clustering and again["a"].cluster == "v1"
    bad = write(tmp_path, "cluster_by: visit\ncluster_max: 0\njobs: [{name: a, command: 'true'}]\n")
    problems = problems_of(bad)
    assert any("cluster_by: 'visit' must be 'label'" in p for p in problems)
    assert any("cluster_max: 0 must be a whole number >= 1" in p for p in problems)


def test_code_paths_are_relative_to_the_workflow_file_and_survive_the_saved_copy(tmp_path):
    (tmp_path / "src" / "mypkg").mkdir(parents=True)
    (tmp_path / "src" / "run.sh").write_text("true")
    path = write(
        tmp_path / "src",
        "code: [./mypkg, run.sh]\ncode_limit: 5MB\njobs: [{name: a, command: x}]\n",
    )

    graph = load_workflow(path)

    assert graph.code == (tmp_path / "src" / "mypkg", tmp_path / "src" / "run.sh")
    assert graph.code_limit == 5_000_000
    saved = graph_from_saved(graph_to_dict(graph), source="saved")
    assert saved.code == graph.code


def test_bad_code_entries_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "a" / "mypkg").mkdir(parents=True)
    (tmp_path / "b" / "mypkg").mkdir(parents=True)
    path = write(
        tmp_path,
        "code: [a/mypkg, b/mypkg, ./nope]\ncode_limit: lots\njobs: [{name: a, command: x}]\n",
    )

    problems = problems_of(path)

    assert any("code: './nope' does not exist" in p and "relative to the workflow" in p
               for p in problems)  # fmt: skip
    assert any("would both appear as 'mypkg'" in p for p in problems)
    assert any(p.startswith(f"{path}: code_limit:") for p in problems)
    assert problems_of(write(tmp_path, "code: ./mypkg\njobs: [{name: a, command: x}]\n")) == [
        f"{tmp_path / 'workflow.yaml'}: code: must be a list of paths, e.g. code: [./mypkg]"
    ]
