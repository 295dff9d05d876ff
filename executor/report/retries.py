"""Failed attempts, the ones a retry recovered from included, for ``pilot report``.

A job killed as ``out_of_memory`` that then succeeds with more memory is no failed
job, but its first attempt failed, and that is what a user tunes a workflow by. This
module is the one definition the text report, its JSON, the HTML report and the
dashboard all read: per label, how many attempts failed and why and how many jobs
recovered; per job, each failed attempt of the jobs that needed more than one (which
:func:`executor.report.failures.failure_groups` counts as recovered from their causes).

Transient failures (``pilot_lost``, ``code_unavailable``, ...) are failed attempts like
any other: they are how a flaky pilot shows. An attempt stopped because the run was
cancelled is none: neither the job nor its pilot failed.
"""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

from executor.model.states import FailureClass
from executor.model.units import format_memory
from executor.store import Store
from executor.store.history import failed_attempts, label_totals

NOT_A_FAILURE = FailureClass.CANCELLED.value

# What each failed attempt shows: enough to tell why it failed and what it used.
_ATTEMPT_FIELDS = (
    "attempt", "failure_class", "error_type", "exit_code", "signal", "message", "memory_mb",
    "peak_rss_mb", "pool", "host", "start", "end", "stderr",
)  # fmt: skip


def retry_summary(store: Store, run_id: str) -> dict[str, Any]:
    """Per label and per job: the attempts that failed, why, and the jobs that recovered.

    Returns
    -------
    dict
        ``labels``: per label, in workflow order, ``attempts`` (all of them), ``failed``
        (failed attempts), ``by_class`` (failed attempts per failure class, most
        first) and ``recovered`` (jobs that succeeded after a failed attempt).
        ``jobs``: in workflow order, the jobs that needed more than one attempt and
        had one fail, each with its ``label``, final ``state``, ``attempts``,
        ``recovered`` (it succeeded in the end) and ``failed_attempts`` (each with
        its number, failure class, exit code, signal, message, memory requested and
        peak in MB, pool, host, start, end and stderr path).
    """
    labels: dict[str, dict[str, Any]] = {
        row["label"]: {"attempts": row["attempts"] or 0, "failed": 0, "by_class": Counter(),
                       "recovered": 0}
        for row in label_totals(store, run_id)
    }  # fmt: skip
    rows = failed_attempts(store, run_id, excluding=NOT_A_FAILURE)
    jobs = _jobs_of(rows)
    for row in rows:
        entry = labels[row["label"]]
        entry["failed"] += 1
        entry["by_class"][row["failure_class"] or "unknown"] += 1
    for job in jobs:
        labels[job["label"]]["recovered"] += job["recovered"]
    for entry in labels.values():
        entry["by_class"] = dict(entry["by_class"].most_common())
    return {"labels": labels, "jobs": _retried(jobs)}


def retried_jobs(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The ``jobs`` of :func:`retry_summary` alone, without reading every label's totals
    (the dashboard asks for them every few seconds)."""
    return _retried(_jobs_of(failed_attempts(store, run_id, excluding=NOT_A_FAILURE)))


def _jobs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job with a failed attempt among ``rows``, with those attempts, in row order."""
    jobs: dict[str, dict[str, Any]] = {}
    for row in rows:
        job = jobs.get(row["job"])
        if job is None:
            job = jobs[row["job"]] = {
                "job": row["job"], "label": row["label"], "state": row["job_state"],
                "attempts": row["job_attempts"], "recovered": row["job_state"] == "succeeded",
                "command": row["command"], "failed_attempts": [],
            }  # fmt: skip
        job["failed_attempts"].append({field: row[field] for field in _ATTEMPT_FIELDS})
    return list(jobs.values())


def _retried(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [job for job in jobs if job["attempts"] > 1]


def describe_label(entry: dict[str, Any]) -> str:
    """``attempts: 12 (3 failed: 2 out_of_memory, 1 timeout; recovered 3)``."""
    if not entry["failed"]:
        return f"attempts: {entry['attempts']} (none failed)"
    classes = ", ".join(f"{n} {cls}" for cls, n in entry["by_class"].items())
    return (
        f"attempts: {entry['attempts']} ({entry['failed']} failed: {classes}; "
        f"recovered {entry['recovered']})"
    )


def describe_outcome(job: dict[str, Any]) -> str:
    """``succeeded on attempt 2 (recovered)`` or ``failed after 3 attempts``."""
    if job["recovered"]:
        return f"succeeded on attempt {job['attempts']} (recovered)"
    if job["state"] == "failed":
        return f"failed after {job['attempts']} attempts"
    return f"{job['state']} after {job['attempts']} attempts"


def signal_text(number: int) -> str:
    """``signal 9 (SIGKILL)``, or ``signal 99`` for a number with no name here."""
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def exit_status(attempt: dict[str, Any]) -> str:
    """``exit code 3``, ``signal 9 (SIGKILL)`` or ``-`` (it never ran)."""
    if attempt["signal"]:
        return signal_text(attempt["signal"])
    if attempt["exit_code"] is not None:
        return f"exit code {attempt['exit_code']}"
    return "-"


def memory_use(attempt: dict[str, Any]) -> str:
    """``150MB requested, 420MB peak``."""
    return (
        f"{format_memory(attempt['memory_mb'])} requested, "
        f"{format_memory(attempt['peak_rss_mb'])} peak"
    )


def describe_attempt(attempt: dict[str, Any]) -> str:
    """One failed attempt on a line: number, class, exit status, memory, pool, message."""
    parts = [
        f"attempt {attempt['attempt']}: {attempt['failure_class'] or 'unknown'}",
        exit_status(attempt),
    ]
    if attempt["memory_mb"] is not None or attempt["peak_rss_mb"] is not None:
        parts.append(memory_use(attempt))
    if attempt["pool"]:
        parts.append(f"pool {attempt['pool']}")
    line = ", ".join(part for part in parts if part != "-")
    return f"{line}: {attempt['message']}" if attempt["message"] else line
