"""An outcome once shown is never lost, and a succeeded job is never run again.

Real detached drivers killed with SIGKILL, real worker losses, a real interchange
killed under a running run. Jobs gate on files the test creates, so every step waits
on a condition, never on time.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import psutil
import pytest
from helpers import pilot_cmd, run_pilot, status_json, wait_for, write_workflow

from executor.store import Store, locate

# Each job appends its name to done.log when its work is done.
DONE = 'echo "$PILOT_JOB_NAME" >> {done}'
# A job that says it started, then waits for a gate file, then is done.
GATED = "echo x >> {started}; while [ ! -e {gate} ]; do sleep 0.05; done; " + DONE


def _one_bundle(tmp_path: Path, gated: dict[int, tuple[Path, Path]]) -> tuple[Path, Path]:
    """Ten jobs in one bundle (static clustering); job i waits on gated[i] = (started, gate)."""
    done = tmp_path / "done.log"
    jobs = []
    for i in range(10):
        command = GATED.format(started=gated[i][0], gate=gated[i][1], done=done) if (
            i in gated) else DONE.format(done=done)  # fmt: skip
        jobs.append({"name": f"job-{i}", "label": "work", "cluster": "all", "command": command})
    path = write_workflow(
        tmp_path, {"name": "bundle", "cluster_by": "cluster", "cluster_max": 10, "jobs": jobs}
    )
    return path, done


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _driver_pid(run_id: str) -> int:
    with Store(locate().db) as store:
        return store.query("SELECT pid FROM runs WHERE id = ?", [run_id])[0]["pid"]


def _kill_driver(run_id: str, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: status_json(run_id)["state"] == "driver_lost", what="driver_lost")


def _restart_through_gate(run_id: str, started: Path, gate: Path) -> subprocess.CompletedProcess:
    """Restart; open the gate only once the restarted gated job runs (the old one is gone)."""
    restart = subprocess.Popen(
        pilot_cmd("restart", run_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: len(_lines(started)) >= 2 or restart.poll() is not None,
                 timeout=120, what="the gated job to start again")  # fmt: skip
        gate.touch()
        out, err = restart.communicate(timeout=120)
    finally:
        if restart.poll() is None:
            restart.kill()
            restart.communicate()
    return subprocess.CompletedProcess(restart.args, restart.returncode, out, err)


def test_jobs_of_a_running_bundle_show_as_they_finish_and_survive_kill_9(
    tmp_path: Path, pilot_home: Path
):
    started, gate = tmp_path / "started", tmp_path / "gate"
    path, done = _one_bundle(tmp_path, {5: (started, gate)})
    run_id = run_pilot("submit", path, "--detach").stdout.split()[1]
    wait_for(started.exists, what="job-5 to start, after job-0..4 finished")

    # The bundle is still running (job-5 waits), yet its first five jobs show as done.
    status = wait_for(
        lambda: (s := status_json(run_id))["jobs"]["succeeded"] == 5 and s,
        timeout=30, what="status to show the five finished jobs",
    )  # fmt: skip
    # job-5 runs; job-6..9 wait behind it in the same bundle: queued, not running.
    assert status["state"] == "running"
    assert (status["jobs"]["running"], status["jobs"]["queued"]) == (1, 4)
    _kill_driver(run_id, _driver_pid(run_id))

    restarted = _restart_through_gate(run_id, started, gate)

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "5 already succeeded" in restarted.stderr
    assert Counter(_lines(done)) == {f"job-{i}": 1 for i in range(10)}


def test_a_restart_records_what_finished_while_the_driver_could_not_read_it(
    tmp_path: Path, pilot_home: Path
):
    first, gate1 = tmp_path / "first-started", tmp_path / "gate1"
    started, gate = tmp_path / "started", tmp_path / "gate"
    path, done = _one_bundle(tmp_path, {0: (first, gate1), 5: (started, gate)})
    run_id = run_pilot("submit", path, "--detach").stdout.split()[1]
    wait_for(first.exists, what="the bundle to start")
    driver = _driver_pid(run_id)
    os.kill(driver, signal.SIGSTOP)  # the driver hears nothing from here on
    try:
        gate1.touch()
        wait_for(started.exists, what="job-0..4 to finish and job-5 to start")
    finally:
        _kill_driver(run_id, driver)
    assert status_json(run_id)["jobs"]["succeeded"] == 0  # the store never heard of them

    restarted = _restart_through_gate(run_id, started, gate)

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "5 already succeeded" in restarted.stderr
    assert Counter(_lines(done)) == {f"job-{i}": 1 for i in range(10)}
    with Store(locate().db) as store:
        recovered = store.query(
            "SELECT job FROM events WHERE run_id = ? AND detail = ?",
            [run_id, "recovered from the outcome log"],
        )
        first_attempts = store.query(
            "SELECT state FROM attempts WHERE run_id = ? AND job = 'job-1'", [run_id]
        )
    assert sorted(r["job"] for r in recovered) == [f"job-{i}" for i in range(5)]
    assert [a["state"] for a in first_attempts] == ["succeeded"]


def test_a_worker_lost_mid_bundle_does_not_rerun_the_jobs_it_finished(
    tmp_path: Path, pilot_home: Path
):
    done = tmp_path / "done.log"
    jobs = [
        {"name": "before", "label": "w", "cluster": "c", "command": DONE.format(done=done)},
        # Runs inside the worker process (no memory request) and ends it: the bundle's
        # future fails with a lost worker, after "before" finished in that same bundle.
        {"name": "crash", "label": "w", "cluster": "c", "function": "os:_exit", "args": [3]},
    ]
    path = write_workflow(tmp_path, {"name": "lost", "cluster_by": "cluster",
                                     "defaults": {"retries": 0}, "jobs": jobs})  # fmt: skip

    result = run_pilot("submit", path, timeout=240)

    assert result.returncode == 1, result.stdout + result.stderr
    assert Counter(_lines(done)) == {"before": 1}
    with Store(locate().db) as store:
        rows = store.query("SELECT name, state, attempts FROM jobs ORDER BY position")
    assert [(r["name"], r["state"], r["attempts"]) for r in rows][0] == ("before", "succeeded", 1)
    assert rows[1]["state"] == "failed"


def test_a_site_failing_mid_run_exits_1_and_leaves_nothing_running(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    started = tmp_path / "started"
    path = write_workflow(tmp_path, {"name": "broken-site", "jobs": [
        {"name": "long", "command": f"touch {started}; sleep 60"},
        {"name": "later", "command": "true", "after": ["long"]},
    ]})  # fmt: skip
    submit = subprocess.Popen(
        pilot_cmd("submit", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env,
    )  # fmt: skip
    try:
        wait_for(started.exists, what="the job to start")
        interchanges = [
            p for p in psutil.Process(submit.pid).children(recursive=True)
            if any("interchange" in part for part in p.cmdline())
        ]  # fmt: skip
        assert interchanges
        for process in interchanges:
            process.kill()
        out, err = submit.communicate(timeout=120)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.communicate()

    assert submit.returncode == 1, out + err
    assert "interchange" in err and "pilot restart" in err
    run_id = out.split()[1]
    status = status_json(run_id)
    assert status["state"] == "failed"
    assert status["jobs"]["running"] == 0 and status["jobs"]["ready"] == 0
    with Store(locate().db) as store:
        open_attempts = store.query(
            "SELECT * FROM attempts WHERE run_id = ? AND state = 'running'", [run_id]
        )
    assert open_attempts == []


@pytest.mark.parametrize("install_fails", [True, False])
def test_ci_fails_when_the_install_fails(tmp_path: Path, install_fails: bool):
    """`.ci/run` runs the README's test command so that a failed install fails CI."""
    root = Path(__file__).resolve().parent.parent
    script = (root / ".ci" / "run").read_text()
    readme = (root / "README.md").read_text()
    assert "pip install '.[test]' && pytest" in readme
    section = script.split("# >>> test command\n")[1].split("# <<< test command\n")[0]
    assert "pip install '.[test]' && pytest" in section
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "pip").write_text(f"#!/bin/sh\nexit {1 if install_fails else 0}\n")
    (stubs / "pytest").write_text(f"#!/bin/sh\ntouch {tmp_path / 'tested'}\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    harness = f"set -euo pipefail\n{section}\necho reached-the-end\n"
    result = subprocess.run(
        ["bash", "-c", harness], capture_output=True, text=True,
        env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"},
    )  # fmt: skip
    if install_fails:
        assert result.returncode != 0 and "reached-the-end" not in result.stdout
        assert not (tmp_path / "tested").exists()
    else:
        assert result.returncode == 0 and "reached-the-end" in result.stdout
        assert (tmp_path / "tested").exists()
