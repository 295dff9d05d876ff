"""What the reports and the dashboard read (executor/store/history.py), on a large database.

The dashboard asks these every few seconds of a live run in a database that a whole
group shares: each must read one run through a primary key or an index, never a table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from executor.report import api, data, html
from executor.store import Store

RUNS, JOBS_PER_RUN, PILOTS = 20, 10_000, 10


def _fill(conn) -> None:
    # Every 25th job needed two attempts, every 50th failed for good (exit 3); each run's
    # attempts ran in PILOTS pilots of pool "small".
    conn.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {RUNS - 1}) "
        "INSERT INTO runs (id, name, owner, host, site, state, n_jobs, workflow_copy, "
        "workflow_hash, run_dir, workdir, created, ended) "
        f"SELECT printf('run-%02d', i), 'w', 'u', 'h', 'local', 'failed', {JOBS_PER_RUN}, "
        "'/nonexistent/workflow.json', 'x', '/nonexistent', '/', 1.7e9 + i, 1.7e9 + i + 30 FROM n"
    )
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
        f"WHERE i < {RUNS * JOBS_PER_RUN - 1}) "
        "INSERT INTO jobs (run_id, name, position, label, state, attempts) "
        f"SELECT printf('run-%02d', i / {JOBS_PER_RUN}), printf('job-%06d', i), i, "
        "'label-' || (i % 7), CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'succeeded' END, "
        "CASE WHEN i % 25 = 0 THEN 2 ELSE 1 END FROM n"
    )
    failed = "attempts = 2 OR state = 'failed'"
    conn.execute(
        "INSERT INTO attempts (run_id, job, attempt, state, start, end, block_id, pool, "
        "failure_class, exit_code, host) "
        f"SELECT run_id, name, 1, CASE WHEN {failed} THEN 'failed' ELSE 'succeeded' END, "
        f"1.7e9 + position, 1.7e9 + position + 5, position % {PILOTS}, 'small', "
        f"CASE WHEN {failed} THEN 'exit_code' END, CASE WHEN {failed} THEN 3 ELSE 0 END, "
        "'node' FROM jobs"
    )
    conn.execute(
        "INSERT INTO attempts (run_id, job, attempt, state, start, end, block_id, pool, "
        "failure_class, exit_code, host) "
        "SELECT run_id, name, 2, state, 1.7e9 + position + 6, 1.7e9 + position + 9, "
        f"position % {PILOTS}, 'small', CASE WHEN state = 'failed' THEN 'exit_code' END, "
        "CASE WHEN state = 'failed' THEN 3 ELSE 0 END, 'node' FROM jobs WHERE attempts = 2"
    )


class Explaining(Store):
    """A store that keeps the query plan of every query it answers."""

    plans: list[tuple[str, str]]

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        plan = "\n".join(row[3] for row in self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        self.plans.append((sql, plan))
        return super().query(sql, params)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explaining]:
    db = tmp_path_factory.mktemp("history") / "monitoring.db"
    with Store(db) as store:
        store.write(_fill)
    with Explaining(db, readonly=True) as store:
        store.plans = []
        yield store


def _scans(store: Explaining) -> list[str]:
    """Each query that reads a whole table (or a whole index), with its plan."""
    return [
        f"{sql}\n{plan}"
        for sql, plan in store.plans
        if re.search(r"^SCAN (?!\(subquery|CONSTANT)", plan, re.M)
    ]


def test_the_dashboard_reads_one_run_through_indexes(big: Explaining) -> None:
    big.plans.clear()
    detail = api.run_detail(big, "run-03")
    api.run_plots(big, "run-03")

    assert big.plans and _scans(big) == []
    [group] = detail["failures"]
    # 200 jobs failed for good with exit 3; the other 200 retried jobs recovered from it.
    assert (group["cause"], group["count"], group["recovered"]) == ("exit code 3", 200, 200)
    assert len(group["jobs"]) == len(group["recovered_jobs"]) == 5
    # Pilots (from the attempts: this run recorded none) count the attempts they ran.
    assert detail["pilot_source"] == "attempts"
    assert len(detail["pilots"]) == PILOTS
    assert sum(p["attempts"] for p in detail["pilots"]) == JOBS_PER_RUN + 400


def test_the_reports_read_one_run_through_indexes(big: Explaining) -> None:
    big.plans.clear()
    report = data.build_report(big, "run-04")
    html.render(big, "run-04")

    assert big.plans and _scans(big) == []
    assert report["usage"]["label-0"]["attempts"] > 0
    assert [(g["cause"], g["count"], g["recovered"]) for g in report["failure_groups"]] == [
        ("exit code 3", 200, 200)
    ]


def test_recorded_pilots_are_matched_to_their_attempts(big: Explaining) -> None:
    # Block ids restart in every pool: attempts are counted per pool and block.
    def record(conn) -> None:
        conn.executemany(
            "INSERT INTO pilots (run_id, pool, block_id, state, start, end) "
            "VALUES ('run-05', ?, ?, 'completed', ?, 1.8e9)",
            [("small", str(block), 1.7e9 + block) for block in range(PILOTS)]
            + [("large", "0", 1.75e9)],
        )

    with Store(big.path) as store:
        store.write(record)
        pilots = api.run_detail(store, "run-05")["pilots"]
    assert [p["block_id"] for p in pilots] == [f"small/{b}" for b in range(PILOTS)] + ["large/0"]
    attempts = [p["attempts"] for p in pilots]
    assert min(attempts[:-1]) >= JOBS_PER_RUN // PILOTS and attempts[-1] == 0
    assert sum(attempts) == JOBS_PER_RUN + 400
