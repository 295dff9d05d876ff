"""`pilot jobs`: a run's jobs one per line, filtered, naturally sorted, with why a job is
blocked; `pilot report --tsv`, one row per attempt; and the failures the live display
prints as they happen (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from seed import seed_run

from executor.cli import cli
from executor.model.names import natural_key
from executor.model.states import JobState, RunState
from executor.report.feed import FailureFeed
from executor.store import Store
from executor.store.recorder import RunRecorder

RUN = "20261122-101500-jobs"
# Created in this order on purpose: listing them must not follow it.
JOBS = [
    {"name": "job-10", "label": "sim", "state": "failed", "start": 1, "runtime": 2, "exit_code": 1},
    {"name": "job-2", "label": "sim", "state": "failed", "start": 0, "runtime": 3, "exit_code": 3},
    {"name": "job-1", "label": "sim", "state": "succeeded", "start": 0, "runtime": 4},
    {"name": "job-3", "label": "sim", "state": "running", "start": -5, "runtime": 0},
    {"name": "job-20", "label": "post", "state": "pending"},
    {"name": "job-11", "label": "post", "state": "pending"},
    {"name": "job-12", "label": "post", "state": "pending"},
    {"name": "job-4", "label": "post", "state": "pending"},
]
# Blocked as the driver blocks them: with the failed ancestor in the event's detail.
BLOCKED = {"job-11": "job-2", "job-12": "job-2", "job-20": "job-10"}
ORDER = ["job-1", "job-2", "job-3", "job-4", "job-10", "job-11", "job-12", "job-20"]


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    db = tmp_path / "monitoring.db"
    with Store(db) as store:
        seed_run(store, tmp_path / "runs", RUN, jobs=JOBS, state=RunState.RUNNING)
        recorder = RunRecorder(store, RUN)
        for job, ancestor in BLOCKED.items():
            recorder.job_state(job, JobState.BLOCKED, detail=f"ancestor {ancestor} failed")
        recorder.flush()
        store.write(
            lambda conn: conn.execute(
                "UPDATE attempts SET peak_rss_mb = 420.0 WHERE run_id = ? AND job = 'job-1'",
                (RUN,),
            )
        )
        recorder.run_state(RunState.FAILED)
    return db


def pilot(db: Path, *args: str):
    result = CliRunner().invoke(cli, [*args, "--db", str(db)])
    return result


def test_names_sort_naturally() -> None:
    names = ["job-10", "job-2", "job", "job-1-b", "job-1", "a10b2", "a10b10", "a9"]
    assert sorted(names, key=natural_key) == [
        "a9", "a10b2", "a10b10", "job", "job-1", "job-1-b", "job-2", "job-10",
    ]  # fmt: skip


def test_jobs_lists_every_job_naturally_sorted_with_its_facts(seeded: Path) -> None:
    result = pilot(seeded, "jobs", RUN[:15])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["job", "state", "attempts"]
    assert [line.split()[0] for line in lines[1:]] == ORDER
    by_job = {line.split()[0]: line for line in lines[1:]}
    assert "exit code 3" in by_job["job-2"] and "failed" in by_job["job-2"]
    assert "exit code 0" in by_job["job-1"] and "420MB" in by_job["job-1"]
    assert by_job["job-11"].split()[-1] == "job-2"
    assert by_job["job-20"].split()[-1] == "job-10"


def test_jobs_filters_by_state_and_label(seeded: Path) -> None:
    failed = pilot(seeded, "jobs", RUN, "--state", "failed", "--json")
    assert [job["job"] for job in json.loads(failed.output)["jobs"]] == ["job-2", "job-10"]
    both = pilot(seeded, "jobs", RUN, "--state", "failed", "--state", "running", "--json")
    assert [job["job"] for job in json.loads(both.output)["jobs"]] == ["job-2", "job-3", "job-10"]
    post = pilot(seeded, "jobs", RUN, "--label", "post", "--state", "blocked", "--json")
    assert [job["job"] for job in json.loads(post.output)["jobs"]] == ["job-11", "job-12", "job-20"]
    unknown = pilot(seeded, "jobs", RUN, "--label", "nope")
    assert unknown.exit_code == 2 and "its labels: sim, post" in unknown.output
    bad_state = pilot(seeded, "jobs", RUN, "--state", "exploded")
    assert bad_state.exit_code == 2
    none = pilot(seeded, "jobs", RUN, "--state", "cancelled")
    assert none.exit_code == 0 and "no jobs" in none.output


def test_jobs_json_names_the_failed_ancestor_of_each_blocked_job(seeded: Path) -> None:
    result = pilot(seeded, "jobs", RUN, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["run"] == RUN
    jobs = {job["job"]: job for job in data["jobs"]}
    assert [job["job"] for job in data["jobs"]] == ORDER
    assert {name: job["blocked_by"] for name, job in jobs.items() if job["blocked_by"]} == BLOCKED
    assert jobs["job-2"] | {"stderr": None, "host": None} == {
        "job": "job-2", "label": "sim", "state": "failed", "attempts": 1, "exit_code": 3,
        "signal": None, "failure_class": "exit_code", "runtime": 3.0, "peak_rss_mb": None,
        "host": None, "blocked_by": None, "stdout": None, "stderr": None, "error_type": None,
    }  # fmt: skip
    assert jobs["job-2"]["stderr"].endswith("attempt-1.err")
    assert jobs["job-4"]["attempts"] == 0 and jobs["job-4"]["runtime"] is None
    assert jobs["job-3"]["runtime"] > 0  # still running: so far


def test_jobs_tsv_is_a_header_and_one_row_per_job(seeded: Path) -> None:
    result = pilot(seeded, "jobs", RUN, "--tsv")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    columns = header.split("\t")
    assert columns[:4] == ["job", "label", "state", "attempts"] and "blocked_by" in columns
    cells = [dict(zip(columns, row.split("\t"), strict=True)) for row in rows]
    assert [c["job"] for c in cells] == ORDER
    assert cells[ORDER.index("job-12")]["blocked_by"] == "job-2"
    assert cells[ORDER.index("job-10")]["exit_code"] == "1"
    assert cells[ORDER.index("job-4")]["exit_code"] == ""
    assert pilot(seeded, "jobs", RUN, "--tsv", "--json").exit_code == 2


def test_report_tsv_has_one_row_per_attempt(seeded: Path) -> None:
    result = pilot(seeded, "report", RUN, "--tsv")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split("\t") == [
        "job", "attempt", "label", "state", "failure_class", "exit_code", "signal", "submitted",
        "start", "end", "runtime", "peak_rss_mb", "cpu_seconds", "memory_mb", "pool", "host",
        "block_id", "batch_job_id", "stdout", "stderr", "error_type",
    ]  # fmt: skip
    cells = [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]
    assert [(c["job"], c["attempt"]) for c in cells] == [
        ("job-1", "1"), ("job-2", "1"), ("job-3", "1"), ("job-10", "1"),
    ]
    assert cells[1]["failure_class"] == "exit_code" and cells[1]["runtime"] == "3.0"
    assert cells[0]["peak_rss_mb"] == "420.0" and cells[2]["end"] == ""


def test_report_names_every_failed_job_and_counts_blocked_per_ancestor(seeded: Path) -> None:
    result = pilot(seeded, "report", RUN)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    head = lines.index("Failed jobs (2):")
    assert lines[head + 1].strip() == "job-2, job-10"
    assert "Blocked jobs (3), by failed ancestor:" in lines
    assert "  2 blocked by failed job-2" in lines
    assert "  1 blocked by failed job-10" in lines
    data = json.loads(pilot(seeded, "report", RUN, "--json").output)
    assert data["blocked"] == [
        {"ancestor": "job-2", "count": 2, "jobs": ["job-11", "job-12"]},
        {"ancestor": "job-10", "count": 1, "jobs": ["job-20"]},
    ]
    assert [failure["job"] for failure in data["failed"]] == ["job-2", "job-10"]


def test_the_failure_feed_says_each_failure_once(seeded: Path) -> None:
    with Store(seeded) as store:
        feed = FailureFeed(store, RUN, from_start=True)
        lines = feed.lines({"sim": {"failed": 2}})
        assert len(lines) == 2
        assert lines[0].startswith("FAILED job-10 (label sim, attempt 1): exit code 1; log ")
        assert lines[1].startswith("FAILED job-2 ") and lines[1].endswith("attempt-1.err")
        assert feed.lines({"sim": {"failed": 2}}) == []  # nothing new: no query either
        assert feed.lines({"sim": {"failed": 3}}) == []
        assert FailureFeed(store, RUN).lines({"sim": {"failed": 2}}) == []  # only from now on
