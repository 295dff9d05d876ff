"""Failed attempts that a retry recovered from, in the text, JSON and HTML reports."""

from __future__ import annotations

import html
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from browser import Watched
from click.testing import CliRunner
from seed import seed_run

from executor.cli import cli
from executor.model.states import JobState, RunState
from executor.report import api
from executor.report.html import render
from executor.report.retries import retry_summary
from executor.report.server import Dashboard
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


def seed_attempts(
    root: Path, run_id: str, table: dict[str, tuple[str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    """A finished run whose attempts a real driver would have written for ``table``: per
    job, its label and each attempt's outcome, in order."""
    db = root / "monitoring.db"
    with Store(db) as store:
        jobs = [{"name": name, "label": label, "state": "ready"}
                for name, (label, _) in table.items()]  # fmt: skip
        run = seed_run(store, root / "runs", run_id, jobs=jobs, state=RunState.FAILED)
        recorder = RunRecorder(store, run_id)
        clock = run["created"]
        for index, (name, (_, attempts)) in enumerate(table.items()):
            # Through running, as a driver moves a job; flushed, as it flushes each move.
            recorder.job_state(name, JobState.RUNNING)
            recorder.flush()
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
    return {"db": db, "run_id": run_id}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished run whose attempts a real driver would have written for ``ATTEMPTS``."""
    return seed_attempts(tmp_path_factory.mktemp("retries"), "run-r", ATTEMPTS)


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
    assert "exit code 3: 1 job(s): flaky" in text
    assert "  in label small" in text


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
    script = Path(timeout["reproduce_script"])
    assert timeout["reproduce"] == f"bash {script}" and script.name == "slow.attempt-1.sh"
    assert "PILOT_ATTEMPT=1" in script.read_text()
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
    # Each group says how to rerun its example by hand, as the text report does.
    assert "reproduce slow (attempt 1, recovered):" in html
    assert re.search(r'<pre class="log reproduce">bash /\S+/repro/slow\.attempt-1\.sh</pre>', html)


def test_dashboard_groups_count_recovered_jobs(seeded: dict[str, Any]) -> None:
    # The dashboard groups as the reports do: jobs that recovered from a cause count.
    with Store(seeded["db"]) as store:
        groups = api.run_detail(store, seeded["run_id"])["failures"]
    assert [(g["cause"], g["labels"], g["count"], g["recovered"]) for g in groups] == [
        ("out_of_memory", ["big"], 1, 1), ("exit code 3", ["small"], 1, 0),
        ("timeout", ["big"], 0, 1),
    ]  # fmt: skip
    assert groups[2]["example"]["stderr_tail"] == ["still at step 3"]


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


# -- one grouping in every output -------------------------------------------------------


def _exit(code: int) -> dict[str, Any]:
    return {"state": "failed", "failure_class": "exit_code", "exit_code": code,
            "message": f"exit code {code}", "pool": "small"}  # fmt: skip


OK = {"state": "succeeded", "exit_code": 0, "pool": "small"}
SEGV = {"state": "failed", "failure_class": "signal", "signal": 11,
        "message": "killed by signal SIGSEGV", "pool": "small"}  # fmt: skip
OOM_KILL = {"state": "failed", "failure_class": "out_of_memory", "signal": 9, "message": OOM,
            "pool": "small"}  # fmt: skip
# A job that traps the walltime's SIGTERM exits 143: still a timeout like the others.
TIMED_OUT = {"state": "failed", "failure_class": "timeout", "exit_code": 143,
             "message": TIMEOUT, "pool": "small"}  # fmt: skip

# Several kinds of failure over three labels: one exit code in two labels, another exit
# code, a crash, out-of-memory (once recovered from), a timeout, a lost pilot recovered
# from, and a cancelled job (no failure).
MIXED: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "a1": ("align", [_exit(3)]),
    "a2": ("align", [_exit(3)]),
    "t1": ("align", [TIMED_OUT]),
    "ok": ("align", [OK]),
    "c1": ("coadd", [_exit(3)]),
    "c2": ("coadd", [_exit(1)]),
    "c3": ("coadd", [SEGV]),
    "p1": ("coadd", [{"state": "failed", "failure_class": "pilot_lost", "message": LOST,
                      "pool": "small"}, OK]),
    "x1": ("coadd", [{"state": "failed", "failure_class": "cancelled",
                      "message": "the run was cancelled", "pool": "small"}]),
    "m1": ("measure", [OOM_KILL, OK]),
    "m2": ("measure", [OOM_KILL, OOM_KILL]),
    "m3": ("measure", [TIMED_OUT, _exit(1)]),
}  # fmt: skip

# Largest first; the same size: the one with more recovered first, then first seen.
MIXED_GROUPS = [
    ("exit code 3", ["align", "coadd"], 3, ["a1", "a2", "c1"], 0, []),
    ("exit code 1", ["coadd", "measure"], 2, ["c2", "m3"], 0, []),
    ("out_of_memory", ["measure"], 1, ["m2"], 1, ["m1"]),
    ("timeout", ["align"], 1, ["t1"], 0, []),
    ("killed by signal 11 (SIGSEGV)", ["coadd"], 1, ["c3"], 0, []),
    ("pilot_lost", ["coadd"], 0, [], 1, ["p1"]),
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return seed_attempts(tmp_path_factory.mktemp("mixed"), "run-m", MIXED)


def _as_rows(groups: list[dict[str, Any]]) -> list[tuple]:
    return [
        (g["cause"], g["labels"], g["count"], g["jobs"], g["recovered"], g["recovered_jobs"])
        for g in groups
    ]


def _split(names: list[str], marker: str) -> tuple[list[str], list[str]]:
    failed = [name for name in names if not name.endswith(marker)]
    return failed, [name.removesuffix(marker) for name in names if name.endswith(marker)]


def _text_groups(text: str) -> list[tuple]:
    rows = []
    for match in re.finditer(
        r"^(\S.*?): (\d+) job\(s\)(?:, (\d+) recovered)?: (.*)\n  in labels? (.*)$", text, re.M
    ):
        cause, total, recovered, names, labels = match.groups()
        failed, back = _split(names.split(", "), " (recovered)")
        rows.append((cause, labels.split(", "), int(total) - int(recovered or 0), failed,
                     int(recovered or 0), back))  # fmt: skip
    return rows


def _html_groups(page: str) -> list[tuple]:
    rows = []
    for match in re.finditer(
        r'<div class="failure"><h3><span class="[\w-]+">(\d+) × (.*?)</span> in labels? (.*?)'
        r'</h3>(?:<p class="meta">(\d+) failed for good, (\d+) recovered[^<]*</p>)?'
        r'<p class="meta">jobs: (.*?)</p>',
        page,
    ):
        total, cause, labels, failed_n, recovered, names = match.groups()
        names = names.replace(' <span class="state-succeeded">(recovered)</span>', "+")
        failed, back = _split(names.split(", "), "+")
        rows.append((html.unescape(cause), html.unescape(labels).split(", "),
                     int(failed_n or total), failed, int(recovered or 0), back))  # fmt: skip
    return rows


def test_every_output_groups_failures_the_same(mixed: dict[str, Any]) -> None:
    as_json = json.loads(_report(mixed, "--json"))["failure_groups"]
    text = _report(mixed)
    with Store(mixed["db"]) as store:
        page = render(store, mixed["run_id"])
    with Dashboard(mixed["db"]) as dashboard, urllib.request.urlopen(
        f"{dashboard.url}api/runs/{mixed['run_id']}", timeout=30
    ) as response:
        served = json.load(response)["failures"]

    assert _as_rows(as_json) == MIXED_GROUPS
    assert _text_groups(text) == MIXED_GROUPS
    assert _html_groups(page) == MIXED_GROUPS
    # The dashboard's groups are the JSON's, with the same command to reproduce each.
    assert served == as_json
    assert all(g["reproduce"] == f"bash {g['reproduce_script']}" for g in served)
    # The key stays failure class, exit code and signal; the latter only where they are
    # the failure itself (a timeout that exited 143 is a timeout like the rest).
    assert [(g["failure_class"], g["exit_code"], g["signal"]) for g in as_json] == [
        ("exit_code", 3, None), ("exit_code", 1, None), ("out_of_memory", None, None),
        ("timeout", None, None), ("signal", None, 11), ("pilot_lost", None, None),
    ]  # fmt: skip
    assert as_json[5]["example"]["job"] == "p1" and as_json[5]["example"]["recovered"]


def test_the_dashboard_page_shows_groups_and_recoveries(
    mixed: dict[str, Any], page: Watched
) -> None:
    from playwright.sync_api import expect

    with Dashboard(mixed["db"]) as dashboard:
        page.page.goto(f"{dashboard.url}#{mixed['run_id']}")
        groups = page.page.locator("#failures .failure")
        expect(groups).to_have_count(len(MIXED_GROUPS), timeout=30_000)
        headings = page.page.locator("#failures .failure h3").all_inner_texts()
        oom = page.page.locator('#failures .failure[data-cause="out_of_memory"]').inner_text()
    assert headings == [
        f"{count + recovered} × {cause} in label{'s' if len(labels) > 1 else ''} "
        + ", ".join(labels)
        for cause, labels, count, _, recovered, _ in MIXED_GROUPS
    ]
    assert "1 failed for good, 1 recovered" in oom and "m2, m1 (recovered)" in oom
    assert page.errors == []
