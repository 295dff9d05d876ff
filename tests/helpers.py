"""Helpers for tests that run the real `pilot` command and watch real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
import yaml


def write_workflow(directory: Path, data: dict, name: str = "workflow.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def pilot_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "executor", *map(str, args)]


def run_pilot(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """Run the real `pilot` command to completion."""
    return subprocess.run(
        pilot_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def status_json(run_id: str | None = None, **kwargs) -> dict:
    args = ["status", "--json"] + ([run_id] if run_id else [])
    result = run_pilot(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def processes_with(marker: str) -> list[psutil.Process]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


@contextmanager
def started_together(commands: Sequence[Sequence[str]]) -> Iterator[list[subprocess.Popen]]:
    """Start processes that print "ready" and wait for a "go" line; release them at once.

    Whatever is still running when the block ends is killed.
    """
    children = [
        subprocess.Popen(
            list(map(str, argv)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for argv in commands
    ]
    try:
        for child in children:
            assert child.stdout.readline() == "ready\n", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        yield children
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
