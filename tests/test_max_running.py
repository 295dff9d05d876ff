"""Per-label throttles (``max_running: {db: 2}``): never more than N jobs of a label out.

The schedule alone (pure, with a property test over any interleaving of the driver's
calls), the workflow key's checks and its round trip through a restart's saved copy,
`pilot validate`, and a real run on the local site that measures the overlap.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import run_pilot, write_workflow
from hypothesis import given, settings
from hypothesis import strategies as st

from executor import Workflow
from executor.cli import cli
from executor.errors import GraphError
from executor.formats import graph_from_dict, graph_to_dict, load_workflow
from executor.formats.native import graph_from_saved
from executor.formats.saved import read_saved, saved_text
from executor.model.graph import Job, JobGraph
from executor.model.states import JobState
from executor.policy.schedule import Schedule

READY, RUNNING = JobState.READY, JobState.RUNNING
FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.BLOCKED}


def jobs_of(*specs: tuple[str, str], after: dict[str, list[str]] | None = None) -> list[Job]:
    after = after or {}
    return [
        Job(name=name, label=label, command="true", after=tuple(after.get(name, ())))
        for name, label in specs
    ]


def throttled(n_db: int, n_other: int = 0, limit: int = 2) -> JobGraph:
    specs = [(f"db-{i}", "db") for i in range(n_db)] + [(f"x-{i}", "x") for i in range(n_other)]
    return JobGraph("t", jobs_of(*specs), max_running={"db": limit})


# -- the schedule ---------------------------------------------------------------------------


def test_pop_ready_hands_out_at_most_the_limit_and_holds_the_rest():
    schedule = Schedule(throttled(5, 2))
    assert schedule.ready_count == 4  # two db jobs and both others: all can go now
    assert schedule.held_count == 3 and schedule.held() == {"db": 3}
    assert sorted(schedule.initially_ready()) == sorted(schedule.state)  # held are ready
    assert schedule.pop_ready(100) == ["db-0", "db-1", "x-0", "x-1"]
    assert schedule.pop_ready(100) == []
    assert schedule.ready_count == 0  # held jobs alone: the driver has nothing to submit
    assert {schedule.state[f"db-{i}"] for i in range(2, 5)} == {READY}
    # Another label finishing frees nothing for db.
    assert schedule.succeed("x-0") == []
    assert schedule.pop_ready(100) == []
    # A db job leaving lets the best held one go, in written (priority) order.
    schedule.succeed("db-1")
    assert schedule.held_count == 2 and schedule.ready_count == 1
    assert schedule.pop_ready(100) == ["db-2"]


def test_held_jobs_go_most_important_first():
    # db-late heads a chain of three: it outranks the db jobs written before it.
    jobs = jobs_of(("db-a", "db"), ("db-b", "db"), ("db-c", "db"), ("db-late", "db"),
                   ("tail-1", "t"), ("tail-2", "t"),
                   after={"tail-1": ["db-late"], "tail-2": ["tail-1"]})  # fmt: skip
    schedule = Schedule(JobGraph("p", jobs, max_running={"db": 1}))
    assert schedule.pop_ready(10) == ["db-late"]
    schedule.succeed("db-late")
    assert schedule.pop_ready(10) == ["tail-1", "db-a"]
    schedule.succeed("db-a")
    assert schedule.pop_ready(10) == ["db-b"]


def test_put_back_and_requeue_return_the_slot_to_the_best_ranked_job():
    jobs = jobs_of(("db-0", "db"), ("db-1", "db"), ("db-2", "db"), ("child", "c"),
                   after={"child": ["db-2"]})  # fmt: skip
    schedule = Schedule(JobGraph("r", jobs, max_running={"db": 1}))
    assert schedule.pop_ready(10) == ["db-2"]  # the deepest first
    schedule.put_back(["db-2"])  # did not fit a pilot: still the best
    assert schedule.held_count == 2
    assert schedule.pop_ready(10) == ["db-2"]
    schedule.requeue("db-2")  # retried: goes again, before the held ones
    assert schedule.state["db-2"] is READY
    assert schedule.pop_ready(10) == ["db-2"]
    schedule.succeed("db-2")
    assert schedule.pop_ready(10) == ["db-0", "child"]
    schedule.requeue("db-0")  # db-0 outranks db-1 still
    assert schedule.pop_ready(10) == ["db-0"]


def test_fail_and_cancel_free_the_slot():
    schedule = Schedule(throttled(4, limit=1))
    assert schedule.pop_ready(10) == ["db-0"]
    assert schedule.fail("db-0") == []
    assert schedule.pop_ready(10) == ["db-1"]
    schedule.cancel("db-1")
    assert schedule.pop_ready(10) == ["db-2"]
    assert sorted(schedule.cancel_unstarted()) == ["db-3"]
    assert schedule.held_count == schedule.ready_count == 0
    schedule.succeed("db-2")
    assert schedule.finished and schedule.pop_ready(10) == []


def test_labels_without_a_limit_are_not_limited():
    schedule = Schedule(JobGraph("u", jobs_of(*[(f"a-{i}", "a") for i in range(50)])))
    assert schedule.ready_count == 50 and schedule.held_count == 0
    assert len(schedule.pop_ready(100)) == 50


def test_a_label_with_100000_held_jobs_costs_nothing_per_round():
    specs = [(f"db-{i}", "db") for i in range(100_000)] + [("x", "x")]
    schedule = Schedule(JobGraph("big", jobs_of(*specs), trusted=True, max_running={"db": 2}))
    assert schedule.ready_count == 3 and schedule.held_count == 99_998
    started = time.perf_counter()
    for _ in range(2_000):  # the driver's rounds while the pools are full
        taken = schedule.pop_ready(schedule.ready_count)
        assert len(taken) == 3
        schedule.put_back(taken)
    # O(1) per round: ~10 ms here; a re-scan of the held jobs would take minutes.
    assert time.perf_counter() - started < 5


@st.composite
def throttled_graphs(draw) -> JobGraph:
    n = draw(st.integers(1, 18))
    jobs = []
    for i in range(n):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        jobs.append(Job(name=f"j{i}", label=draw(st.sampled_from("abc")), command="true",
                        after=tuple(f"j{p}" for p in sorted(parents))))  # fmt: skip
    labels = sorted({job.label for job in jobs})
    chosen = draw(st.lists(st.sampled_from(labels), unique=True, min_size=1))
    return JobGraph("h", jobs, max_running={label: draw(st.integers(1, 3)) for label in chosen})


@settings(max_examples=300, deadline=None)
@given(g=throttled_graphs(), data=st.data())
def test_never_more_than_the_limit_out_and_every_job_runs(g: JobGraph, data):
    schedule = Schedule(g)
    limits, label = g.max_running, {job.name: job.label for job in g}
    out: set[str] = set()
    failed: set[str] = set()

    def check() -> None:
        per_label = Counter(label[name] for name in out)
        assert all(per_label[lab] <= n for lab, n in limits.items())
        assert all(schedule.state[name] is RUNNING for name in out)
        ready = sum(state is READY for state in schedule.state.values())
        assert schedule.ready_count + schedule.held_count == ready

    def take(limit: int) -> None:
        before = schedule.ready_count
        taken = schedule.pop_ready(limit)
        assert len(taken) == min(limit, before) and not out & set(taken)
        out.update(taken)
        check()
        if limit >= before:  # everything that may go went: a label holds back only when full
            per_label = Counter(label[name] for name in out)
            for lab, held in schedule.held().items():
                assert not held or per_label[lab] == limits[lab]

    def settle(action: str, name: str) -> None:
        out.discard(name)
        if action == "succeed":
            schedule.succeed(name)
        elif action == "fail":
            schedule.fail(name)
            failed.add(name)
        else:
            schedule.requeue(name)
        check()

    check()
    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        action = data.draw(st.sampled_from(["pop", "put_back", "requeue", "succeed", "fail"]))
        if action == "pop" or not out:
            take(data.draw(st.integers(0, 5), label="limit"))
        elif action == "put_back":
            back = data.draw(st.lists(st.sampled_from(sorted(out)), unique=True), label="back")
            schedule.put_back(back)
            out.difference_update(back)
            check()
        else:
            settle(action, data.draw(st.sampled_from(sorted(out)), label=action))
    # Then the driver's steady state: hand out all it may, finish them, until the end.
    for _ in range(2 * len(g) + 2):
        if schedule.finished:
            break
        assert schedule.ready_count or out, "deadlock: held jobs, nothing ready, nothing out"
        take(len(g))
        for name in sorted(out):
            settle("succeed", name)
    assert schedule.finished and not out
    assert set(schedule.state.values()) <= FINAL
    blocked = set().union(*(g.descendants(name) for name in failed)) - failed
    for name, state in schedule.state.items():
        expected = (
            JobState.FAILED if name in failed
            else JobState.BLOCKED if name in blocked
            else JobState.SUCCEEDED
        )  # fmt: skip
        assert state is expected, name


# -- the workflow key -----------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workflow.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


JOBS = """\
jobs:
  - {name: ingest-1, command: 'true'}
  - {name: ingest-2, command: 'true'}
  - {name: butler, label: butler_write, command: 'true', after: [ingest-1]}
"""


def problems_of(path: Path) -> list[str]:
    with pytest.raises(GraphError) as info:
        load_workflow(path)
    return info.value.problems


def test_the_key_is_read_and_kept_read_only(tmp_path):
    graph = load_workflow(write(tmp_path, "max_running: {ingest: 2, butler_write: 1}\n" + JOBS))
    assert dict(graph.max_running) == {"ingest": 2, "butler_write": 1}
    with pytest.raises(TypeError):
        graph.max_running["ingest"] = 5  # type: ignore[index]
    assert dict(load_workflow(write(tmp_path, JOBS)).max_running) == {}
    assert dict(load_workflow(write(tmp_path, "max_running: {}\n" + JOBS)).max_running) == {}


def test_a_max_running_that_is_not_a_mapping_says_how_to_write_one(tmp_path):
    path = write(tmp_path, "max_running: 2\n" + JOBS)
    assert problems_of(path) == [
        f"{path}: max_running: must be a mapping of label to a number of jobs, "
        "e.g. max_running: {ingest: 2}; not int 2"
    ]


def test_a_label_no_job_has_is_named_with_the_labels_there_are(tmp_path):
    path = write(tmp_path, "max_running: {ingset: 2, nothing_like_it: 1}\n" + JOBS)
    assert problems_of(path) == [
        f"{path}:1: max_running: no job has label 'ingset'; did you mean 'ingest'? throttle "
        "one of the workflow's labels (butler_write, ingest) or remove it",
        f"{path}:1: max_running: no job has label 'nothing_like_it'; throttle one of the "
        "workflow's labels (butler_write, ingest) or remove it",
    ]


@pytest.mark.parametrize("limit", ["0", "-1", "1.5", "'2'", "true", "null"])
def test_a_limit_must_be_a_whole_number_of_at_least_one(tmp_path, limit):
    path = write(tmp_path, f"max_running: {{ingest: {limit}}}\n" + JOBS)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:1: max_running: ingest: ")
    assert "must be a whole number of at least 1" in problem
    assert "e.g. max_running: {ingest: 2}" in problem


def test_other_problems_are_reported_with_the_throttles_ones(tmp_path):
    path = write(tmp_path, "max_running: {ingest: 0}\njobs: [{name: ingest-1, comand: x}]\n")
    problems = problems_of(path)
    assert any("max_running: ingest: 0" in p for p in problems)
    assert any("did you mean 'command'" in p for p in problems)


def test_the_python_api_takes_max_running_and_checks_it():
    wf = Workflow("api", max_running={"ingest": 2})
    wf.shell("ingest-1", "true")
    assert dict(wf.build().max_running) == {"ingest": 2}
    bad = Workflow("api", max_running={"ingest": 0, "other": 1})
    bad.shell("ingest-1", "true")
    with pytest.raises(GraphError) as info:
        bad.build()
    assert [p.split(": max_running: ")[0] for p in info.value.problems] == ["workflow 'api'"] * 2
    # JobGraph built directly checks its throttles too (a 0 would hold jobs forever).
    with pytest.raises(GraphError, match="max_running: db: 0 must be a whole number"):
        JobGraph("direct", jobs_of(("db-1", "db")), max_running={"db": 0})


def test_throttles_survive_the_saved_copy_and_a_partial_restart(tmp_path):
    graph = graph_from_dict(
        {"name": "s", "max_running": {"db": 2}, "jobs": [
            {"name": f"db-{i}", "command": "true"} for i in range(4)]},
    )  # fmt: skip
    data = graph_to_dict(graph)
    assert data["max_running"] == {"db": 2}
    assert dict(graph_from_dict(data).max_running) == {"db": 2}
    path = tmp_path / "workflow.json"
    path.write_text(saved_text(data), encoding="utf-8")
    keep = {"db-2", "db-3"}
    again = graph_from_saved(read_saved(path, keep=keep), source=str(path), keep=keep)
    assert dict(again.max_running) == {"db": 2}
    assert Schedule(again).ready_count == 2
    none = graph_from_saved(graph_to_dict(JobGraph("n", jobs_of(("a", "a")))), source="copy")
    assert dict(none.max_running) == {} and "max_running" not in graph_to_dict(none)


def test_a_restarted_run_keeps_its_throttles(tmp_path, pilot_home):
    from executor.model.states import RunState
    from executor.runs.resume import load_run
    from executor.runs.start import start_run
    from executor.sites import get_site
    from executor.store import Store, locate
    from executor.store.recorder import RunRecorder

    graph = JobGraph("restart", jobs_of(*[(f"db-{i}", "db") for i in range(5)]),
                     max_running={"db": 2})  # fmt: skip
    locations = locate()
    with Store(locations.db) as store:
        context = start_run(graph, get_site(None), store, locations)
        recorder = RunRecorder(store, context.run_id)
        for state in (JobState.READY, JobState.RUNNING, JobState.SUCCEEDED):
            recorder.job_state("db-0", state)
        recorder.run_state(RunState.FAILED)
        recorder.flush()
        resumed = load_run(store, context.run_id)
    assert dict(resumed.graph.max_running) == {"db": 2}
    schedule = Schedule(resumed.graph)  # as the restart's driver builds it
    assert schedule.pop_ready(10) == ["db-1", "db-2"] and schedule.held_count == 2


def test_validate_shows_the_throttles(tmp_path):
    path = write(tmp_path, "max_running: {ingest: 2}\n" + JOBS)
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(path), "--json"], prog_name="pilot")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["max_running"] == {"ingest": 2}
    result = runner.invoke(cli, ["validate", str(path)], prog_name="pilot")
    assert result.exit_code == 0, result.output
    assert "max_running" in result.output
    row = next(line for line in result.output.splitlines() if "ingest" in line)
    other = next(line for line in result.output.splitlines() if "butler_write" in line)
    assert row.rstrip(" │|").endswith("2") and other.rstrip(" │|").endswith("-")
    plain = runner.invoke(cli, ["validate", str(write(tmp_path, JOBS)), "--json"])
    assert json.loads(plain.output)["max_running"] == {}


# -- a real run -----------------------------------------------------------------------------

# Each job counts itself in (under an flock), logs how many jobs were in at that moment,
# then waits until three are in at once (or for its deadline), and counts itself out.
OVERLAP = """\
import fcntl, sys, time
counter, log, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])

def change(delta):
    with open(counter + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(counter) as f:
                n = int(f.read() or 0) + delta
        except FileNotFoundError:
            n = delta
        with open(counter, "w") as f:
            f.write(str(n))
        if delta > 0:
            with open(log, "a") as f:
                f.write(f"{n}\\n")
        return n

change(+1)
while change(0) < 3 and time.monotonic() < deadline:
    time.sleep(0.05)
change(-1)
"""


def _overlap_run(tmp_path: Path, max_running: dict | None) -> tuple[int, str]:
    """Run six `db` jobs on six workers; the most that ran at once, and the run id."""
    tmp_path.mkdir(parents=True)
    script = tmp_path / "overlap.py"
    script.write_text(OVERLAP)
    site = tmp_path / "six-workers.yaml"
    site.write_text(yaml.safe_dump({
        "backend": "local", "pools": {"default": {"cores": 1, "workers": 6, "max_blocks": 1}},
    }))  # fmt: skip
    counter, log = tmp_path / "counter", tmp_path / "overlaps"
    command = [sys.executable, str(script), str(counter), str(log), "3"]
    data: dict = {"name": "throttle", "jobs": [
        {"name": f"db-{i}", "label": "db", "command": command} for i in range(6)]}  # fmt: skip
    if max_running is not None:
        data["max_running"] = max_running
    path = write_workflow(tmp_path, data)
    result = run_pilot("submit", path, "--site", site, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert counter.read_text() == "0"  # every job counted itself out
    overlaps = [int(n) for n in log.read_text().split()]
    assert len(overlaps) == 6
    return max(overlaps), result.stdout.split()[1]


def _most_handed_out(run_id: str) -> int:
    """Most attempts out at once: from being handed to Parsl to their end."""
    from executor.store import Store, locate

    with Store(locate().db) as store:
        rows = store.query("SELECT submitted, end FROM attempts WHERE run_id = ?", [run_id])
    assert len(rows) == 6 and all(r["submitted"] and r["end"] for r in rows)
    # An end before a start at the same instant: the driver hands out after it learns.
    events = sorted([(r["submitted"], 1) for r in rows] + [(r["end"], -1) for r in rows])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most


@pytest.mark.integration
def test_a_real_run_never_runs_more_than_the_limit_of_a_label(tmp_path: Path, pilot_home: Path):
    # Without the key, jobs overlap beyond two (they wait until three are in at once).
    free, _ = _overlap_run(tmp_path / "free", None)
    assert free >= 3, f"without max_running at most {free} jobs overlapped: the test proves nothing"

    limited, run_id = _overlap_run(tmp_path / "limited", {"db": 2})
    assert limited == 2
    assert _most_handed_out(run_id) == 2


def test_jobs_a_restart_finds_still_running_are_taken_out_of_the_queue():
    """Reattached jobs run: never handed out again, and they count against their label."""
    jobs = jobs_of(("a", "db"), ("b", "db"), ("c", "db"), ("d", "x"), ("e", "x"))
    graph = JobGraph("t", jobs, max_running={"db": 2})
    schedule = Schedule(graph)
    assert schedule.take(["c", "e", "nowhere"]) == ["c", "e"]
    assert schedule.state["c"] is RUNNING and schedule.state["e"] is RUNNING
    taken = schedule.pop_ready(10)
    assert "c" not in taken and "e" not in taken
    assert sum(1 for name in taken if graph[name].label == "db") == 1  # c holds one slot
    assert schedule.take(["d"]) == []  # taken already: running, not ready
