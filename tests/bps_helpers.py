"""Helpers for the bps plugin's tests: GenericWorkflows built in Python, waits on runs."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import processes_with, wait_for

SERVICE_CLASS = "executor.bps.PilotService"
# States of a run that has not ended (bps's names).
UNFINISHED = ("RUNNING", "PENDING", "READY", "UNREADY")


def wait_until_ended(service, run_id: str, timeout: float = 180.0):
    """Wait until ``bps status`` says the run ended; return its state."""

    def ended():
        state, _ = service.get_status(run_id)
        return state if state.name not in UNFINISHED else None

    return wait_for(ended, timeout=timeout, what=f"run {run_id} to end")


def wait_for_no_helpers(run_id: str, timeout: float = 60.0) -> None:
    """Wait until the run's detached driver has exited."""
    wait_for(
        lambda: not processes_with(run_id),
        timeout=timeout,
        what=f"run {run_id}'s processes to exit",
    )


def wait_for_file(path: Path, timeout: float = 60.0) -> str:
    return wait_for(
        lambda: path.read_text() if path.exists() else None, timeout=timeout, what=str(path)
    )


def script(directory: Path, name: str, body: str) -> Path:
    """An executable bash script (a job's ``executable``)."""
    path = directory / name
    path.write_text("#!/bin/bash\nset -e\n" + body)
    path.chmod(0o755)
    return path


def elapsed(since: float) -> float:
    return time.monotonic() - since
