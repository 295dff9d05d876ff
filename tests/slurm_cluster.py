"""The real Slurm cluster the Slurm tests use (``scripts/local-slurm.sh start``).

Tests skip when no cluster answers, and fail instead when ``PILOT_REQUIRE_SLURM=1``
(CI sets it after starting the cluster).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCAL_SITE = ROOT / "executor" / "sites" / "configs" / "slurm-local.yaml"


def _answers() -> str | None:
    """Why Slurm cannot be used here, or ``None`` when it can."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (start one with `scripts/local-slurm.sh start`)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`scontrol ping` failed: {exc}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld does not answer: {ping.stdout.strip() or ping.stderr.strip()}"
    return None


def require_slurm() -> None:
    """Skip (or fail, when PILOT_REQUIRE_SLURM=1) unless a Slurm cluster answers."""
    problem = _answers()
    if problem is None:
        return
    if os.environ.get("PILOT_REQUIRE_SLURM") == "1":
        pytest.fail(f"PILOT_REQUIRE_SLURM=1 but Slurm is not usable: {problem}")
    pytest.skip(f"Slurm is not usable: {problem}")


def pilot_jobs() -> list[str]:
    """Ids of pilot jobs in the queue (pilot's blocks are named ``parsl.<pool>.block-N``)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i %j"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if " parsl." in line]


def write_site(directory: Path, name: str = "test-slurm", **overrides) -> Path:
    """The test cluster's site file with some values changed."""
    data = yaml.safe_load(LOCAL_SITE.read_text())
    pools = overrides.pop("pool", None)
    data.update(overrides)
    if pools:
        data["pools"]["default"].update(pools)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def slurm_queue_clean() -> Iterator[None]:
    """A Slurm cluster with no pilot in the queue before and after the test."""
    from helpers import wait_for

    require_slurm()
    assert pilot_jobs() == [], "pilot jobs left in the queue by something else"
    yield
    wait_for(lambda: pilot_jobs() == [], timeout=30, what="no pilot job left in squeue")


def attempts_of(pilot_home: Path, run_id: str) -> list[dict]:
    """The run's attempt rows from its store, by job and attempt."""
    with sqlite3.connect(pilot_home / "monitoring.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY job, attempt", [run_id]
        ).fetchall()
    return [dict(row) for row in rows]
