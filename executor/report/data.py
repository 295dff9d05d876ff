"""The facts behind ``pilot report``: plain dicts, shared by the text and JSON outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from executor.model.states import SHOWN_STATES
from executor.report.activity import label_usage
from executor.report.efficiency import pilot_efficiency
from executor.report.failures import failure_groups, final_failures
from executor.report.jobs import blocked_causes
from executor.report.logs import log_tail
from executor.report.retries import retry_summary
from executor.store import Store
from executor.store.queries import get_run, run_summary


def build_report(store: Store, run_id: str, *, tail_lines: int = 10) -> dict[str, Any]:
    """Per-label counts with the expected total, every failed job with its stderr tail, and
    the attempts that failed, the ones a retry recovered from included (``retries``),
    and the blocked jobs per failed ancestor (``blocked``)."""
    run = get_run(store, run_id)
    summary = run_summary(store, run)
    labels = {
        label: {**counts, "expected": sum(counts.values())}
        for label, counts in summary["labels"].items()
    }
    retries = retry_summary(store, run["id"])
    failures = [
        {**failure, "stderr_tail": log_tail(failure["stderr"], run["run_dir"], tail_lines)}
        for failure in final_failures(store, run["id"])
    ]
    return {
        "run": summary["run"],
        "name": summary["name"],
        "state": summary["state"],
        "site": summary["site"],
        "states": list(SHOWN_STATES),
        "labels": labels,
        "jobs": {**summary["jobs"], "expected": run["n_jobs"]},
        "failed": failures,
        "blocked": blocked_causes(store, run["id"]),
        "usage": label_usage(store, run["id"]),
        "efficiency": pilot_efficiency(store, run, now=time.time()),
        "failure_groups": failure_groups(run, failures, retries["jobs"], tail_lines=tail_lines),
        "retries": retries,
        "environment_file": str(Path(run["run_dir"]) / "environment.json"),
        "run_dir": str(Path(run["run_dir"])),
    }
