"""Per-label resource use and failures grouped by cause, for ``pilot report``.

Each failure group carries one example job with the exact command to reproduce it
by hand: its working directory, its own environment and the ``PILOT_*`` variables
(the rest of the environment is the one saved at submit, in the run directory).
"""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path
from typing import Any

from executor.store import Store


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
    store: Store, run: dict[str, Any], failures: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Failed jobs grouped by failure class and exit code, largest group first."""
    groups: dict[tuple[str, Any], dict[str, Any]] = {}
    for failure in failures:
        key = (failure["failure_class"] or "unknown", failure["exit_code"])
        group = groups.setdefault(key, {
            "failure_class": key[0], "exit_code": key[1], "count": 0, "jobs": [],
            "example": failure,
        })  # fmt: skip
        group["count"] += 1
        group["jobs"].append(failure["job"])
    ordered = sorted(groups.values(), key=lambda g: -g["count"])
    if ordered:
        specs = _job_specs(Path(run["workflow_copy"]), {g["example"]["job"] for g in ordered})
        for group in ordered:
            example = group["example"]
            group["reproduce"] = reproduce_command(
                specs.get(example["job"], {}), run, example["job"], example["attempts"]
            )
    return ordered


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
