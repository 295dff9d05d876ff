"""Importing WfFormat (WfCommons) traces: real instances load with their exact shape.

The real instances live outside the repository (``../shared/workflows/wfinstances`` next
to a clone, or ``$PILOT_WFINSTANCES``); tests that need them skip when they are absent.
Everything else uses small WfFormat files written here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import run_pilot

from executor.errors import GraphError
from executor.formats import load_workflow
from executor.formats.wfformat import graph_from_wfformat, is_wfformat
from executor.store import Store, locate
from executor.store.queries import attempts_of

WFINSTANCES = Path(
    os.environ.get("PILOT_WFINSTANCES")
    or Path(__file__).parents[2] / "shared" / "workflows" / "wfinstances"
)
SHARED = (
    sorted(p for p in WFINSTANCES.glob("*.json") if not p.name.startswith("wfcommons-schema"))
    if WFINSTANCES.is_dir()
    else []
)
needs_shared = pytest.mark.skipif(
    not SHARED,
    reason=f"no WfFormat instances in {WFINSTANCES}; set PILOT_WFINSTANCES to their folder",
)


def shared(name: str) -> Path:
    path = WFINSTANCES / name
    if not path.is_file():
        pytest.skip(f"{path} is missing; set PILOT_WFINSTANCES to the instances' folder")
    return path


def raw_tasks(path: Path) -> tuple[list[dict], dict[str, float]]:
    """The file's tasks and runtimes by id, read without the importer."""
    workflow = json.loads(path.read_text())["workflow"]
    if "specification" in workflow:
        runtimes = {t["id"]: t["runtimeInSeconds"] for t in workflow["execution"]["tasks"]}
        return workflow["specification"]["tasks"], runtimes
    tasks = workflow["tasks"]
    return tasks, {t["id"]: t.get("runtimeInSeconds", t.get("runtime", 0)) for t in tasks}


def write(tmp_path: Path, data: dict, name: str = "trace.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def instance(*tasks: tuple[str, float, list[str]], **extra) -> dict:
    """A WfFormat 1.5 instance of ``(id, runtime, parents)`` tasks."""
    children: dict[str, list[str]] = {t[0]: [] for t in tasks}
    for ident, _, parents in tasks:
        for parent in parents:
            children.setdefault(parent, []).append(ident)
    spec = [
        {"name": ident, "id": ident, "parents": parents, "children": children[ident], **extra}
        for ident, _, parents in tasks
    ]
    runs = [{"id": ident, "runtimeInSeconds": runtime} for ident, runtime, _ in tasks]
    return {
        "name": "tiny",
        "schemaVersion": "1.5",
        "workflow": {"specification": {"tasks": spec}, "execution": {"tasks": runs}},
    }


DIAMOND = instance(
    ("split_ID01", 200.0, []),
    ("work_ID02", 100.0, ["split_ID01"]),
    ("work_ID03", 300.0, ["split_ID01"]),
    ("merge_ID04", 50.0, ["work_ID02", "work_ID03"]),
)


def problems_of(path: Path, **kwargs) -> list[str]:
    with pytest.raises(GraphError) as info:
        load_workflow(path, **kwargs)
    return info.value.problems


# -- the real instances ------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", SHARED or [None], ids=lambda p: p.stem if p else "none")
def test_every_shared_instance_imports_with_its_shape_and_runtimes(path: Path):
    tasks, runtimes = raw_tasks(path)
    started = time.perf_counter()
    graph = load_workflow(path)
    elapsed = time.perf_counter() - started

    assert len(graph) == len(tasks)
    assert len(graph.edges()) == sum(len(t["parents"]) for t in tasks)
    assert set(graph.roots()) == {t["id"] for t in tasks if not t["parents"]}
    assert all(not graph.parents(root) for root in graph.roots())
    for task in tasks:
        job = graph[task["id"]]
        assert set(job.after) == set(task["parents"])
        assert job.command[0] == "sleep"
        assert float(job.command[1]) == pytest.approx(runtimes[task["id"]], rel=1e-5, abs=1e-6)
    # Labels group tasks: fewer labels than tasks wherever some task repeats.
    assert len(graph.labels()) < len(graph)
    assert elapsed < 3, f"loading {path.name} took {elapsed:.2f}s"


def test_montage_labels_are_its_programs():
    graph = load_workflow(shared("montage-chameleon-dss-15d-001.json"))
    assert graph.labels() == {
        "mProject": 108, "mDiffFit": 1890, "mConcatFit": 3, "mBgModel": 3,
        "mBackground": 108, "mImgtbl": 3, "mAdd": 3, "mViewer": 4,
    }  # fmt: skip


def test_names_that_hold_the_sample_fall_back_to_the_program_as_label():
    # Epigenomics names look like 'map_map_<run>_s_3_sequence_65_ID0001043'.
    graph = load_workflow(shared("epigenomics-chameleon-ilmn-6seq-50k-001.json"))
    assert graph.labels()["map"] == 420
    assert len(graph.labels()) == 8


def test_repeated_names_use_the_unique_ids():
    # nf-core rnaseq: 197 tasks, 62 distinct names; ids are name + '_N'.
    graph = load_workflow(shared("rnaseq-dirt02-001.json"))
    assert len(graph) == 197
    assert len(graph.labels()) == 62


def test_time_scale_divides_a_shared_instances_runtimes():
    path = shared("helloworld-forkjoin-10-chameleon.json")
    _, runtimes = raw_tasks(path)
    name = "cpuhog_forkjoin_00000001"
    assert load_workflow(path)[name].command == ("sleep", f"{runtimes[name]:.6g}")
    scaled = load_workflow(path, time_scale=1000)[name].command
    assert scaled == ("sleep", f"{runtimes[name] / 1000:.6g}")


def test_the_schema_file_is_reported_as_a_schema():
    problems = problems_of(shared("wfcommons-schema-v1.5.json"))
    assert "wfcommons-schema-v1.5.json" in problems[0]
    assert "JSON Schema" in problems[0] and "workflow.specification.tasks" in problems[0]


def test_validate_json_on_a_shared_instance(subprocess_env: dict):
    path = shared("montage-chameleon-dss-15d-001.json")
    result = run_pilot("validate", path, "--json", "--time-scale", "100", env=subprocess_env)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    shape = {key: facts[key] for key in ("workflow", "jobs", "edges", "roots")}
    assert shape == {"workflow": "montage-0", "jobs": 2122, "edges": 6114, "roots": 108}
    assert facts["labels"]["mDiffFit"] == 1890


# -- small files -------------------------------------------------------------------------


def test_small_instance_jobs_edges_labels_and_commands(tmp_path: Path):
    graph = load_workflow(write(tmp_path, DIAMOND), time_scale=100)
    assert graph.name == "tiny"
    assert graph.names == ["split_ID01", "work_ID02", "work_ID03", "merge_ID04"]
    assert graph.roots() == ["split_ID01"]
    assert graph["merge_ID04"].after == ("work_ID02", "work_ID03")
    assert dict(graph.labels()) == {"split": 1, "work": 2, "merge": 1}
    assert graph["work_ID03"].command == ("sleep", "3")
    assert graph["merge_ID04"].command == ("sleep", "0.5")
    assert graph.workdir == tmp_path.resolve()


def test_labels_come_from_categories(tmp_path: Path):
    data = instance(("a_ID1", 1, []), ("b_ID2", 1, ["a_ID1"]))
    data["workflow"]["specification"]["tasks"][0]["category"] = "fetch"
    data["workflow"]["specification"]["tasks"][1]["category"] = "reduce"
    graph = load_workflow(write(tmp_path, data))
    assert [job.label for job in graph] == ["fetch", "reduce"]


def test_older_layout_with_runtime_category_and_parents_by_name(tmp_path: Path):
    # Schema 1.3-style: tasks under workflow.tasks, short ids, parents given by name.
    data = {
        "name": "old",
        "schemaVersion": "1.3",
        "workflow": {
            "tasks": [
                {"name": "prep_ID01", "id": "ID01", "category": "prep", "runtime": 2.5,
                 "parents": []},
                {"name": "run_ID02", "id": "ID02", "category": "run", "runtimeInSeconds": 4,
                 "parents": ["prep_ID01"]},
                {"name": "sum_ID03", "id": "ID03", "category": "sum", "parents": ["ID02"]},
            ]
        },
    }  # fmt: skip
    graph = load_workflow(write(tmp_path, data))
    assert graph.names == ["ID01", "ID02", "ID03"]
    assert graph.edges() == [("ID01", "ID02"), ("ID02", "ID03")]
    assert [job.command for job in graph] == [("sleep", "2.5"), ("sleep", "4"), ("sleep", "0")]
    assert [job.label for job in graph] == ["prep", "run", "sum"]


def test_tiny_runtimes_never_use_exponent_notation(tmp_path: Path):
    graph = load_workflow(write(tmp_path, instance(("t_ID1", 0.004, []))), time_scale=1000)
    assert graph["t_ID1"].command == ("sleep", "0.000004")


def test_duplicate_ids_fall_back_to_unique_names(tmp_path: Path):
    data = instance(("x", 1, []), ("y", 1, ["x"]))
    tasks = data["workflow"]["specification"]["tasks"]
    tasks[0]["id"] = tasks[1]["id"] = "same"
    tasks[1]["parents"] = ["x"]
    graph = load_workflow(write(tmp_path, data))
    assert graph.names == ["x", "y"]
    assert graph.edges() == [("x", "y")]


@pytest.mark.parametrize("scale", [0, -1.5, float("inf"), float("nan")])
def test_time_scale_must_be_positive(tmp_path: Path, scale: float):
    problems = problems_of(write(tmp_path, DIAMOND), time_scale=scale)
    assert "trace.json" in problems[0] and "must be a number > 0" in problems[0]


def test_time_scale_on_a_native_workflow_is_refused(tmp_path: Path):
    path = write(tmp_path, {"name": "n", "jobs": [{"name": "a", "command": "true"}]}, "n.json")
    assert not is_wfformat(json.loads(path.read_text()))
    assert len(load_workflow(path)) == 1
    assert "WfFormat files only" in problems_of(path, time_scale=10)[0]


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"schemaVersion": "1.5", "workflow": {}}, ["neither workflow.specification.tasks"]),
        ({"schemaVersion": "1.5"}, ["no 'workflow' object"]),
        (
            {"schemaVersion": "1.5", "workflow": {"specification": {"tasks": []}}},
            ["workflow.specification.tasks: must be a non-empty list"],
        ),
        (
            {"schemaVersion": "1.5", "workflow": {"specification": {"tasks": [{"parents": []}]}}},
            ["cannot tell tasks apart", "task #1 has no 'id'", "task #1 has no 'name'"],
        ),
    ],
)
def test_a_missing_part_is_named(tmp_path: Path, data: dict, needles: list[str]):
    (problem,) = problems_of(write(tmp_path, data))
    assert str(tmp_path / "trace.json") in problem
    assert all(needle in problem for needle in needles), problem


def test_ids_and_names_both_repeated_is_an_error(tmp_path: Path):
    data = instance(("x", 1, []), ("y", 1, []))
    for task in data["workflow"]["specification"]["tasks"]:
        task["id"], task["name"] = "dup", "dup"
    (problem,) = problems_of(write(tmp_path, data))
    assert "1 id(s) are repeated ('dup')" in problem and "1 name(s) are repeated" in problem


def test_bad_runtimes_dangling_parents_and_cycles_read_like_native_errors(tmp_path: Path):
    data = instance(("a_ID1", 1, []), ("b_ID2", 1, ["a_ID1"]))
    data["workflow"]["execution"]["tasks"][0]["runtimeInSeconds"] = "slow"
    data["workflow"]["execution"]["tasks"][1]["runtimeInSeconds"] = -3
    problems = problems_of(write(tmp_path, data))
    assert any("task 'a_ID1': runtimeInSeconds: 'slow' is not a number" in p for p in problems)
    assert any("task 'b_ID2': runtimeInSeconds: -3 must be" in p for p in problems)

    dangling = instance(("a_ID1", 1, []), ("b_ID2", 1, ["a_ID9"]))
    (problem,) = problems_of(write(tmp_path, dangling))
    assert "(task 'b_ID2'): job 'b_ID2': after: no job named 'a_ID9'; did you mean 'a_ID1'?" in (
        problem
    )

    cycle = instance(("a_ID1", 1, ["b_ID2"]), ("b_ID2", 1, ["a_ID1"]))
    (problem,) = problems_of(write(tmp_path, cycle))
    assert "trace.json: the graph has a cycle: a_ID1 -> b_ID2 -> a_ID1" in problem


def test_ids_with_characters_job_names_cannot_hold_are_made_safe():
    graph = graph_from_wfformat(
        instance(("a#1", 1, []), ("b#2", 1, ["a#1"])), source="mem.json", base_dir=None
    )
    assert graph.edges() == [("a_1", "b_2")]


# -- a real run --------------------------------------------------------------------------


@pytest.mark.integration
def test_submit_replays_a_trace_in_dependency_order(tmp_path: Path, subprocess_env: dict):
    path = write(tmp_path, DIAMOND)
    result = run_pilot("submit", path, "--time-scale", "1000", env=subprocess_env)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]

    graph = load_workflow(path)
    with Store(locate().db) as store:
        times = {}
        for name in graph.names:
            (attempt,) = attempts_of(store, run_id, name)
            assert attempt["state"] == "succeeded"
            times[name] = (attempt["start"], attempt["end"])
    for parent, child in graph.edges():
        assert times[child][0] >= times[parent][1], f"{child} started before {parent} ended"
    # work_ID03 recorded 300 s: 0.3 s at a scale of 1000.
    start, end = times["work_ID03"]
    assert 0.25 <= end - start < 30
