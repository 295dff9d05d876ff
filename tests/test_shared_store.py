"""One monitoring.db shared by a group: many writers, readers, owners, a million jobs."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
import time
from pathlib import Path

import pytest
from helpers import run_pilot, started_together
from seed import seed_run

from executor.errors import StoreError
from executor.store import Store, locate
from executor.store.filesystem import filesystem_type, journal_mode_for
from executor.store.queries import JOB_COUNTS_SQL, LABEL_COUNTS_SQL, runs_query

WRITERS, UPDATES, BATCH = 8, 5_000, 25

# One driver: its own run of UPDATES jobs, each moved to running and then succeeded with
# an attempt, flushed in batches as the real driver does.
_WRITER = """
import sys, time
from executor.model.states import JobState
from executor.store import Store
from executor.store.recorder import RunRecorder, create_run

path, journal, owner = sys.argv[1], sys.argv[2], sys.argv[3]
n, batch = int(sys.argv[4]), int(sys.argv[5])
run_id = "run-" + owner
with Store(path, journal=journal) as store:
    now = time.time()
    create_run(store, {
        "id": run_id, "name": "w", "owner": owner, "host": "h", "site": "local",
        "state": "running", "n_jobs": n, "workflow_copy": "x", "workflow_hash": "x",
        "run_dir": "/nonexistent", "workdir": "/", "created": now,
    }, ((f"job-{i}", "l", "true") for i in range(n)))
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    recorder = RunRecorder(store, run_id)
    for i in range(n):
        recorder.attempt_submitted(f"job-{i}", 1, time.time())
        recorder.attempt_finished(f"job-{i}", 1, {"state": "succeeded", "exit_code": 0})
        for state in (JobState.READY, JobState.RUNNING, JobState.SUCCEEDED):  # as a driver
            recorder.job_state(f"job-{i}", state, attempts=1)
        if i % batch == batch - 1:
            recorder.flush()
    recorder.flush()
    ended = time.time()
print("done", started, ended, flush=True)
"""


# A group's database on a network filesystem has a rollback journal, not WAL.
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_eight_writers_lose_no_row_and_readers_see_consistent_snapshots(
    tmp_path: Path, journal: str
) -> None:
    db = tmp_path / "monitoring.db"
    with Store(db, journal=journal) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == journal
    owners = [f"user{i}" for i in range(WRITERS)]
    commands = [
        [sys.executable, "-c", _WRITER, db, journal, owner, UPDATES, BATCH] for owner in owners
    ]
    snapshots = 0
    with started_together(commands) as children:
        started = time.monotonic()
        last: dict[str, int] = {}
        with Store(db, readonly=True) as reader:
            while any(child.poll() is None for child in children):
                with reader.snapshot():
                    jobs = reader.query(
                        "SELECT run_id, sum(state = 'succeeded') AS done, count(*) AS n "
                        "FROM jobs GROUP BY run_id"
                    )
                    events = {
                        r["run_id"]: r["n"]
                        for r in reader.query(
                            "SELECT run_id, count(*) AS n FROM events "
                            "WHERE job IS NOT NULL AND state = 'succeeded' GROUP BY run_id"
                        )
                    }
                    finished = {
                        r["run_id"]: r["n"]
                        for r in reader.query(
                            "SELECT run_id, count(*) AS n FROM attempts "
                            "WHERE state = 'succeeded' GROUP BY run_id"
                        )
                    }
                snapshots += 1
                for row in jobs:
                    # One flush is one transaction: jobs, attempts and events agree.
                    assert row["n"] == UPDATES
                    assert events.get(row["run_id"], 0) == row["done"]
                    assert finished.get(row["run_id"], 0) == row["done"]
                    assert row["done"] % BATCH == 0 or row["done"] == UPDATES
                    assert row["done"] >= last.get(row["run_id"], 0)
                    last[row["run_id"]] = row["done"]
        results = [child.communicate(timeout=300) for child in children]
        elapsed = time.monotonic() - started
    spans = []
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out.startswith("done ") and "Traceback" not in err
        spans.append([float(t) for t in out.split()[1:]])
    # All were writing at the same time: the last to start began before the first ended.
    assert max(start for start, _ in spans) < min(end for _, end in spans)
    assert snapshots > 1
    with Store(db, journal=journal) as store:
        for owner in owners:
            run_id = f"run-{owner}"
            rows = store.query(
                "SELECT count(*) AS n FROM jobs WHERE run_id = ? AND state = 'succeeded' "
                "AND attempts = 1",
                [run_id],
            )
            assert rows[0]["n"] == UPDATES
            for table in ("attempts", "events"):
                n = store.query(
                    f"SELECT count(*) AS n FROM {table} WHERE run_id = ? AND job IS NOT NULL "
                    "AND state = 'succeeded'"
                    if table == "events"
                    else f"SELECT count(*) AS n FROM {table} WHERE run_id = ?",
                    [run_id],
                )[0]["n"]
                assert n == UPDATES, (table, owner)
    print(f"{journal}: {WRITERS}x{UPDATES} job updates in {elapsed:.1f}s; {snapshots} snapshots")


# -- filesystems and files -------------------------------------------------------------

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/group /group nfs4 rw,vers=4.2 0 0
/dev/sdb1 /group/local\\040disk xfs rw 0 0
lustre@tcp:/fs /lus lustre rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "fstype", "journal"),
    [
        ("/home/me/monitoring.db", "ext4", "wal"),
        ("/group/pilot/monitoring.db", "nfs4", "delete"),
        ("/group/local disk/monitoring.db", "xfs", "wal"),
        ("/lus/proj/monitoring.db", "lustre", "delete"),
    ],
)
def test_network_filesystems_fall_back_from_wal(path: str, fstype: str, journal: str) -> None:
    assert filesystem_type(path, MOUNTS) == fstype
    assert journal_mode_for(path, MOUNTS) == (journal, fstype)


def test_this_machines_filesystem_is_read(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path) is not None


def test_files_are_group_shared_and_never_world_accessible(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a group that shares a database sets this
    try:
        with Store(tmp_path / "group" / "monitoring.db"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "group" / "monitoring.db").stat().st_mode) == 0o660
    assert stat.S_IMODE((tmp_path / "group").stat().st_mode) == 0o770
    old = os.umask(0)  # even a careless umask gives the world nothing
    try:
        with Store(tmp_path / "open" / "monitoring.db"):
            pass
    finally:
        os.umask(old)
    for path in (tmp_path / "open").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path


def test_a_readonly_store_never_writes(tmp_path: Path) -> None:
    db = tmp_path / "monitoring.db"
    with Store(db) as store:
        seed_run(
            store,
            tmp_path / "runs",
            "run-1",
            jobs=[{"name": "a", "label": "x", "state": "pending"}],
        )
    with Store(db, readonly=True) as reader:
        assert reader.query("SELECT id FROM runs") == [{"id": "run-1"}]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("DELETE FROM runs")
    with pytest.raises(StoreError, match="no monitoring database"):
        Store(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def test_where_the_shared_database_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PILOT_DB", raising=False)
    site_db = tmp_path / "site" / "monitoring.db"
    assert locate(site_db=site_db).db == site_db
    assert locate(site_db=site_db).runs == tmp_path / "home" / "runs"
    monkeypatch.setenv("PILOT_DB", str(tmp_path / "env.db"))
    assert locate(site_db=site_db).db == tmp_path / "env.db"
    assert locate(tmp_path / "flag.db", site_db=site_db).db == tmp_path / "flag.db"


# -- status across users ---------------------------------------------------------------


def test_status_all_users_user_since_and_json(tmp_path: Path, subprocess_env: dict) -> None:
    db = tmp_path / "shared.db"
    day = 86_400
    with Store(db) as store:
        seed_run(store, tmp_path / "runs", "run-alice", owner="alice", host="node-a",
                 jobs=[{"name": "a", "label": "x", "state": "succeeded"}])  # fmt: skip
        seed_run(store, tmp_path / "runs", "run-bob", owner="bob", host="node-b",
                 jobs=[{"name": "a", "label": "x", "state": "failed"},
                       {"name": "b", "label": "x", "state": "succeeded"}])  # fmt: skip
        seed_run(store, tmp_path / "runs", "run-bob-old", owner="bob",
                 created=time.time() - 5 * day,
                 jobs=[{"name": "a", "label": "x", "state": "succeeded"}])  # fmt: skip
    env = {**subprocess_env, "LOGNAME": "carol", "USER": "carol"}

    def listed(*args: str) -> list[dict]:
        result = run_pilot("status", "--json", "--db", db, *args, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["runs"]

    everyone = listed("--all-users")
    assert [r["run"] for r in everyone] == ["run-bob", "run-alice", "run-bob-old"]
    assert {r["owner"] for r in everyone} == {"alice", "bob"}
    bob = next(r for r in everyone if r["run"] == "run-bob")
    assert bob["host"] == "node-b" and bob["jobs"]["failed"] == 1 and bob["state"] == "succeeded"
    assert [r["run"] for r in listed("--user", "bob")] == ["run-bob", "run-bob-old"]
    assert [r["run"] for r in listed("--all-users", "--since", "2d")] == ["run-bob", "run-alice"]
    assert listed() == []  # carol has no runs of her own
    table = run_pilot("status", "--all-users", "--db", db, env={**env, "COLUMNS": "200"})
    assert "alice" in table.stdout and "node-b" in table.stdout
    bad = run_pilot("status", "--since", "soon", "--db", db, env=env)
    assert bad.returncode == 2 and "--since" in bad.stderr


# -- a million jobs --------------------------------------------------------------------


def _fill_a_million(conn) -> None:
    # 2,000 runs of 20 owners; ten of them hold 100,000 jobs each.
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 1999) "
        "INSERT INTO runs (id, name, owner, host, site, state, n_jobs, workflow_copy, "
        "workflow_hash, run_dir, workdir, created, ended) "
        "SELECT printf('run-%04d', i), 'w', 'user-' || (i % 20), 'h', 'local', 'succeeded', "
        "CASE WHEN i < 10 THEN 100000 ELSE 0 END, 'x', 'x', '/nonexistent', '/', "
        "1.7e9 + i * 60, 1.7e9 + i * 60 + 30 FROM n"
    )
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999) "
        "INSERT INTO jobs (run_id, name, position, label, state, attempts) "
        "SELECT printf('run-%04d', i / 100000), printf('job-%07d', i), i, 'label-' || (i % 7), "
        "CASE WHEN i % 3 = 0 THEN 'succeeded' ELSE 'pending' END, 0 FROM n"
    )


def _plan(store: Store, sql: str, params: list) -> str:
    return "\n".join(row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_status_queries_on_a_million_jobs_use_their_indexes(tmp_path: Path) -> None:
    with Store(tmp_path / "monitoring.db") as store:
        store.write(_fill_a_million)
        assert store.query("SELECT count(*) AS n FROM jobs")[0]["n"] == 1_000_000

        by_owner = _plan(store, *runs_query(owner="user-3", since=1.7e9, limit=20))
        assert "USING INDEX runs_owner_created (owner=? AND created>?)" in by_owner
        newest = _plan(store, *runs_query(limit=20))
        assert "USING INDEX runs_created" in newest and "TEMP B-TREE" not in newest
        counts = _plan(store, JOB_COUNTS_SQL, ["run-0003"])
        assert "SEARCH jobs USING COVERING INDEX jobs_run_state (run_id=?)" in counts
        labels = _plan(store, LABEL_COUNTS_SQL, ["run-0003"])
        assert "USING COVERING INDEX jobs_run_label_state_position (run_id=?)" in labels
        for plan in (by_owner, newest, counts, labels):
            assert "SCAN jobs" not in plan and "SCAN runs\n" not in plan + "\n"
        # And the answer is right.
        result = run_pilot("status", "run-0003", "--json", "--db", tmp_path / "monitoring.db")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert sum(summary["jobs"].values()) == 100_000
        assert len(summary["labels"]) == 7
