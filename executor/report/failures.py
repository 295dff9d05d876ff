"""Per-label resource use and failures grouped by cause, for ``pilot report``.

Each failure group carries one example job with the exact command to reproduce it
by hand: its working directory, its own environment and the ``PILOT_*`` variables
(the rest of the environment is the one saved at submit, in the run directory).
A group also counts the jobs that failed that way and then succeeded on a retry.
"""

from __future__ import annotations

import json
import shlex
import statistics
from collections import deque
from pathlib import Path
from typing import Any

from executor.report.retries import recovered_by
from executor.store import Store


def tail(path: str | None, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (empty if it is missing)."""
    if not path or lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            last = deque(handle, maxlen=lines)
    except OSError:
        return []
    return [line.decode("utf-8", "replace").rstrip("\n") for line in last]


def label_usage(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Per label: jobs succeeded/failed, attempts, runtime and peak memory (median, max)."""
    usage: dict[str, dict[str, Any]] = {}
    for row in store.query(
        "SELECT label, sum(state = 'succeeded') AS succeeded, sum(state = 'failed') AS failed, "
        "sum(attempts) AS attempts FROM jobs WHERE run_id = ? "
        "GROUP BY label ORDER BY min(position)",
        [run_id],
    ):
        usage[row["label"]] = {
            "succeeded": row["succeeded"], "failed": row["failed"], "attempts": row["attempts"],
        }  # fmt: skip
    runtimes: dict[str, list[float]] = {}
    memories: dict[str, list[float]] = {}
    for row in store.query(
        "SELECT j.label, a.start, a.end, a.peak_rss_mb FROM attempts a JOIN jobs j "
        "ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ? AND a.start IS NOT NULL AND a.end IS NOT NULL",
        [run_id],
    ):
        runtimes.setdefault(row["label"], []).append(row["end"] - row["start"])
        if row["peak_rss_mb"] is not None:
            memories.setdefault(row["label"], []).append(row["peak_rss_mb"])
    for label, entry in usage.items():
        entry["runtime"] = _median_max(runtimes.get(label, []))
        entry["peak_memory_mb"] = _median_max(memories.get(label, []))
    return usage


def _median_max(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": statistics.median(values), "max": max(values)}


def failure_groups(
    store: Store,
    run: dict[str, Any],
    failures: list[dict[str, Any]],
    *,
    retried: list[dict[str, Any]] | None = None,
    tail_lines: int = 10,
) -> list[dict[str, Any]]:
    """Failed jobs grouped by failure class and exit code, largest group first.

    ``count`` and ``jobs`` are the jobs that failed for good. With ``retried`` (the
    ``jobs`` of :func:`~executor.report.retries.retry_summary`), ``recovered`` and
    ``recovered_jobs`` are those that failed that way and then succeeded; a cause only
    recovered from is a group with ``count`` 0 whose example is its first failed attempt.
    """
    groups: dict[tuple[str, Any], dict[str, Any]] = {}

    def group_of(key: tuple[str, Any], example: dict[str, Any]) -> dict[str, Any]:
        return groups.setdefault(key, {
            "failure_class": key[0], "exit_code": key[1], "count": 0, "jobs": [],
            "recovered": 0, "recovered_jobs": [], "example": example,
        })  # fmt: skip

    for failure in failures:
        group = group_of(_key(failure), failure)
        group["count"] += 1
        group["jobs"].append(failure["job"])
    for key, attempts in recovered_by(retried or [], _key).items():
        group = group_of(key, _recovered_example(attempts[0], tail_lines))
        group["recovered"] += len(attempts)
        group["recovered_jobs"].extend(attempt["job"] for attempt in attempts)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["recovered"]))
    if ordered:
        specs = _job_specs(Path(run["workflow_copy"]), {g["example"]["job"] for g in ordered})
        for group in ordered:
            example = group["example"]
            group["reproduce"] = reproduce_command(
                specs.get(example["job"], {}), run, example["job"], example["attempts"]
            )
    return ordered


def _key(row: dict[str, Any]) -> tuple[str, Any]:
    return (row["failure_class"] or "unknown", row["exit_code"])


def _recovered_example(attempt: dict[str, Any], tail_lines: int) -> dict[str, Any]:
    """A failed attempt of a job that recovered, shaped like a failed job of the report."""
    return {
        "job": attempt["job"],
        "label": attempt["label"],
        # The attempt to reproduce: this failed one, not the job's last.
        "attempts": attempt["attempt"],
        "exit_code": attempt["exit_code"],
        "signal": attempt["signal"],
        "failure_class": attempt["failure_class"],
        "message": attempt["message"],
        "command": attempt["command"],
        "host": attempt["host"],
        "stderr": attempt["stderr"],
        "stderr_tail": tail(attempt["stderr"], tail_lines),
        "recovered": True,
    }


def _job_specs(workflow_copy: Path, names: set[str]) -> dict[str, dict[str, Any]]:
    try:
        jobs = json.loads(workflow_copy.read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {job["name"]: job for job in jobs if job.get("name") in names}


def reproduce_command(spec: dict[str, Any], run: dict[str, Any], job: str, attempt: int) -> str:
    """A shell line that reruns one attempt of a job by hand, where and as pilot ran it."""
    variables = {
        **spec.get("environment", {}),
        "PILOT_RUN_ID": run["id"],
        "PILOT_JOB_NAME": job,
        "PILOT_ATTEMPT": str(attempt),
        "PILOT_RUN_DIR": run["run_dir"],
    }
    env = " ".join(f"{key}={shlex.quote(str(value))}" for key, value in variables.items())
    if "function" in spec:
        module, _, attribute = spec["function"].partition(":")
        call = (
            f"import sys, json; sys.path.insert(0, '.'); import {module} as m; "
            f"print(json.dumps(m.{attribute}(*{spec.get('args', [])!r}, "
            f"**{spec.get('kwargs', {})!r})))"
        )
        command = shlex.join(["python", "-c", call])
    elif isinstance(spec.get("command"), list):
        command = shlex.join(spec["command"])
    else:
        command = shlex.join(["bash", "-c", str(spec.get("command", ""))])
    return f"cd {shlex.quote(run['workdir'])} && env {env} {command}"
