"""Runs that outlive the terminal: a detached driver, and cleaning up after a dead one.

``pilot submit --detach`` records the run in the foreground (so bad input still exits
2 and the run id is known), then starts the driver as a new session that ignores
hang-ups, logging to ``runs/<id>/driver.log``, and returns at once.

A driver killed with SIGKILL leaves Parsl's worker pools (and, on a batch system, its
pilots) behind. The interchange already dies with its driver (:mod:`executor.sites.lifeline`)
and pools then exit on their own within a heartbeat threshold; ``pilot restart`` and
``pilot cancel`` do not wait for that: :func:`clean_up_after_dead_driver` stops them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from executor.errors import RunStateError, SiteError
from executor.store import Store
from executor.store.pilots import live_pilot_job_ids, mark_pilots_cancelled
from executor.store.queries import driver_alive, get_run
from executor.store.runs import adopt_driver, name_driver, queue_driver_job

logger = logging.getLogger(__name__)


def start_detached_driver(store: Store, run_id: str, run_dir: Path) -> int:
    """Start the driver of a recorded run in the background; return its pid.

    The run row names the new process as its driver before this returns, so the
    run never looks ``driver_lost`` in between.
    """
    import psutil

    log = open(run_dir / "driver.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "executor", "_drive", run_id, "--db", str(store.path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    finally:
        log.close()
    started = psutil.Process(child.pid).create_time()
    name_driver(store, run_id, host=socket.gethostname(), pid=child.pid, pid_started=started)
    # The child is not our concern any more: Popen must not warn that it still runs.
    child.returncode = 0
    return child.pid


def start_driver_job(store: Store, run_id: str, run_dir: Path, site: Any) -> str:
    """Put the driver of a recorded run in a batch job of ``site``; return the job id.

    Until the job starts, the run names no driver process: it is queued, not lost.
    """
    import json

    command = [sys.executable, "-m", "executor", "_drive", run_id, "--db", str(store.path),
               "--adopt"]  # fmt: skip
    (run_dir / "driver_site.json").write_text(json.dumps(site.to_dict(), indent=1))
    job_id = site.submit_driver(command, run_dir)
    queue_driver_job(store, run_id, job_id, f"driver in batch job {job_id} on site {site.name}")
    return job_id


def adopt_run(store: Store, run_id: str) -> None:
    """In a driver started as a batch job: name this process the run's driver."""
    import psutil

    started = psutil.Process().create_time()
    adopt_driver(
        store, run_id, host=socket.gethostname(), pid=os.getpid(), pid_started=started,
        job_id=os.environ.get("SLURM_JOB_ID"),
    )  # fmt: skip
    wait_to_be_named_driver(store, run_id, timeout=5)


def cancel_driver_job(store: Store, run: dict[str, Any]) -> None:
    """``scancel`` the batch job holding (or waiting to hold) the run's driver, if any."""
    import json

    from executor.sites.base import SiteConfig

    saved = Path(run["run_dir"]) / "driver_site.json"
    if not run.get("driver_job") or not saved.exists():
        return
    site = SiteConfig.from_dict(json.loads(saved.read_text()))
    try:
        site.cancel_orphaned_pilots([run["driver_job"]])
    except SiteError as exc:
        logger.warning("could not cancel the driver job %s: %s", run["driver_job"], exc)


def wait_to_be_named_driver(store: Store, run_id: str, timeout: float = 30.0) -> None:
    """In a detached driver: wait until the run row names this process as its driver."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get_run(store, run_id)["pid"] == os.getpid():
            return
        time.sleep(0.05)
    raise RunStateError(f"run {run_id} names another driver; this one ({os.getpid()}) stops")


def clean_up_after_dead_driver(store: Store, run: dict[str, Any]) -> list[str]:
    """Stop what a dead driver left running: local Parsl processes and live pilots.

    Does nothing while the run's driver is alive. Returns what was stopped, for the
    user to read.
    """
    if driver_alive(run):
        return []
    cancel_driver_job(store, run)  # a driver job that hangs holds its core: end it too
    stopped = _stop_local_pools(Path(run["run_dir"]))
    from executor.sites.base import SiteConfig

    # Whether or not the store lists live pilots: a site may hold more (Kubernetes Secrets).
    try:
        stopped += SiteConfig.of_run(Path(run["run_dir"])).clean_up_run(run["id"])
    except Exception as exc:  # the boundary with a site's API: a restart goes on regardless
        logger.warning("could not clean up run %s on its site: %s", run["id"], exc)
    job_ids = live_pilot_job_ids(store, run["id"])
    if job_ids:
        stopped += _cancel_pilots(SiteConfig.of_run(Path(run["run_dir"])), job_ids)
        mark_pilots_cancelled(store, run["id"], job_ids)
    return stopped


def _stop_local_pools(run_dir: Path) -> list[str]:
    """SIGTERM the process groups of worker pools whose log directory is in this run."""
    import psutil

    marker = str(run_dir / "parsl")
    stopped = []
    for process in psutil.process_iter(["cmdline", "pid"]):
        try:
            cmdline = process.info["cmdline"] or []
            if not any(marker in part for part in cmdline):
                continue
            if not any("process_worker_pool" in part for part in cmdline):
                continue
            os.killpg(os.getpgid(process.pid), signal.SIGTERM)
            stopped.append(f"worker pool pid {process.pid}")
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return stopped


def _cancel_pilots(site: Any, job_ids: list[str]) -> list[str]:
    """Cancel batch pilots through the run's own site (``scancel`` on Slurm)."""
    try:
        site.cancel_orphaned_pilots(job_ids)
    except SiteError as exc:
        logger.warning("could not cancel pilots %s: %s", job_ids, exc)
        return []
    return [f"pilot {job_id}" for job_id in job_ids]
