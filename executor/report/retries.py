"""Failed attempts, the ones a retry recovered from included, for ``pilot report``.

A job killed as ``out_of_memory`` that then succeeds with more memory is no failed
job, but its first attempt failed, and that is what a user tunes a workflow by. This
module is the one definition the text report, its JSON and the HTML report all read:
per label, how many attempts failed and why and how many jobs recovered; per job, each
failed attempt of the jobs that needed more than one; and, for both groupings of
failures by cause, which jobs recovered from each cause.

Transient failures (``pilot_lost``, ``code_unavailable``, ...) are failed attempts like
any other: they are how a flaky pilot shows. An attempt stopped because the run was
cancelled is none: neither the job nor its pilot failed.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from executor.model.units import format_memory
from executor.store import Store

K = TypeVar("K", bound=Hashable)

NOT_A_FAILURE = "cancelled"

# What each failed attempt shows: enough to tell why it failed and what it used.
_ATTEMPT_FIELDS = (
    "attempt", "failure_class", "exit_code", "signal", "message", "memory_mb",
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
        for row in store.query(
            "SELECT label, sum(attempts) AS attempts FROM jobs WHERE run_id = ? "
            "GROUP BY label ORDER BY min(position)",
            [run_id],
        )
    }  # fmt: skip
    jobs: dict[str, dict[str, Any]] = {}
    for row in store.query(
        "SELECT j.name, j.label, j.state AS job_state, j.attempts AS job_attempts, j.command, "
        + ", ".join(f"a.{field}" for field in _ATTEMPT_FIELDS)
        + " FROM attempts a JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ? AND a.state = 'failed' AND coalesce(a.failure_class, '') != ? "
        "ORDER BY j.position, a.attempt",
        [run_id, NOT_A_FAILURE],
    ):
        entry = labels[row["label"]]
        entry["failed"] += 1
        entry["by_class"][row["failure_class"] or "unknown"] += 1
        job = jobs.get(row["name"])
        if job is None:
            job = jobs[row["name"]] = {
                "job": row["name"], "label": row["label"], "state": row["job_state"],
                "attempts": row["job_attempts"], "recovered": row["job_state"] == "succeeded",
                "command": row["command"], "failed_attempts": [],
            }  # fmt: skip
            entry["recovered"] += job["recovered"]
        job["failed_attempts"].append({field: row[field] for field in _ATTEMPT_FIELDS})
    for entry in labels.values():
        entry["by_class"] = dict(entry["by_class"].most_common())
    return {
        "labels": labels,
        "jobs": [job for job in jobs.values() if job["attempts"] > 1],
    }


def recovered_by(
    jobs: list[dict[str, Any]], key: Callable[[dict[str, Any]], K]
) -> dict[K, list[dict[str, Any]]]:
    """Per failure group ``key``, the first failed attempt of each job that recovered.

    ``jobs`` are :func:`retry_summary`'s; ``key`` maps a failed attempt (with the
    job's ``job``, ``label`` and ``command`` added) to the group it belongs to, so
    that each grouping of failures counts recovered jobs by its own cause.
    """
    groups: dict[K, list[dict[str, Any]]] = {}
    for job in jobs:
        if not job["recovered"]:
            continue
        seen: set[K] = set()
        for attempt in job["failed_attempts"]:
            row = {**attempt, "job": job["job"], "label": job["label"], "command": job["command"]}
            group = key(row)
            if group not in seen:
                seen.add(group)
                groups.setdefault(group, []).append(row)
    return groups


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


def exit_status(attempt: dict[str, Any]) -> str:
    """``exit code 3``, ``signal 9 (SIGKILL)`` or ``-`` (it never ran)."""
    if attempt["signal"]:
        try:
            return f"signal {attempt['signal']} ({signal.Signals(attempt['signal']).name})"
        except ValueError:
            return f"signal {attempt['signal']}"
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
