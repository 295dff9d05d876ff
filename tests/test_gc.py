"""`pilot gc`: old runs leave the database and the disk; live and recent runs stay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from helpers import pilot_cmd, run_pilot
from seed import seed_run

from executor.model.states import RunState
from executor.store import Store
from executor.store.retention import collect

DAY = 86_400


def _seed(tmp_path: Path) -> Path:
    db = tmp_path / "monitoring.db"
    old = time.time() - 40 * DAY
    job = [{"name": "a", "label": "x", "state": "succeeded", "start": 0, "runtime": 1}]
    with Store(db) as store:
        seed_run(store, tmp_path / "runs", "old-mine", owner="me", jobs=job, created=old)
        seed_run(store, tmp_path / "runs", "old-theirs", owner="them", jobs=job, created=old)
        seed_run(store, tmp_path / "runs", "new-mine", owner="me", jobs=job)
        # Created long ago, but its driver (this test process) is alive: never removed.
        seed_run(store, tmp_path / "runs", "old-live", owner="me", jobs=job, created=old,
                 state=RunState.RUNNING)  # fmt: skip
        store.write(lambda c: c.execute(
            "UPDATE runs SET host = ?, pid = ?, pid_started = ? WHERE id = 'old-live'",
            (socket.gethostname(), os.getpid(), psutil.Process().create_time()),
        ))  # fmt: skip
    return db


def _ids(store: Store) -> list[str]:
    return sorted(r["id"] for r in store.query("SELECT id FROM runs"))


def test_dry_run_lists_and_keeps(tmp_path: Path, subprocess_env: dict) -> None:
    db = _seed(tmp_path)
    env = {**subprocess_env, "LOGNAME": "me", "USER": "me"}
    result = run_pilot("gc", "--older-than", "30d", "--dry-run", "--json", "--db", db, env=env)
    assert result.returncode == 0, result.stderr
    assert [r["run_id"] for r in json.loads(result.stdout)["runs"]] == ["old-mine"]
    with Store(db) as store:
        assert _ids(store) == ["new-mine", "old-live", "old-mine", "old-theirs"]
    assert (tmp_path / "runs" / "old-mine").is_dir()


def test_gc_removes_rows_everywhere_and_the_run_directory(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    with Store(db) as store:
        removed = collect(store, 30 * DAY, owner=None)
        assert sorted(r.run_id for r in removed) == ["old-mine", "old-theirs"]
        assert all(r.dir_removed and r.problem is None for r in removed)
        assert _ids(store) == ["new-mine", "old-live"]
        for table in ("jobs", "attempts", "events"):
            left = {r["run_id"] for r in store.query(f"SELECT DISTINCT run_id FROM {table}")}
            assert left == {"new-mine", "old-live"}, table
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["new-mine", "old-live"]


def test_gc_leaves_a_directory_that_is_not_the_runs(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    with Store(db) as store:
        store.write(lambda c: c.execute(
            "UPDATE runs SET run_dir = ? WHERE id = 'old-mine'", (str(tmp_path),)
        ))  # fmt: skip
        [removal] = collect(store, 30 * DAY, owner="me")
    assert removal.run_id == "old-mine" and not removal.dir_removed
    assert "does not look like the run's directory" in (removal.problem or "")
    assert (tmp_path / "monitoring.db").exists()


def test_gc_cli_removes_only_your_runs_by_default(tmp_path: Path, subprocess_env: dict) -> None:
    db = _seed(tmp_path)
    env = {**subprocess_env, "LOGNAME": "me", "USER": "me"}
    # Not at a terminal and without --yes: it says what it would remove, and removes nothing.
    asked = run_pilot("gc", "--older-than", "30d", "--db", db, env=env)
    assert asked.returncode == 2 and "add --yes" in asked.stderr
    assert "will remove old-mine" in asked.stdout
    with Store(db) as store:
        assert _ids(store) == ["new-mine", "old-live", "old-mine", "old-theirs"]
    result = run_pilot("gc", "--older-than", "30d", "--yes", "--db", db, env=env)
    assert result.returncode == 0, result.stderr
    assert "removed old-mine" in result.stdout and "removed 1 run(s)" in result.stdout
    with Store(db) as store:
        assert _ids(store) == ["new-mine", "old-live", "old-theirs"]
    bad = run_pilot("gc", "--older-than", "a while", "--db", db, env=env)
    assert bad.returncode == 2 and "--older-than" in bad.stderr


@pytest.mark.parametrize("ambiguous", ["1m", "30", "90s", "1 month", "2:00:00"])
def test_gc_age_needs_hours_days_or_weeks(tmp_path: Path, subprocess_env: dict, ambiguous: str):
    db = _seed(tmp_path)
    result = run_pilot("gc", "--older-than", ambiguous, "--yes", "--db", db, env=subprocess_env)
    assert result.returncode == 2 and "12h, 30d or 2w" in result.stderr
    with Store(db) as store:
        assert len(_ids(store)) == 4  # nothing removed


def test_gc_asks_at_a_terminal_and_removes_only_after_yes(tmp_path: Path, subprocess_env: dict):
    import pty

    db = _seed(tmp_path)
    env = {**subprocess_env, "LOGNAME": "me", "USER": "me"}
    for answer, left in ((b"n\n", 4), (b"y\n", 3)):
        leader, follower = pty.openpty()
        child = subprocess.Popen(
            pilot_cmd("gc", "--older-than", "30d", "--db", db), env=env,
            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(follower)
        os.write(leader, answer)
        out, _ = child.communicate(timeout=60)
        os.close(leader)
        assert b"will remove old-mine" in out and b"Remove these 1 run(s)?" in out
        with Store(db) as store:
            assert len(_ids(store)) == left
