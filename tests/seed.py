"""Runs written straight into a real monitoring.db, as a driver (any user's) would leave them.

For tests of the readers (status, reports, dashboard, gc) that need owners, ages,
pilots and hostile names that a real run here cannot produce quickly or at all.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from executor.model.states import JobState, RunState
from executor.store import Store
from executor.store.recorder import RunRecorder, create_run

# The moves a driver records to bring a job from pending to each state.
_PATHS = {
    JobState.PENDING: (),
    JobState.READY: (JobState.READY,),
    JobState.RUNNING: (JobState.READY, JobState.RUNNING),
    JobState.SUCCEEDED: (JobState.READY, JobState.RUNNING, JobState.SUCCEEDED),
    JobState.FAILED: (JobState.READY, JobState.RUNNING, JobState.FAILED),
    JobState.BLOCKED: (JobState.BLOCKED,),
    JobState.CANCELLED: (JobState.CANCELLED,),
}

# Job names, labels, commands and logs are user data; the pages must show these as text.
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_LABEL = "<img src=x onerror=alert(2)>"


def seed_run(
    store: Store,
    runs_root: Path,
    run_id: str,
    *,
    owner: str = "alice",
    jobs: list[dict[str, Any]],
    state: RunState = RunState.SUCCEEDED,
    created: float | None = None,
    host: str = "elsewhere.invalid",
) -> dict[str, Any]:
    """Write a run with ``jobs`` (dicts: name, label, state, and optionally start, runtime,
    block, exit_code, stderr text) and its run directory; return the runs row."""
    created = time.time() if created is None else created
    run_dir = runs_root / run_id
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "workflow.json").write_text(json.dumps({"name": "seeded"}))
    row = {
        "id": run_id, "name": "seeded", "owner": owner, "host": host, "pid": 1,
        "pid_started": 0.0, "site": "local", "state": RunState.RUNNING.value,
        "n_jobs": len(jobs), "workflow_copy": str(run_dir / "workflow.json"),
        "workflow_hash": "0" * 64, "run_dir": str(run_dir), "workdir": str(runs_root),
        "created": created, "started": created, "heartbeat": created, "pilot_version": "test",
    }  # fmt: skip
    create_run(store, row, [(j["name"], j["label"], j.get("command", "true")) for j in jobs])
    recorder = RunRecorder(store, run_id)
    for index, job in enumerate(jobs):
        job_state = JobState(job["state"])
        if "start" in job:
            # Named by position: a hostile job name is no path.
            stderr = run_dir / "logs" / f"job-{index}" / "attempt-1.err"
            stderr.parent.mkdir()
            stderr.write_text(job.get("stderr", ""))
            start = created + job["start"]
            recorder.attempt_submitted(job["name"], 1, start)
            recorder.attempt_finished(
                job["name"], 1,
                {
                    "state": "failed" if job_state is JobState.FAILED else job["state"],
                    "start": start,
                    "end": None if job_state is JobState.RUNNING else start + job["runtime"],
                    "host": socket.gethostname(), "block_id": job.get("block", "0"),
                    "exit_code": job.get("exit_code", 0),
                    "failure_class": "exit_code" if job_state is JobState.FAILED else None,
                    "stderr": str(stderr),
                },
            )  # fmt: skip
            record_reaching(recorder, job["name"], job_state, attempts=1)
        elif job_state is JobState.RUNNING:  # running means started: its attempt has a start
            recorder.attempt_submitted(job["name"], 1, created)
            recorder.attempt_started(job["name"], 1, {"start": created, "host": "seeded"})
            record_reaching(recorder, job["name"], job_state, attempts=1)
        else:
            record_reaching(recorder, job["name"], job_state)
        recorder.flush()
    if state is not RunState.RUNNING:
        recorder.run_state(state)
        store.write(
            lambda conn: conn.execute(
                "UPDATE runs SET ended = ?, heartbeat = ? WHERE id = ?",
                (created + 60, created + 60, run_id),
            )
        )
    return store.query("SELECT * FROM runs WHERE id = ?", [run_id])[0]


def record_reaching(
    recorder: RunRecorder, name: str, state: JobState, *, attempts: int | None = None
) -> None:
    """Queue the legal moves that bring job ``name`` from pending to ``state``.

    The store refuses any other (executor.store.moves); ``attempts`` goes with the last.
    """
    for step in _PATHS[state]:
        recorder.job_state(name, step, attempts=attempts if step is state else None)
