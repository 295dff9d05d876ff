"""Restart reruns only what did not succeed, from anywhere, with the saved environment."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from helpers import pilot_cmd, run_pilot, status_json, wait_for, write_workflow


def test_restart_reruns_only_what_did_not_succeed(tmp_path: Path, pilot_home: Path):
    project = tmp_path / "project"
    flag = tmp_path / "fixed"
    path = write_workflow(project, {
        "name": "restartable",
        "jobs": [
            {"name": "good", "command": "echo ran >> good.log"},
            {"name": "broken", "command": f"echo ran >> broken.log; test -e {flag}",
             "after": ["good"]},
            {"name": "child", "command": 'echo "$MY_SETTING" > child.out', "after": ["broken"]},
            {"name": "never-started", "command": "echo ran >> never.log", "after": ["child"]},
        ],
    })  # fmt: skip
    env = {**os.environ, "MY_SETTING": "from-submit"}

    first = run_pilot("submit", path, cwd=project, env=env)
    assert first.returncode == 1, first.stderr
    run_id = first.stdout.split()[1]
    assert status_json(run_id)["jobs"]["blocked"] == 2

    flag.touch()
    # Another directory and a changed environment: neither may change what the jobs see.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_now = {**os.environ, "MY_SETTING": "changed-later"}
    second = run_pilot("restart", run_id, cwd=elsewhere, env=env_now)

    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.splitlines()[0] == f"run {run_id}"
    assert (project / "good.log").read_text() == "ran\n"  # never rerun
    assert (project / "broken.log").read_text() == "ran\nran\n"
    assert (project / "child.out").read_text() == "from-submit\n"
    assert (project / "never.log").read_text() == "ran\n"
    assert not list(elsewhere.iterdir())
    status = status_json(run_id)
    assert status["state"] == "succeeded"
    assert status["jobs"]["succeeded"] == 4
    # Attempt numbers continue across the restart.
    assert run_pilot("logs", run_id, "broken", "--attempt", "2").returncode == 0


def test_restart_is_refused_while_the_driver_is_alive(tmp_path: Path, pilot_home: Path):
    path = write_workflow(
        tmp_path, {"name": "busy", "jobs": [{"name": "wait", "command": "sleep 30"}]}
    )
    with subprocess.Popen(pilot_cmd("submit", path), stdout=subprocess.PIPE, text=True) as driver:
        try:
            run_id = driver.stdout.readline().split()[1]
            refused = run_pilot("restart", run_id)
            assert refused.returncode == 2
            assert "still running" in refused.stderr
        finally:
            driver.send_signal(signal.SIGINT)
            assert driver.wait(timeout=60) == 130


def test_restart_after_the_driver_was_killed(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "killed",
        "jobs": [
            {"name": "first", "command": "echo ran >> first.log"},
            {"name": "second", "command": "sleep 600", "after": ["first"], "walltime": "20m"},
        ],
    })  # fmt: skip
    with subprocess.Popen(pilot_cmd("submit", path), stdout=subprocess.PIPE, text=True) as driver:
        run_id = driver.stdout.readline().split()[1]
        wait_for(lambda: _first_done_second_running(run_id), what="second to start")
        children = _descendants(driver.pid)
        driver.kill()
        driver.wait()
    try:
        assert wait_for(lambda: status_json(run_id)["state"] == "driver_lost", what="driver_lost")
    finally:
        # A SIGKILLed driver leaves Parsl's processes behind (cleaning them up is
        # the work of `pilot restart`/`cancel` in a later change); remove them here.
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (tmp_path / "workflow.yaml").write_text("edited after submit: must not matter")
    with subprocess.Popen(pilot_cmd("restart", run_id), stdout=subprocess.PIPE, text=True) as again:
        try:
            assert again.stdout.readline().strip() == f"run {run_id}"
            wait_for(lambda: _first_done_second_running(run_id), what="second to rerun")
            assert status_json(run_id)["state"] == "running"
            assert (tmp_path / "first.log").read_text() == "ran\n"
        finally:
            again.send_signal(signal.SIGINT)
            assert again.wait(timeout=60) == 130


def _first_done_second_running(run_id: str) -> bool:
    jobs = status_json(run_id)["jobs"]
    return jobs["succeeded"] == 1 and jobs["running"] == 1


def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]
