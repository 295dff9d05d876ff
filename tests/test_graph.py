"""JobGraph shape and order, the Python API, and the run-time Schedule (with properties)."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor import Workflow
from executor.errors import GraphError
from executor.formats import graph_from_dict, graph_to_dict, load_workflow
from executor.formats.native import graph_from_saved
from executor.model.graph import Job, JobGraph, default_label
from executor.model.states import JobState
from executor.policy.schedule import Schedule

PROPERTY = settings(max_examples=150, deadline=None, database=None)
FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.BLOCKED}


def graph(*specs: str, name: str = "g") -> JobGraph:
    """A graph from specs like ``"c<a,b"`` (job c runs after a and b) or ``"a"``."""
    jobs = []
    for spec in specs:
        job_name, _, parents = spec.partition("<")
        after = tuple(p for p in parents.split(",") if p)
        jobs.append(Job(name=job_name, label=default_label(job_name), command="true", after=after))
    return JobGraph(name, jobs)


def unfinished_part(g: JobGraph, succeeded: set[str]) -> JobGraph:
    """What a restart drives once ``succeeded`` are done: the rest of the saved workflow,
    rebuilt as :func:`executor.runs.resume.load_run` does (``keep``)."""
    keep = {name for name in g.names if name not in succeeded}
    return graph_from_saved(graph_to_dict(g), source="<saved>", keep=keep)


def job_fields(g: JobGraph) -> list[dict]:
    return [dataclasses.asdict(job) for job in g]


# -- hand-made graphs --------------------------------------------------------------------


def test_diamond_shape():
    g = graph("a", "b<a", "c<a", "d<b,c", "e")
    assert len(g) == 5
    assert g.names == ["a", "b", "c", "d", "e"]
    assert g.roots() == ["a", "e"]
    assert g.leaves() == ["d", "e"]
    assert g.edges() == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    assert g.parents("d") == ("b", "c")
    assert g.children("a") == ("b", "c")
    assert g.descendants("a") == {"b", "c", "d"}
    assert g.descendants("e") == set()
    assert g.topological_order() == ["a", "b", "c", "d", "e"]
    assert g.depths() == {"a": 3, "b": 2, "c": 2, "d": 1, "e": 1}
    assert g.longest_chain() == ["a", "b", "d"]
    assert "a" in g and "z" not in g
    assert [job.name for job in g] == g.names


def test_topological_order_when_written_backwards():
    g = graph("c<b", "b<a", "a", "x")
    assert g.topological_order() == ["a", "b", "c", "x"]
    assert g.roots() == ["a", "x"]
    assert g.leaves() == ["c", "x"]


def test_topological_order_breaks_ties_by_written_order():
    g = graph("z", "y", "x<z", "w<y")
    assert g.topological_order() == ["z", "y", "x", "w"]


def test_repeated_parent_is_harmless():
    g = graph("a", "b<a,a")
    assert g.topological_order() == ["a", "b"]
    assert g.depths() == {"a": 2, "b": 1}


def test_depths_and_longest_chain():
    g = graph("s", "a<s", "b<a", "c<b", "short<s", "lone")
    assert g.depths() == {"s": 4, "a": 3, "b": 2, "c": 1, "short": 1, "lone": 1}
    assert g.longest_chain() == ["s", "a", "b", "c"]


def test_longest_chain_starts_at_the_deepest_root():
    g = graph("r1", "x<r1", "r2", "y<r2", "z<y")
    assert g.longest_chain() == ["r2", "y", "z"]


def test_single_job_and_empty_graph():
    g = graph("only")
    assert g.roots() == g.leaves() == g.topological_order() == g.longest_chain() == ["only"]
    assert g.depths() == {"only": 1}
    assert JobGraph("empty", []).longest_chain() == []


def test_labels_count_jobs_per_label_in_first_seen_order():
    g = graph("isr-1", "isr-2", "calib", "isr-3", "sum_1<isr-1")
    labels = g.labels()
    assert labels == {"isr": 3, "calib": 1, "sum": 1}
    assert list(labels) == ["isr", "calib", "sum"]


def test_cycle_message_lists_the_cycle():
    with pytest.raises(GraphError) as info:
        graph("a<c", "b<a", "c<b")
    assert str(info.value) == (
        "the graph has a cycle: a -> b -> c -> a; remove one of these 'after' edges"
    )


def test_two_job_cycle_with_source():
    with pytest.raises(GraphError) as info:
        JobGraph(
            "g",
            [
                Job(name="a", label="a", command="x", after=("b",)),
                Job(name="b", label="b", command="x", after=("a",)),
            ],
            source="wf.yaml",
        )
    assert str(info.value).startswith("wf.yaml: the graph has a cycle: a -> b -> a;")


def test_job_describe():
    assert Job(name="a", label="a", command=("echo", "two words")).describe() == "echo 'two words'"
    assert Job(name="a", label="a", command="echo hi").describe() == "echo hi"
    job = Job(name="f", label="f", function="m:f", args=(1,), kwargs={"k": 2})
    assert job.describe() == "m:f(*[1], **{'k': 2})"
    assert job.kind == "function"


@pytest.mark.parametrize("bad", ["a/b", "has space", ".hidden", "", "x" * 201])
def test_invalid_job_names(bad):
    with pytest.raises(GraphError) as info:
        JobGraph("g", [Job(name=bad, label="l", command="x")])
    [problem] = info.value.problems
    assert problem == (
        f"job {bad!r}: name: {bad!r} is not a valid job name; use letters, digits and _.:@+=,- "
        "(no '/', spaces or leading '.'; at most 200 characters)"
    )


# -- the Python API builds the same graph as a file -----------------------------------------

EQUIVALENT_YAML = """\
name: demo
workdir: .
defaults: {retries: 1, memory: 2GB, environment: {A: "1"}}
jobs:
  - {name: hello, command: echo hello, walltime: 30m}
  - {name: argv-1, command: [echo, "two words"], after: [hello], cores: 2}
  - name: count
    function: json:dumps
    args: [[1, 2]]
    kwargs: {indent: 2}
    after: [hello, argv-1]
    label: counting
    environment: {B: "2"}
"""


def test_workflow_api_builds_the_same_graph_as_yaml(tmp_path):
    path = tmp_path / "workflow.yaml"
    path.write_text(EQUIVALENT_YAML)
    from_file = load_workflow(path)

    wf = Workflow(
        "demo",
        defaults={"retries": 1, "memory": "2GB", "environment": {"A": "1"}},
        workdir=tmp_path,
    )
    hello = wf.shell("hello", "echo hello", walltime="30m")
    argv = wf.shell("argv-1", ["echo", "two words"], after=[hello], cores=2)
    wf.function(
        "count",
        "json:dumps",
        args=[[1, 2]],
        kwargs={"indent": 2},
        after=[hello, argv],
        label="counting",
        environment={"B": "2"},
    )
    from_api = wf.build()

    assert from_api.name == from_file.name == "demo"
    assert from_api.workdir == from_file.workdir == tmp_path.resolve()
    assert job_fields(from_api) == job_fields(from_file)
    assert from_api.edges() == from_file.edges()
    assert dict(from_api["count"].environment) == {"A": "1", "B": "2"}
    assert from_api["argv-1"].label == "argv"


def test_workflow_api_without_workdir():
    wf = Workflow("w")
    wf.shell("a", "true")
    assert wf.build().workdir is None


def _tail(problem: str) -> str:
    """A problem without its place (file and line, or the API workflow's name)."""
    return problem[problem.index(": job ") + 2 :]


@pytest.mark.parametrize(
    ("api_jobs", "yaml_jobs", "expected"),
    [
        (
            [("a", {}), ("a", {})],
            "[{name: a, command: 'true'}, {name: a, command: 'true'}]",
            ["job 'a': name: duplicate job name (also job #1); job names must be unique"],
        ),
        (
            [("first", {}), ("b", {"after": ["frist"]})],
            "[{name: first, command: 'true'}, {name: b, command: 'true', after: [frist]}]",
            ["job 'b': after: no job named 'frist'; did you mean 'first'?"],
        ),
        (
            [("a", {"memory": "lots", "memroy": "1GB"}), ("b", {"after": ["zzz"]})],
            "[{name: a, command: 'true', memory: lots, memroy: 1GB},"
            " {name: b, command: 'true', after: [zzz]}]",
            [
                "job 'a': unknown key 'memroy'; did you mean 'memory'?",
                "job 'a': memory: 'lots' is not a memory size; write e.g. '4GB', '512MB' or '2GiB'",
                "job 'b': after: no job named 'zzz'",
            ],
        ),
        (
            [("a", {"cores": 0, "walltime": "soon"})],
            "[{name: a, command: 'true', cores: 0, walltime: soon}]",
            [
                "job 'a': walltime: 'soon' is not a duration; "
                "write e.g. '30m', '2h', '90s' or '01:30:00'",
                "job 'a': cores: 0 must be a whole number of at least 1",
            ],
        ),
    ],
)
def test_workflow_api_errors_match_file_errors(tmp_path, api_jobs, yaml_jobs, expected):
    wf = Workflow("demo")
    for name, fields in api_jobs:
        wf.shell(name, "true", **fields)
    with pytest.raises(GraphError) as api_info:
        wf.build()
    path = tmp_path / "workflow.yaml"
    path.write_text(f"name: demo\njobs: {yaml_jobs}\n")
    with pytest.raises(GraphError) as file_info:
        load_workflow(path)
    assert [_tail(p) for p in api_info.value.problems] == expected
    assert [_tail(p) for p in file_info.value.problems] == expected
    assert all(p.startswith("workflow 'demo' (job #") for p in api_info.value.problems)


def test_workflow_api_cycle():
    wf = Workflow("loop")
    wf.shell("a", "true", after=["b"])
    wf.shell("b", "true", after=["a"])
    with pytest.raises(GraphError) as info:
        wf.build()
    assert str(info.value) == (
        "workflow 'loop': the graph has a cycle: a -> b -> a; remove one of these 'after' edges"
    )


def test_workflow_api_function_needs_module_and_callable():
    wf = Workflow("w")
    wf.function("f", "json.dumps")
    with pytest.raises(GraphError) as info:
        wf.build()
    assert _tail(info.value.problems[0]) == (
        "job 'f': function: 'json.dumps' must look like 'package.module:callable'"
    )


# -- properties on random DAGs -------------------------------------------------------------


@st.composite
def random_dags(draw, max_jobs: int = 12) -> JobGraph:
    """A random DAG: edges only from lower to higher index, jobs then written shuffled."""
    n = draw(st.integers(min_value=1, max_value=max_jobs))
    names = [f"j{i}" for i in range(n)]
    after: dict[str, list[str]] = {name: [] for name in names}
    for child in range(n):
        for parent in range(child):
            if draw(st.booleans()):
                after[names[child]].append(names[parent])
    order = draw(st.permutations(names))
    jobs = [{"name": x, "command": "true", "after": after[x]} for x in order]
    data = {"name": "random", "jobs": jobs}
    return graph_from_dict(data)


def ancestors(g: JobGraph, name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(g.parents(name))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(g.parents(current))
    return seen


@PROPERTY
@given(random_dags())
def test_topological_order_puts_parents_first(g):
    order = g.topological_order()
    assert sorted(order) == sorted(g.names)
    assert len(order) == len(set(order)) == len(g)
    position = {name: i for i, name in enumerate(order)}
    for parent, child in g.edges():
        assert position[parent] < position[child]


@PROPERTY
@given(random_dags())
def test_depths_and_longest_chain_agree(g):
    depth = g.depths()
    for name in g.names:
        assert depth[name] == 1 + max((depth[c] for c in g.children(name)), default=0)
    chain = g.longest_chain()
    assert len(chain) == max(depth.values())
    assert chain[0] in g.roots() and chain[-1] in g.leaves()
    for parent, child in zip(chain, chain[1:], strict=False):
        assert parent in g.parents(child)


@PROPERTY
@given(g=random_dags(), data=st.data())
def test_schedule_runs_every_job_correctly(g, data):
    # A restart's succeeded jobs: any set closed under "ancestors of". The restart drives
    # the rest only; it must rank and release them as the whole graph would.
    picked = data.draw(st.sets(st.sampled_from(g.names)), label="succeeded")
    done_before = set(picked).union(*(ancestors(g, name) for name in picked))
    schedule = Schedule(unfinished_part(g, done_before))
    assert set(schedule.state) == set(g.names) - done_before
    depth = g.depths()
    rank = {name: (-depth[name], i) for i, name in enumerate(g.names)}

    outcome: dict[str, JobState] = dict.fromkeys(done_before, JobState.SUCCEEDED)
    running: set[str] = set()
    requeued: set[str] = set()
    popped: set[str] = set()

    def check_counts():
        states = schedule.state
        assert schedule.ready_count == sum(s is JobState.READY for s in states.values())
        left = [n for n, s in states.items() if s not in FINAL]
        assert schedule.finished == (not left)
        assert schedule.finished == (len(outcome) == len(g))

    check_counts()
    while not schedule.finished:
        assert schedule.ready_count or running, "deadlock: nothing ready and nothing running"
        limit = data.draw(st.integers(min_value=0 if running else 1, max_value=4), label="limit")
        ready_before = sorted((rank[n] for n, s in schedule.state.items() if s is JobState.READY))
        taken = schedule.pop_ready(limit)
        # Most important first: exactly the best-ranked ready jobs, in rank order.
        assert [rank[n] for n in taken] == ready_before[: len(taken)]
        assert len(taken) == min(limit, len(ready_before))
        for name in taken:
            assert name not in done_before
            assert name not in popped or name in requeued
            assert all(outcome.get(p) is JobState.SUCCEEDED for p in g.parents(name))
            assert schedule.state[name] is JobState.RUNNING
            requeued.discard(name)
            popped.add(name)
            running.add(name)
        check_counts()

        order = data.draw(st.permutations(sorted(running)), label="completion order")
        count = data.draw(st.integers(min_value=0 if taken else 1, max_value=len(order)))
        for name in order[:count]:
            running.discard(name)
            action = data.draw(st.sampled_from(["succeed", "fail", "requeue"]), label=name)
            if action == "requeue":
                schedule.requeue(name)
                requeued.add(name)
                assert schedule.state[name] is JobState.READY
            elif action == "succeed":
                became_ready = schedule.succeed(name)
                outcome[name] = JobState.SUCCEEDED
                for child in became_ready:
                    assert name in g.parents(child)
                    assert all(outcome.get(p) is JobState.SUCCEEDED for p in g.parents(child))
            else:
                pending = {d for d in g.descendants(name) if d not in outcome}
                blocked = schedule.fail(name)
                outcome[name] = JobState.FAILED
                assert set(blocked) == pending
                assert len(blocked) == len(set(blocked))
                outcome.update(dict.fromkeys(blocked, JobState.BLOCKED))
            check_counts()

    assert not running
    assert schedule.pop_ready(10) == []
    assert {**dict.fromkeys(done_before, JobState.SUCCEEDED), **schedule.state} == outcome
    assert set(outcome) == set(g.names)
    assert set(outcome.values()) <= FINAL
    assert not popped & done_before
    for name, state in outcome.items():
        if state is JobState.FAILED:
            assert all(outcome[d] is JobState.BLOCKED for d in g.descendants(name))
            assert not g.descendants(name) & popped
        if state is JobState.BLOCKED:
            assert name not in popped
            assert any(outcome[a] is JobState.FAILED for a in ancestors(g, name))


@PROPERTY
@given(random_dags())
def test_schedule_all_succeeded_is_finished(g):
    schedule = Schedule(unfinished_part(g, set(g.names)))
    assert schedule.finished
    assert schedule.ready_count == 0
    assert schedule.pop_ready(5) == []


# -- schedule examples --------------------------------------------------------------------


def test_pop_ready_prefers_the_longest_chain():
    g = graph("short", "long", "l2<long", "l3<l2", "mid", "m2<mid")
    schedule = Schedule(g)
    assert schedule.initially_ready() and set(schedule.initially_ready()) == {
        "short",
        "long",
        "mid",
    }
    assert schedule.pop_ready(1) == ["long"]
    assert schedule.pop_ready(5) == ["mid", "short"]
    assert schedule.pop_ready(5) == []
    assert schedule.succeed("short") == []
    assert schedule.succeed("mid") == ["m2"]
    assert schedule.succeed("long") == ["l2"]
    # l2 (depth 2) goes before m2 (depth 1) though m2 became ready first.
    assert schedule.pop_ready(1) == ["l2"]
    assert schedule.pop_ready(1) == ["m2"]


def test_pop_ready_ties_go_in_written_order():
    schedule = Schedule(graph("c", "a", "b"))
    assert schedule.pop_ready(3) == ["c", "a", "b"]


def test_child_waits_for_every_parent():
    schedule = Schedule(graph("a", "b", "c<a,b"))
    assert schedule.pop_ready(5) == ["a", "b"]
    assert schedule.succeed("a") == []
    assert schedule.state["c"] is JobState.PENDING
    assert schedule.succeed("b") == ["c"]
    assert schedule.state["c"] is JobState.READY


def test_failure_blocks_descendants_only():
    schedule = Schedule(graph("a", "b<a", "c<b", "d", "e<d,b"))
    assert schedule.pop_ready(5) == ["a", "d"]
    assert sorted(schedule.fail("a")) == ["b", "c", "e"]
    assert schedule.state["b"] is JobState.BLOCKED
    assert not schedule.finished
    assert schedule.succeed("d") == []
    assert schedule.finished
    assert schedule.state == {
        "a": JobState.FAILED,
        "b": JobState.BLOCKED,
        "c": JobState.BLOCKED,
        "d": JobState.SUCCEEDED,
        "e": JobState.BLOCKED,
    }


def test_restart_skips_succeeded_jobs(tmp_path, pilot_home):
    from executor.model.states import RunState
    from executor.runs.resume import load_run
    from executor.runs.start import start_run
    from executor.sites import get_site
    from executor.store import Store, locate
    from executor.store.recorder import RunRecorder

    locations = locate()
    with Store(locations.db) as store:
        context = start_run(graph("a", "b<a", "c<b", "x"), get_site(None), store, locations)
        recorder = RunRecorder(store, context.run_id)
        for name in ("a", "b"):
            for state in (JobState.READY, JobState.RUNNING, JobState.SUCCEEDED):
                recorder.job_state(name, state)
        recorder.run_state(RunState.FAILED)
        recorder.flush()
        resumed = load_run(store, context.run_id)
    schedule = Schedule(resumed.graph)  # as the restart's driver builds it
    assert set(schedule.state) == {"c", "x"}
    assert resumed.done_per_label == {"a": 1, "b": 1}
    assert schedule.pop_ready(5) == ["c", "x"]
    schedule.succeed("c")
    assert not schedule.finished
    schedule.succeed("x")
    assert schedule.finished


def test_requeue_and_cancel():
    schedule = Schedule(graph("a", "b", "c<a"))
    assert schedule.pop_ready(1) == ["a"]
    schedule.requeue("a")
    assert schedule.state["a"] is JobState.READY
    assert schedule.pop_ready(1) == ["a"]
    assert sorted(schedule.cancel_unstarted()) == ["b", "c"]
    assert schedule.ready_count == 0
    assert not schedule.finished
    schedule.cancel("a")
    assert schedule.finished
    assert set(schedule.state.values()) == {JobState.CANCELLED}


def test_file_workflow_graph_helpers(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            jobs:
              - {name: isr-1, command: x}
              - {name: isr-2, command: x}
              - {name: coadd, command: x, after: [isr-1, isr-2]}
            """
        )
    )
    g = load_workflow(path)
    assert g.roots() == ["isr-1", "isr-2"]
    assert g.leaves() == ["coadd"]
    assert g.labels() == {"isr": 2, "coadd": 1}
    assert Schedule(g).pop_ready(1) == ["isr-1"]
