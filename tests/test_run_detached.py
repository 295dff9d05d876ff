"""Fire and forget: detached runs, a killed driver, restarts that never repeat work."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from helpers import pilot_cmd, processes_with, run_pilot, status_json, wait_for, write_workflow

from executor.store import Store, locate

# Each job appends its name to done.log when it finishes its work.
RECORD = 'sleep {sleep}; echo "$PILOT_JOB_NAME" >> {log}'


def test_a_detached_run_completes_and_is_visible_from_another_process(
    tmp_path: Path, pilot_home: Path
):
    log = tmp_path / "done.log"
    path = write_workflow(tmp_path, {
        "name": "detached",
        "jobs": [{"name": f"job-{i}", "command": RECORD.format(sleep=0.2, log=log)}
                 for i in range(6)],
    })  # fmt: skip

    started = time.monotonic()
    result = run_pilot("submit", path, "--detach")

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10  # returned at once, not after the run
    run_id = result.stdout.split()[1]
    assert result.stdout.splitlines() == [f"run {run_id}"]
    assert status_json(run_id)["state"] == "running"
    attached = run_pilot("attach", run_id, timeout=120)
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout.splitlines()[-1] == "succeeded: 6 succeeded"
    status = status_json(run_id)
    assert status["state"] == "succeeded" and status["jobs"]["succeeded"] == 6
    assert sorted(log.read_text().split()) == [f"job-{i}" for i in range(6)]
    # The detached driver says in its log what happened, for when a run misbehaves.
    driver_log = (Path(status["run_dir"]) / "driver.log").read_text()
    assert f"run {run_id}: 6 job(s) to run on site 'local'" in driver_log
    assert "progress: 6 succeeded" in driver_log
    assert f"run {run_id} ended succeeded" in driver_log
    watched = run_pilot("status", run_id, "--watch")
    assert watched.returncode == 0 and "succeeded" in watched.stdout


def test_kill_9_of_a_detached_driver_then_restart_runs_every_job_exactly_once(
    tmp_path: Path, pilot_home: Path
):
    log = tmp_path / "done.log"
    chain = [{"name": f"step-{i}", "command": RECORD.format(sleep=0.3, log=log),
              **({"after": [f"step-{i - 1}"]} if i else {})} for i in range(8)]  # fmt: skip
    path = write_workflow(tmp_path, {"name": "survivor", "jobs": chain})
    result = run_pilot("submit", path, "--detach")
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        driver_pid = store.query("SELECT pid FROM runs WHERE id = ?", [run_id])[0]["pid"]
    wait_for(lambda: log.exists() and len(log.read_text().split()) >= 3, what="3 jobs done")

    os.kill(driver_pid, signal.SIGKILL)
    lost = wait_for(
        lambda: (s := status_json(run_id))["state"] == "driver_lost" and s, what="driver_lost"
    )
    assert lost["heartbeat"] is not None

    restarted = run_pilot("restart", run_id, timeout=180)

    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    counts = Counter(log.read_text().split())
    # A job in flight at the kill may have finished its work without being recorded:
    # it is the only one allowed to appear twice.
    assert set(counts) == {f"step-{i}" for i in range(8)}
    assert sum(n - 1 for n in counts.values()) <= 1
    assert status_json(run_id)["state"] == "succeeded"
    with Store(locate().db) as store:
        events = store.query(
            "SELECT detail FROM events WHERE run_id = ? AND job IS NULL ORDER BY id", [run_id]
        )
    assert any("restarted" in (e["detail"] or "") for e in events)
    assert not processes_with(str(Path(lost["run_dir"]) / "parsl" / "000"))


def test_two_concurrent_restarts_one_is_refused(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "twice", "jobs": [{"name": "wait", "command": "exit 1"}]})  # fmt: skip
    run_id = run_pilot("submit", path).stdout.split()[1]
    path.write_text(path.read_text().replace("exit 1", "sleep 30"))
    with subprocess.Popen(pilot_cmd("restart", run_id, "--workflow", path),
                          stdout=subprocess.PIPE, text=True) as first:  # fmt: skip
        try:
            assert first.stdout.readline().strip() == f"run {run_id}"
            second = run_pilot("restart", run_id)
            assert second.returncode == 2
            assert "still running" in second.stderr
        finally:
            first.send_signal(signal.SIGINT)
            assert first.wait(timeout=60) == 130


def test_restart_with_an_edited_workflow_reruns_only_changed_jobs_and_descendants(
    tmp_path: Path, pilot_home: Path
):
    log = tmp_path / "done.log"

    def workflow(prepare_sleep: float) -> dict:
        job = lambda name, sleep=0, after=(): {  # noqa: E731
            "name": name,
            "command": RECORD.format(sleep=sleep, log=log),
            "after": list(after),
        }
        return {"name": "edited", "jobs": [
            job("prepare", prepare_sleep), job("left", after=["prepare"]),
            job("process", after=["left"]), job("right"), job("merge", after=["process", "right"]),
        ]}  # fmt: skip

    path = write_workflow(tmp_path, workflow(0))
    first = run_pilot("submit", path)
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.split()[1]
    log.write_text("")
    edited = write_workflow(tmp_path / "v2", workflow(0))
    # Change one job in the middle: only it and what depends on it rerun.
    before = "- name: process\n  command: sleep 0;"
    edited.write_text(edited.read_text().replace(before, "- name: process\n  command: sleep 0.1;"))
    assert "sleep 0.1" in edited.read_text()

    again = run_pilot("restart", run_id, "--workflow", edited)

    assert again.returncode == 0, again.stderr
    assert sorted(log.read_text().split()) == ["merge", "process"]
    assert status_json(run_id)["jobs"]["succeeded"] == 5
