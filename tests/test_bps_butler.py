"""End to end: ``bps submit`` of a real quantum graph with pilot as the plugin.

A small Butler repository (SQLite registry, posix datastore) and a pipeline of
``lsst.pipe.base.tests.simpleQGraph.AddTask`` chained three deep over two detectors:
bps builds the quantum graph (``pipetask qgraph``), pilot runs ``pipetask
pre-exec-init-qbb``, six ``pipetask run-qbb`` quanta and the final job (``butler
transfer-from-graph``), and the outputs land in the repository. Then a second run
whose driver is killed with SIGKILL mid-way: ``bps restart`` finishes it without
rerunning what had finished.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from bps_butler import (
    ADDEND,
    INPUT,
    bps,
    bps_environment,
    make_repo,
    outputs,
    run_id_of,
    write_config,
)
from bps_helpers import SERVICE_CLASS, wait_for_no_helpers, wait_until_ended
from helpers import wait_for

pytest.importorskip("lsst.ctrl.bps", reason="needs the bps extra: pip install '.[bps]'")
pytest.importorskip("lsst.pipe.base.tests.simpleQGraph", reason="needs lsst-pipe-base")

from lsst.ctrl.bps import WmsStates  # noqa: E402

from executor.bps import PilotService  # noqa: E402
from executor.store import Store, locate  # noqa: E402
from executor.store.queries import attempts_of, get_run, job_states  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
TASKS, DETECTORS = 3, 2


@pytest.fixture
def repo(tmp_path: Path, pilot_home: Path) -> tuple[Path, Path, dict]:
    pipeline = make_repo(tmp_path, tasks=TASKS, detectors=DETECTORS)
    return tmp_path, pipeline, bps_environment(SERVICE_CLASS, pilot_home)


def _expected() -> list[float]:
    return [value + ADDEND * TASKS for value in INPUT]


def test_bps_submit_runs_the_quantum_graph_into_the_butler(repo, monkeypatch):
    root, pipeline, env = repo
    run = "u/tester/addtasks/run1"
    config = write_config(root, pipeline, output_run=run, service=SERVICE_CLASS)

    submitted = bps("submit", str(config), cwd=root, env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = run_id_of(submitted.stdout)
    monkeypatch.setenv("PILOT_HOME", env["PILOT_HOME"])
    service = PilotService({})
    assert wait_until_ended(service, run_id, timeout=300) is WmsStates.SUCCEEDED
    wait_for_no_helpers(run_id)

    # Every quantum's output, and the final job put them in the output run.
    final_type = f"add_dataset{TASKS}"
    assert outputs(root, run, final_type) == {d: _expected() for d in range(DETECTORS)}

    reported = bps("report", "--id", run_id, cwd=root, env=env)
    assert reported.returncode == 0, reported.stderr
    text = reported.stdout
    for label, count in (("pipetaskInit", 1), ("task0", DETECTORS), ("task2", DETECTORS),
                         ("finalJob", 1)):  # fmt: skip
        line = next((row for row in text.splitlines() if label in row), None)
        assert line is not None and str(count) in line.split(), text
    status = bps("status", "--id", run_id, cwd=root, env=env)
    assert status.returncode == WmsStates.SUCCEEDED.value, status.stdout + status.stderr


def test_bps_restart_after_a_killed_driver_reruns_nothing_that_finished(repo, monkeypatch):
    root, pipeline, env = repo
    run = "u/tester/addtasks/run2"
    config = write_config(root, pipeline, output_run=run, service=SERVICE_CLASS)
    submitted = bps("submit", str(config), cwd=root, env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = run_id_of(submitted.stdout)
    monkeypatch.setenv("PILOT_HOME", env["PILOT_HOME"])
    db = locate().db

    def first_level_done() -> dict[str, str] | None:
        with Store(db) as store:
            states = job_states(store, run_id)
        done = {job for job, state in states.items() if state == "succeeded"}
        return states if any("_task0_" in job for job in done) else None

    states = wait_for(first_level_done, timeout=240, what="the first quanta to succeed")
    assert states["finalJob"] != "succeeded"  # the kill lands mid-run
    with Store(db) as store:
        driver = get_run(store, run_id)["pid"]
    os.kill(driver, signal.SIGKILL)
    service = PilotService({})
    wait_for(lambda: service.get_status(run_id)[0] is WmsStates.FAILED, timeout=30,
             what="the run to show its driver lost")  # fmt: skip
    with Store(db) as store:
        finished = {job for job, state in job_states(store, run_id).items() if state == "succeeded"}
    assert "pipetaskInit" in finished and len(finished) < 2 + TASKS * DETECTORS

    submit_dir = root / "submit" / run
    restarted = bps("restart", "--id", str(submit_dir), cwd=root, env=env)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert f"Run Id: {run_id}" in restarted.stdout
    assert wait_until_ended(service, run_id, timeout=300) is WmsStates.SUCCEEDED
    wait_for_no_helpers(run_id)

    with Store(db) as store:
        for job in finished:  # nothing that had finished ran again
            assert len(attempts_of(store, run_id, job)) == 1, job
        assert set(job_states(store, run_id).values()) == {"succeeded"}
    assert outputs(root, run, f"add_dataset{TASKS}") == {d: _expected() for d in range(DETECTORS)}
