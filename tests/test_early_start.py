"""A large workflow's pilots boot while it is read; if it turns out bad, nothing is left."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml
from helpers import processes_with, run_pilot, wait_for

from executor.runs.start import EARLY_START_BYTES


def _large_workflow(directory: Path, jobs: list[dict]) -> Path:
    """A workflow file over the early-start size: a few jobs, padded with a comment."""
    path = directory / "workflow.yaml"
    padding = "# " + "x" * 98 + "\n"
    text = yaml.safe_dump({"name": "large", "jobs": jobs}, sort_keys=False)
    path.write_text(padding * (EARLY_START_BYTES // len(padding) + 1) + text)
    assert path.stat().st_size > EARLY_START_BYTES
    return path


def _first_logged(parsl_log: str, message: str) -> float:
    # Each line of parsl.log starts with its record's time (Parsl's DEFAULT_FORMAT).
    line = next(line for line in parsl_log.splitlines() if message in line)
    return float(line.split()[0])


def test_a_large_workflows_pilot_starts_before_the_workflow_is_read(
    tmp_path: Path, pilot_home: Path
):
    path = _large_workflow(tmp_path, [{"name": f"job-{i}", "command": "true"} for i in range(3)])

    result = run_pilot("submit", path)

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    with sqlite3.connect(pilot_home / "monitoring.db") as conn:
        (created,) = conn.execute("SELECT created FROM runs WHERE id = ?", (run_id,)).fetchone()
        states = dict(conn.execute("SELECT name, state FROM jobs WHERE run_id = ?", (run_id,)))
    assert states == {f"job-{i}": "succeeded" for i in range(3)}
    # The run is recorded once its workflow has been read; its pilot was launched before.
    parsl_log = (pilot_home / "runs" / run_id / "parsl" / "parsl.log").read_text()
    assert _first_logged(parsl_log, "Allocated block ID 0") < created


def test_a_large_bad_workflow_is_refused_and_its_early_pilots_are_stopped(
    tmp_path: Path, pilot_home: Path
):
    jobs = [{"name": "fine", "command": "true"}, {"name": "broken", "comand": "true"}]
    path = _large_workflow(tmp_path, jobs)

    result = run_pilot("submit", path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "broken" in result.stderr and "comand" in result.stderr
    runs = pilot_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    wait_for(lambda: not processes_with(str(pilot_home)), timeout=30, what="no pool left")
