"""pilot's runs and jobs as bps reports: ``WmsRunReport``, ``WmsJobReport``, ``WmsStates``.

States map once, here, both ways explicit (pilot's names: ``executor.model.states``;
bps's: ``lsst.ctrl.bps.WmsStates``):

=============  ==================  ===================================================
pilot          ``WmsStates``       why
=============  ==================  ===================================================
pending        UNREADY             waiting for its parents
ready          READY               parents done, held by the driver (throttles, pilots)
queued         PENDING             handed to a pilot, not started on a worker yet
running        RUNNING             started on a worker
succeeded      SUCCEEDED
failed         FAILED              failed for good, retries used up
blocked        PRUNED              an ancestor failed for good: it will never run
cancelled      DELETED             the run was cancelled before the job ended
=============  ==================  ===================================================

A run maps the same way (running, succeeded, failed, cancelled → RUNNING, SUCCEEDED,
FAILED, DELETED); ``driver_lost`` maps to FAILED, with a message saying that ``bps
restart`` continues it: the run will not go on by itself.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from lsst.ctrl.bps import WmsJobReport, WmsRunReport, WmsStates

from executor.bps.records import run_record
from executor.model.states import QUEUED, JobState, RunState
from executor.store import Store
from executor.store.jobs import job_rows
from executor.store.queries import effective_state, label_counts, list_runs

JOB_STATES: dict[str, WmsStates] = {
    JobState.PENDING.value: WmsStates.UNREADY,
    JobState.READY.value: WmsStates.READY,
    QUEUED: WmsStates.PENDING,
    JobState.RUNNING.value: WmsStates.RUNNING,
    JobState.SUCCEEDED.value: WmsStates.SUCCEEDED,
    JobState.FAILED.value: WmsStates.FAILED,
    JobState.BLOCKED.value: WmsStates.PRUNED,
    JobState.CANCELLED.value: WmsStates.DELETED,
}
RUN_STATES: dict[str, WmsStates] = {
    RunState.RUNNING.value: WmsStates.RUNNING,
    RunState.SUCCEEDED.value: WmsStates.SUCCEEDED,
    RunState.FAILED.value: WmsStates.FAILED,
    RunState.CANCELLED.value: WmsStates.DELETED,
    RunState.DRIVER_LOST.value: WmsStates.FAILED,
}
# bps's report tables read the counts of every state, zero or not.
_ALL_STATES = tuple(WmsStates)


def run_state(run: dict[str, Any]) -> tuple[WmsStates, str]:
    """The run's bps state, and what to tell the user about it."""
    state = effective_state(run)
    if state == RunState.DRIVER_LOST.value:
        return RUN_STATES[state], (
            f"run {run['id']}: its driver is gone (driver_lost); `bps restart` continues it"
        )
    return RUN_STATES[state], ""


def job_state(row: dict[str, Any]) -> WmsStates:
    """A job row's bps state: a started ``running`` job is RUNNING, an unstarted one PENDING."""
    if row["state"] == JobState.RUNNING.value and row["runtime"] is None:
        return JOB_STATES[QUEUED]
    return JOB_STATES[row["state"]]


def exit_code(row: dict[str, Any]) -> int | None:
    """A failed job's exit code as a batch system gives it (128 + n after signal n)."""
    if row["exit_code"] not in (None, 0):
        return int(row["exit_code"])
    if row["signal"]:
        return 128 + int(row["signal"])
    return None


def run_report(
    store: Store, run: dict[str, Any], *, detailed: bool, exit_codes: bool = False
) -> WmsRunReport:
    """One run as bps reports it: with its jobs and per-label counts when ``detailed``."""
    record = run_record(run) or {}
    attrs = record.get("run_attrs") or {}
    state, _ = run_state(run)
    report = WmsRunReport(
        wms_id=run["id"],
        global_wms_id=run["id"],
        path=record.get("submit_path") or run["run_dir"],
        label=attrs.get("bps_run_label") or attrs.get("bps_payload") or run["name"],
        run=attrs.get("bps_run") or record.get("bps_run_name") or run["name"],
        project=attrs.get("bps_project", ""),
        campaign=attrs.get("bps_campaign", ""),
        payload=attrs.get("bps_payload", ""),
        operator=attrs.get("bps_operator") or run["owner"],
        state=state,
        total_number_jobs=run["n_jobs"],
    )
    renamed = record.get("renamed") or {}
    if detailed:
        rows = job_rows(store, run["id"], now=time.time())
        jobs = [
            WmsJobReport(
                wms_id=f"{run['id']}/{row['job']}",
                name=renamed.get(row["job"], row["job"]),
                label=row["label"],
                state=job_state(row),
            )
            for row in sorted(rows, key=lambda r: r["job"])
        ]
        report.jobs = jobs
        # Labels in the order the workflow has them (init first, final last).
        summary = {label: dict.fromkeys(_ALL_STATES, 0) for label in label_counts(store, run["id"])}
        for job in jobs:
            summary.setdefault(job.label, dict.fromkeys(_ALL_STATES, 0))[job.state] += 1
        report.job_summary = summary
        states = Counter(job.state for job in jobs)
        report.job_state_counts = {s: states.get(s, 0) for s in _ALL_STATES}
        report.run_summary = ";".join(f"{label}:{sum(c.values())}" for label, c in summary.items())
        if exit_codes:
            codes: dict[str, list[int]] = {}
            for row in rows:
                code = exit_code(row) if row["state"] == JobState.FAILED.value else None
                if code is not None:
                    codes.setdefault(row["label"], []).append(code)
            report.exit_code_summary = codes
    else:
        labels = label_counts(store, run["id"])
        report.run_summary = ";".join(
            f"{label}:{sum(shown.values())}" for label, shown in labels.items()
        )
        totals: Counter[WmsStates] = Counter()
        for per_state in labels.values():
            for shown, n in per_state.items():
                totals[JOB_STATES[shown]] += n
        report.job_state_counts = {s: totals.get(s, 0) for s in _ALL_STATES}
    return report


def listed_runs(
    store: Store, *, owner: str | None, hist_days: float, now: float | None = None
) -> list[dict[str, Any]]:
    """bps's runs of ``owner`` (everyone's: ``None``) that ``bps report`` lists.

    Running runs always; with ``hist_days``, also those created in that many past days.
    """
    now = time.time() if now is None else now
    since = now - hist_days * 86400 if hist_days else None
    rows = list_runs(store, 1000, owner=owner, since=since)
    if not hist_days:
        rows = [r for r in rows if r["state"] == RunState.RUNNING.value]
    return [row for row in rows if run_record(row) is not None]
