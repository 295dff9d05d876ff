"""The facts behind ``pilot report``: plain dicts, shared by the text and JSON outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from executor.model.states import JOB_STATES
from executor.report.failures import failure_groups, label_usage, tail
from executor.report.retries import retry_summary
from executor.store import Store
from executor.store.queries import failed_jobs, get_run, run_summary


def build_report(store: Store, run_id: str, *, tail_lines: int = 10) -> dict[str, Any]:
    """Per-label counts with the expected total, every failed job with its stderr tail, and
    the attempts that failed, the ones a retry recovered from included (``retries``)."""
    run = get_run(store, run_id)
    summary = run_summary(store, run)
    labels = {
        label: {**counts, "expected": sum(counts.values())}
        for label, counts in summary["labels"].items()
    }
    retries = retry_summary(store, run["id"])
    failures = []
    for row in failed_jobs(store, run["id"]):
        failures.append(
            {
                "job": row["name"],
                "label": row["label"],
                "attempts": row["attempts"],
                "exit_code": row["exit_code"],
                "signal": row["signal"],
                "failure_class": row["failure_class"],
                "message": row["message"],
                "command": row["command"],
                "host": row["host"],
                "stderr": row["stderr"],
                "stderr_tail": tail(row["stderr"], tail_lines),
            }
        )
    return {
        "run": summary["run"],
        "name": summary["name"],
        "state": summary["state"],
        "site": summary["site"],
        "states": list(JOB_STATES),
        "labels": labels,
        "jobs": {**summary["jobs"], "expected": run["n_jobs"]},
        "failed": failures,
        "usage": label_usage(store, run["id"]),
        "failure_groups": failure_groups(
            store, run, failures, retried=retries["jobs"], tail_lines=tail_lines
        ),
        "retries": retries,
        "environment_file": str(Path(run["run_dir"]) / "environment.json"),
        "run_dir": str(Path(run["run_dir"])),
    }
