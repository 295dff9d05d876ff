"""Failed attempts that a retry recovered from, in the text, JSON and HTML reports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from seed import seed_run

from executor.cli import cli
from executor.model.states import JobState, RunState
from executor.report import activity
from executor.report.html import render
from executor.report.retries import retry_summary
from executor.store import Store
from executor.store.recorder import RunRecorder

OOM = "killed using 612MB, more than its 150MB request (+10% tolerance)"
TIMEOUT = "killed after exceeding its walltime of 5s"
LOST = "the driver stopped before this attempt reported back"

# Per job: each attempt's outcome, in order; the job ends in the state of its last one.
ATTEMPTS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    # Killed as out_of_memory, then succeeds with 4x the memory in the large pool.
    "hog": ("big", [
        {"state": "failed", "failure_class": "out_of_memory", "signal": 9, "message": OOM,
         "memory_mb": 150, "peak_rss_mb": 612.0, "pool": "small"},
        {"state": "succeeded", "exit_code": 0, "memory_mb": 600, "peak_rss_mb": 598.0,
         "pool": "large"},
    ]),
    # Times out once, then succeeds.
    "slow": ("big", [
        {"state": "failed", "failure_class": "timeout", "signal": 9, "message": TIMEOUT,
         "memory_mb": 100, "peak_rss_mb": 20.0, "pool": "small", "stderr": "still at step 3\n"},
        {"state": "succeeded", "exit_code": 0, "memory_mb": 100, "peak_rss_mb": 21.0,
         "pool": "small"},
    ]),
    # Out of memory twice, even with more: failed for good.
    "whale": ("big", [
        {"state": "failed", "failure_class": "out_of_memory", "signal": 9, "message": OOM,
         "memory_mb": 150, "peak_rss_mb": 700.0, "pool": "small"},
        {"state": "failed", "failure_class": "out_of_memory", "signal": 9, "message": OOM,
         "memory_mb": 600, "peak_rss_mb": 2100.0, "pool": "large"},
    ]),
    "fine": ("small", [{"state": "succeeded", "exit_code": 0, "pool": "small"}]),
    # Its pilot was lost (transient), then it exits 3 for good.
    "flaky": ("small", [
        {"state": "failed", "failure_class": "pilot_lost", "message": LOST, "pool": "small"},
        {"state": "failed", "failure_class": "exit_code", "exit_code": 3,
         "message": "exit code 3", "pool": "small"},
    ]),
    # Stopped by a cancel: no failure of the job or its pilot.
    "stopped": ("small", [
        {"state": "failed", "failure_class": "cancelled", "message": "the run was cancelled",
         "pool": "small"},
    ]),
}  # fmt: skip


def _final_state(attempts: list[dict[str, Any]]) -> JobState:
    last = attempts[-1]
    if last.get("failure_class") == "cancelled":
        return JobState.CANCELLED
    return JobState(last["state"])


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished run whose attempts a real driver would have written for ``ATTEMPTS``."""
    root = tmp_path_factory.mktemp("retries")
    db = root / "monitoring.db"
    with Store(db) as store:
        jobs = [{"name": name, "label": label, "state": _final_state(attempts).value}
                for name, (label, attempts) in ATTEMPTS.items()]  # fmt: skip
        run = seed_run(store, root / "runs", "run-r", jobs=jobs, state=RunState.FAILED)
        recorder = RunRecorder(store, "run-r")
        clock = run["created"]
        for index, (name, (_, attempts)) in enumerate(ATTEMPTS.items()):
            for number, outcome in enumerate(attempts, start=1):
                outcome = dict(outcome)
                stderr = Path(run["run_dir"]) / "logs" / f"job-{index}" / f"attempt-{number}.err"
                stderr.parent.mkdir(exist_ok=True)
                stderr.write_text(outcome.pop("stderr", ""))
                recorder.attempt_submitted(
                    name, number, clock, pool=outcome["pool"], memory=outcome.get("memory_mb")
                )
                recorder.attempt_finished(name, number, {
                    **outcome, "start": clock, "end": clock + 1, "host": "node-1",
                    "block_id": "0", "stderr": str(stderr),
                })  # fmt: skip
                clock += 1
            recorder.job_state(name, _final_state(attempts), attempts=len(attempts))
        recorder.flush()
    return {"db": db, "run_id": "run-r"}


def _report(seeded: dict[str, Any], *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["report", seeded["run_id"], "--db", str(seeded["db"]), *args],
        env={"COLUMNS": "240"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def test_summary_counts_failed_attempts_per_label_and_job(seeded: dict[str, Any]) -> None:
    with Store(seeded["db"]) as store:
        summary = retry_summary(store, seeded["run_id"])

    assert summary["labels"] == {
        "big": {"attempts": 6, "failed": 4, "by_class": {"out_of_memory": 3, "timeout": 1},
                "recovered": 2},
        # The cancelled attempt is one of the label's attempts but no failure.
        "small": {"attempts": 4, "failed": 2, "by_class": {"pilot_lost": 1, "exit_code": 1},
                  "recovered": 0},
    }  # fmt: skip
    jobs = {job["job"]: job for job in summary["jobs"]}
    # Jobs that needed one attempt (fine, stopped) are not listed.
    assert list(jobs) == ["hog", "slow", "whale", "flaky"]
    assert [(j["recovered"], j["state"], j["attempts"]) for j in jobs.values()] == [
        (True, "succeeded", 2), (True, "succeeded", 2), (False, "failed", 2),
        (False, "failed", 2),
    ]  # fmt: skip
    [oom] = jobs["hog"]["failed_attempts"]
    assert (oom["attempt"], oom["failure_class"], oom["signal"], oom["message"]) == (
        1, "out_of_memory", 9, OOM,
    )  # fmt: skip
    assert (oom["memory_mb"], oom["peak_rss_mb"], oom["pool"]) == (150, 612.0, "small")
    # A transient failure shows like any other: it is how a flaky pilot shows.
    assert [a["failure_class"] for a in jobs["flaky"]["failed_attempts"]] == [
        "pilot_lost", "exit_code",
    ]  # fmt: skip


def test_text_report_shows_failed_attempts_and_recoveries(seeded: dict[str, Any]) -> None:
    text = _report(seeded)

    assert "big: attempts: 6 (4 failed: 3 out_of_memory, 1 timeout; recovered 2)" in text
    assert "small: attempts: 4 (2 failed: 1 pilot_lost, 1 exit_code; recovered 0)" in text
    assert "Jobs that needed more than one attempt (4):" in text
    assert re.search(r"hog\s+label big\s+succeeded on attempt 2 \(recovered\)", text)
    assert (
        f"attempt 1: out_of_memory, signal 9 (SIGKILL), 150MB requested, 612MB peak, "
        f"pool small: {OOM}"
    ) in text
    assert "attempt 1: timeout, signal 9 (SIGKILL), 100MB requested, 20MB peak" in text
    assert f"attempt 1: pilot_lost, pool small: {LOST}" in text
    assert "attempt 2: exit_code, exit code 3, pool small: exit code 3" in text
    assert re.search(r"whale\s+label big\s+failed after 2 attempts", text)
    # Failure groups count the jobs that failed that way and then succeeded.
    assert "out_of_memory: 2 job(s), 1 recovered: whale, hog (recovered)" in text
    assert "timeout: 1 job(s), 1 recovered: slow (recovered)" in text
    assert "e.g. slow (attempt 1, recovered): " + TIMEOUT in text
    assert "still at step 3" in text
    assert "exit_code 3: 1 job(s): flaky" in text


def test_json_report_adds_retries_and_keeps_its_keys(seeded: dict[str, Any]) -> None:
    data = json.loads(_report(seeded, "--json"))

    assert {"run", "name", "state", "site", "states", "labels", "jobs", "failed", "usage",
            "failure_groups", "environment_file", "run_dir"} <= set(data)  # fmt: skip
    assert data["retries"]["labels"]["big"]["by_class"] == {"out_of_memory": 3, "timeout": 1}
    assert data["retries"]["labels"]["big"]["recovered"] == 2
    hog = next(job for job in data["retries"]["jobs"] if job["job"] == "hog")
    assert hog["recovered"] is True
    assert hog["failed_attempts"][0]["failure_class"] == "out_of_memory"
    groups = {(g["failure_class"], g["exit_code"]): g for g in data["failure_groups"]}
    oom = groups[("out_of_memory", None)]
    # `count` and `jobs` stay the jobs that failed for good.
    assert (oom["count"], oom["jobs"]) == (1, ["whale"])
    assert (oom["recovered"], oom["recovered_jobs"]) == (1, ["hog"])
    timeout = groups[("timeout", None)]
    assert (timeout["count"], timeout["recovered"], timeout["recovered_jobs"]) == (
        0, 1, ["slow"],
    )  # fmt: skip
    # The example of a cause only recovered from is its failed attempt, to rerun by hand.
    assert timeout["example"]["job"] == "slow" and timeout["example"]["attempts"] == 1
    assert "PILOT_ATTEMPT=1" in timeout["reproduce"]
    assert groups[("exit_code", 3)]["recovered"] == 0
    assert ("pilot_lost", None) not in groups and ("cancelled", None) not in groups
    assert [g["count"] for g in data["failure_groups"]] == [1, 1, 0]


def test_html_report_shows_failed_attempts_and_recoveries(seeded: dict[str, Any]) -> None:
    with Store(seeded["db"]) as store:
        html = render(store, seeded["run_id"])

    assert "attempts: 6 (4 failed: 3 out_of_memory, 1 timeout; recovered 2)" in html
    retried = html[html.index('<table id="retried">') :]
    retried = retried[: retried.index("</table>")]
    rows = [
        re.sub(r"<[^>]+>", "|", row).strip("|").split("||")
        for row in re.findall(r"<tr>(.*?)</tr>", retried)[1:]
    ]
    assert rows[0] == [
        "hog", "big", "succeeded on attempt 2 (recovered)", "1", "out_of_memory",
        "signal 9 (SIGKILL)", "150MB", "612MB", "small", OOM,
    ]  # fmt: skip
    assert [row[0] for row in rows] == ["hog", "slow", "whale", "whale", "flaky", "flaky"]
    assert rows[4][4] == "pilot_lost" and rows[5][5] == "exit code 3"
    # Failure groups: out_of_memory counts whale (failed) and hog (recovered).
    assert "2 × out_of_memory</span> in label big" in html
    assert "1 failed for good, 1 recovered" in html
    assert 'hog <span class="state-succeeded">(recovered)</span>' in html
    assert "1 × timeout</span> in label big" in html
    assert "0 failed for good, 1 recovered" in html


def test_groups_without_retries_are_unchanged(seeded: dict[str, Any]) -> None:
    # The dashboard asks for no recovered jobs: its groups are the jobs failed for good.
    with Store(seeded["db"]) as store:
        groups = activity.failure_groups(store, seeded["run_id"])
    assert [(g["cause"], g["count"], g["recovered"]) for g in groups] == [
        ("out_of_memory", 1, 0), ("exit code 3", 1, 0),
    ]  # fmt: skip


def test_a_run_without_failed_attempts_says_so(tmp_path: Path) -> None:
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", "run-1", jobs=[
            {"name": "a", "label": "x", "state": "succeeded", "start": 0, "runtime": 1},
        ])  # fmt: skip
        html = render(store, "run-1")
        summary = retry_summary(store, "run-1")
    assert summary == {
        "labels": {"x": {"attempts": 1, "failed": 0, "by_class": {}, "recovered": 0}},
        "jobs": [],
    }
    assert "no failed attempts" in html and "no failed jobs" in html
