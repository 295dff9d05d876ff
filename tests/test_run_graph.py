"""A real local site runs real graphs: order, keep-going, retries, walltime, functions."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from helpers import processes_with, run_pilot, status_json, wait_for, write_workflow

import executor
from executor.model.states import RunState
from executor.store import Store, locate
from executor.store.queries import attempts_of, job_states

# Each job appends "<start> <end>" (from the job's own clock) to times/<name>.
TIMED = (
    'mkdir -p "$PILOT_RUN_DIR/times"; s=$(date +%s.%N); sleep {sleep}; '
    'echo "$s $(date +%s.%N)" > "$PILOT_RUN_DIR/times/$PILOT_JOB_NAME"'
)


def test_children_start_after_all_their_parents_ended(pilot_home: Path):
    wf = executor.Workflow("fan")
    wf.shell("split", TIMED.format(sleep=0.1), label="split")
    middles = [
        wf.shell(f"work-{i}", TIMED.format(sleep=0.1 * (i % 3)), after=["split"]) for i in range(6)
    ]
    left = wf.shell("merge-a", TIMED.format(sleep=0), after=middles[:3])
    right = wf.shell("merge-b", TIMED.format(sleep=0), after=middles[3:])
    wf.shell("final", TIMED.format(sleep=0), after=[left, right])
    graph = wf.build()

    result = executor.run(graph)

    assert result.state is RunState.SUCCEEDED
    times = {}
    for path in (result.run_dir / "times").iterdir():
        start, end = map(float, path.read_text().split())
        times[path.name] = (start, end)
    assert set(times) == set(graph.names)
    for parent, child in graph.edges():
        assert times[child][0] >= times[parent][1], f"{child} started before {parent} ended"


def test_failure_blocks_descendants_while_an_independent_branch_finishes(
    tmp_path: Path, pilot_home: Path
):
    path = write_workflow(tmp_path, {
        "name": "keep-going",
        "jobs": [
            {"name": "bad",
             "command": "echo 'about to fail' >&2; echo 'the real reason' >&2; exit 3"},
            {"name": "after-bad", "command": "true", "after": ["bad"]},
            {"name": "after-after-bad", "command": "true", "after": ["after-bad"]},
            # The independent branch is still running when `bad` fails.
            {"name": "slow", "command": "sleep 1.5"},
            {"name": "after-slow", "command": "echo done", "after": ["slow"]},
        ],
    })  # fmt: skip

    result = run_pilot("submit", path)

    assert result.returncode == 1, result.stderr
    run_id = result.stdout.splitlines()[0].split()[1]
    assert result.stdout.splitlines()[0] == f"run {run_id}"
    status = status_json(run_id)
    assert status["state"] == "failed"
    assert status["jobs"] == {
        "pending": 0, "ready": 0, "queued": 0, "running": 0, "succeeded": 2,
        "failed": 1, "blocked": 2, "cancelled": 0,
    }  # fmt: skip
    report = json.loads(run_pilot("report", run_id, "--json").stdout)
    [failure] = report["failed"]
    assert failure["job"] == "bad"
    assert failure["exit_code"] == 3
    assert failure["stderr_tail"][-1] == "the real reason"
    text = run_pilot("report", run_id).stdout
    assert "bad" in text and "the real reason" in text and "exit code 3" in text


def test_retries_record_every_attempt(tmp_path: Path, pilot_home: Path):
    counter = tmp_path / "count"
    path = write_workflow(tmp_path, {
        "name": "retries",
        "defaults": {"retries": 2},
        "jobs": [
            # Fails twice, then succeeds on the third attempt.
            {"name": "flaky", "command": f'echo x >> {counter}; echo "attempt $PILOT_ATTEMPT"; '
                                         f'[ $(wc -l < {counter}) -ge 3 ]'},
            {"name": "hopeless", "command": "echo nope >&2; exit 5", "retries": 1},
        ],
    })  # fmt: skip

    result = run_pilot("submit", path)

    assert result.returncode == 1
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        flaky = attempts_of(store, run_id, "flaky")
        hopeless = attempts_of(store, run_id, "hopeless")
        states = job_states(store, run_id)
    assert [a["state"] for a in flaky] == ["failed", "failed", "succeeded"]
    assert [a["exit_code"] for a in hopeless] == [5, 5]
    assert states == {"flaky": "succeeded", "hopeless": "failed"}
    first = run_pilot("logs", run_id, "flaky", "--attempt", "1")
    assert first.stdout == "attempt 1\n"
    assert run_pilot("logs", run_id, "flaky").stdout == "attempt 3\n"
    assert run_pilot("logs", run_id, "hopeless", "--stderr").stdout == "nope\n"


def test_walltime_kills_the_whole_process_group(tmp_path: Path, pilot_home: Path):
    marker = f"walltime-{uuid.uuid4().hex}"
    path = write_workflow(tmp_path, {
        "name": "walltime",
        "jobs": [
            # A background grandchild as well: it must die with the job.
            {"name": "stuck", "walltime": "2s",
             "command": f"bash -c 'exec -a {marker} sleep 300' & exec -a {marker} sleep 300"},
            {"name": "quick", "command": "true", "walltime": "1m"},
        ],
    })  # fmt: skip

    started = time.monotonic()
    result = run_pilot("submit", path)

    assert result.returncode == 1
    assert time.monotonic() - started < 60
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        [attempt] = attempts_of(store, run_id, "stuck")
    assert attempt["failure_class"] == "timeout"
    assert "walltime" in attempt["message"]
    assert 2 <= attempt["end"] - attempt["start"] < 15
    assert processes_with(marker) == []


def test_function_job_runs_in_the_workdir_and_records_its_result(tmp_path: Path, pilot_home: Path):
    (tmp_path / "mytasks.py").write_text(
        "import os\n"
        "def area(width, height=1):\n"
        "    print('computing in', os.getcwd())\n"
        "    return {'area': width * height}\n"
    )
    path = write_workflow(tmp_path, {
        "name": "functions",
        "jobs": [
            {"name": "area", "function": "mytasks:area", "args": [3], "kwargs": {"height": 4}}
        ],
    })  # fmt: skip

    # Started from another directory: jobs still run next to the workflow file.
    result = run_pilot("submit", path, cwd=pilot_home.parent)

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        [attempt] = attempts_of(store, run_id, "area")
    assert json.loads(attempt["result"]) == {"area": 12}
    assert run_pilot("logs", run_id, "area").stdout == f"computing in {tmp_path}\n"


def test_hello_example_runs(pilot_home: Path):
    example = Path(__file__).parent.parent / "examples" / "hello" / "workflow.yaml"
    result = run_pilot("submit", example)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    status = wait_for(lambda: status_json(run_id), what="status")
    assert status["jobs"]["succeeded"] == 38
    assert set(status["labels"]) == {"prepare", "isr", "calibrate", "coadd", "summary"}
    assert run_pilot("logs", run_id, "summary").stdout == "4 coadds, total 1683\n"


def test_the_hello_example_fits_every_shipped_site():
    import pytest

    from executor.formats import load_workflow
    from executor.policy.pools import assign_pools
    from executor.sites import get_site

    root = Path(__file__).parent.parent
    graph = load_workflow(root / "examples" / "hello" / "workflow.yaml")
    sites = sorted((root / "executor" / "sites" / "configs").glob("*.yaml"))
    assert sites
    for site_file in sites:
        try:
            assign_pools(graph, get_site(str(site_file)).pools)
        except Exception as exc:  # noqa: BLE001 - reported with the site's name
            pytest.fail(f"{site_file.name}: {exc}")
