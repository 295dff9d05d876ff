""""Running" means running: a job handed to a pilot shows queued until its worker starts it.

Two workers, six jobs that print a line and wait on a gate file: while the gate is
closed exactly two jobs run and the rest handed to Parsl are queued, as the store's
attempts say; `pilot logs` shows a running job's lines and `-f` follows them to the end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from helpers import pilot_cmd, run_pilot, status_json, wait_for, write_workflow

from executor.store import Store, locate

GATED = (
    'echo "$PILOT_JOB_NAME" >> {started}; echo "hello from $PILOT_JOB_NAME"; '
    'while [ ! -e {gate} ]; do sleep 0.05; done; echo "bye from $PILOT_JOB_NAME"'
)


def _two_workers(tmp_path: Path) -> Path:
    site = tmp_path / "two-workers.yaml"
    site.write_text(yaml.safe_dump({
        "backend": "local",
        "pools": {"default": {"cores": 1, "workers": 2, "max_blocks": 1}},
    }))  # fmt: skip
    return site


def _attempts(run_id: str) -> list[dict]:
    with Store(locate().db) as store:
        return store.query(
            "SELECT a.job, a.start, a.stdout FROM attempts a JOIN jobs j ON j.run_id = a.run_id "
            "AND j.name = a.job AND j.attempts = a.attempt "
            "WHERE a.run_id = ? AND a.state = 'running'",
            [run_id],
        )


def _started(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_only_started_jobs_show_running_and_their_logs_can_be_followed(
    tmp_path: Path, pilot_home: Path
):
    started, gate = tmp_path / "started", tmp_path / "gate"
    command = GATED.format(started=started, gate=gate)
    jobs = [{"name": f"job-{i}", "label": "work", "command": command} for i in range(6)]
    path = write_workflow(tmp_path, {"name": "queued", "jobs": jobs})
    submitted = run_pilot("submit", path, "--site", _two_workers(tmp_path), "--detach")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_id = submitted.stdout.split()[1]
    follower = None
    try:
        wait_for(lambda: len(_started(started)) == 2, what="two jobs to start")
        status = wait_for(
            lambda: (s := status_json(run_id))["jobs"]["running"] == 2 and s,
            timeout=30, what="status to show the two started jobs running",
        )  # fmt: skip
        attempts = _attempts(run_id)
        running = sorted(a["job"] for a in attempts if a["start"] is not None)
        queued = [a for a in attempts if a["start"] is None]
        assert running == sorted(_started(started))
        assert status["jobs"]["queued"] == len(queued) == len(attempts) - 2 >= 1
        assert status["labels"]["work"]["running"] == 2
        assert status["labels"]["work"]["queued"] == len(queued)
        assert sum(status["jobs"].values()) == 6
        assert all(a["stdout"] for a in attempts)  # log paths known at submit

        job = _started(started)[0]
        shown = run_pilot("logs", run_id, job)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == f"hello from {job}\n"

        out = tmp_path / "follow.out"
        with open(out, "wb") as sink:
            follower = subprocess.Popen(pilot_cmd("logs", run_id, job, "-f"), stdout=sink)
        wait_for(lambda: b"hello" in out.read_bytes(), what="logs -f to print what is there")
        gate.touch()
        assert follower.wait(timeout=60) == 0
        assert out.read_text() == f"hello from {job}\nbye from {job}\n"
        wait_for(lambda: status_json(run_id)["state"] == "succeeded", timeout=120,
                 what="the run to succeed")  # fmt: skip
        final = status_json(run_id)["jobs"]
        assert final["succeeded"] == 6 and final["queued"] == final["running"] == 0
    finally:
        gate.touch()
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        wait_for(lambda: status_json(run_id)["state"] != "running", timeout=120, what="the end")
