"""Ctrl-C stops a run cleanly: nothing new starts, running jobs stop, no process is left."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest
from helpers import (
    alive,
    pilot_cmd,
    processes_with,
    run_pilot,
    status_json,
    wait_for,
    write_workflow,
)


@pytest.mark.parametrize("target", ["process", "process-group"])
def test_ctrl_c_cancels_the_run_and_leaves_no_process(
    tmp_path: Path, pilot_home: Path, target: str
):
    marker = f"cancel-{uuid.uuid4().hex}"
    path = write_workflow(tmp_path, {
        "name": "cancel-me",
        "jobs": [
            *({"name": f"long-{i}", "command": f"exec -a {marker} sleep 300"} for i in range(2)),
            {"name": "later", "command": "echo started >> later.log", "after": ["long-0"]},
            *({"name": f"queued-{i}", "command": f"exec -a {marker} sleep 300"} for i in range(6)),
        ],
    })  # fmt: skip
    # Its own session, like a terminal's foreground job: "process-group" is what a
    # terminal's Ctrl-C does (every process in the group gets SIGINT).
    driver = subprocess.Popen(
        pilot_cmd("submit", path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    with driver:
        check_cancel_leaves_nothing(driver, marker, target, tmp_path)


def check_cancel_leaves_nothing(
    driver: subprocess.Popen, marker: str, target: str, tmp_path: Path
) -> None:
    run_id = driver.stdout.readline().split()[1]
    try:
        wait_for(lambda: len(processes_with(marker)) == 2, what="two jobs running")
    except AssertionError:
        driver.kill()
        raise
    # The worker pool is detached from the driver (Parsl starts it in the background),
    # so find it by its run directory; the interchange is the driver's child.
    spawned = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
    spawned += [p.pid for p in processes_with(run_id)]
    assert any("process_worker_pool" in " ".join(psutil.Process(p).cmdline()) for p in spawned)

    if target == "process":
        driver.send_signal(signal.SIGINT)
    else:
        os.killpg(driver.pid, signal.SIGINT)
    code = driver.wait(timeout=60)

    assert code == 130, driver.stderr.read()
    wait_for(lambda: not alive(spawned), timeout=30, what="every process the driver started to end")
    assert processes_with(marker) == []
    status = status_json(run_id)
    assert status["state"] == "cancelled"
    assert status["jobs"]["cancelled"] == 9
    assert not (tmp_path / "later.log").exists()


def test_pilot_cancel_from_another_terminal(tmp_path: Path, pilot_home: Path):
    marker = f"cancel-{uuid.uuid4().hex}"
    path = write_workflow(tmp_path, {
        "name": "cancel-remote",
        "jobs": [{"name": "long", "command": f"exec -a {marker} sleep 300"}],
    })  # fmt: skip
    with subprocess.Popen(pilot_cmd("submit", path), stdout=subprocess.PIPE, text=True) as driver:
        run_id = driver.stdout.readline().split()[1]
        wait_for(lambda: processes_with(marker), what="the job to run")

        result = run_pilot("cancel", run_id)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"run {run_id}: cancelled"
        assert driver.wait(timeout=60) == 130
    assert processes_with(marker) == []
