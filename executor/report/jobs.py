"""A run's jobs one per line (``pilot jobs``), its attempts as a trace file (``pilot
report --tsv``, like Nextflow's ``trace.txt``), and its blocked jobs per failed ancestor.

Rows are plain dicts in natural name order (``job-2`` before ``job-10``); the JSON
fields of ``pilot jobs --json`` are :data:`JOB_COLUMNS` (add fields freely, never
rename them).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from executor.model.names import natural_key
from executor.model.units import format_duration, format_memory
from executor.report.failures import cause_of, describe_cause
from executor.report.palette import STATE_STYLE
from executor.store import Store
from executor.store.jobs import attempt_rows, blocked_by, job_rows

JOB_COLUMNS = (
    "job", "label", "state", "attempts", "exit_code", "signal", "failure_class", "runtime",
    "peak_rss_mb", "host", "blocked_by", "stdout", "stderr", "error_type",
)  # fmt: skip
TRACE_COLUMNS = (
    "job", "attempt", "label", "state", "failure_class", "exit_code", "signal", "submitted",
    "start", "end", "runtime", "peak_rss_mb", "cpu_seconds", "memory_mb", "pool", "host",
    "block_id", "batch_job_id", "stdout", "stderr", "error_type",
)  # fmt: skip


def list_jobs(
    store: Store, run_id: str, *, now: float, states: tuple[str, ...] = (), label: str | None = None
) -> list[dict[str, Any]]:
    """The run's jobs (only those in ``states`` and of ``label``, when given), naturally
    sorted by name, each with :data:`JOB_COLUMNS`; ``blocked_by`` names the failed
    ancestor of a blocked job (``None`` for the others)."""
    rows = job_rows(store, run_id, now=now, states=states, label=label)
    ancestors = blocked_by(store, run_id) if any(r["state"] == "blocked" for r in rows) else {}
    rows.sort(key=lambda row: natural_key(row["job"]))
    for row in rows:
        row["blocked_by"] = ancestors.get(row["job"]) if row["state"] == "blocked" else None
    return [{key: row[key] for key in JOB_COLUMNS} for row in rows]


def trace(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Every attempt of the run, by job name (naturally) then attempt: :data:`TRACE_COLUMNS`."""
    rows = attempt_rows(store, run_id)
    rows.sort(key=lambda row: (natural_key(row["job"]), row["attempt"]))
    return [{key: row[key] for key in TRACE_COLUMNS} for row in rows]


def blocked_causes(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Blocked jobs per failed ancestor, most first: ``ancestor``, ``count`` and ``jobs``
    (naturally sorted). Jobs blocked before the driver recorded why are left out."""
    groups: dict[str, list[str]] = {}
    for job, ancestor in blocked_by(store, run_id).items():
        groups.setdefault(ancestor, []).append(job)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), natural_key(item[0])))
    return [
        {"ancestor": ancestor, "count": len(jobs), "jobs": sorted(jobs, key=natural_key)}
        for ancestor, jobs in ordered
    ]


def how_it_ended(row: dict[str, Any]) -> str:
    """``exit code 0``, ``killed by signal 9 (SIGKILL)``, ``out_of_memory``, or ``-``
    for a job that is running or never ran."""
    if row["state"] == "running":
        return "-"
    if row["failure_class"] is None and row["signal"] is None:
        return "-" if row["exit_code"] is None else f"exit code {row['exit_code']}"
    return describe_cause(cause_of(row))


_TABLE_COLUMNS = ("job", "state", "attempts", "ended", "runtime", "peak mem", "host", "blocked by")


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    """One line per job: state, attempts, how its last attempt ended, runtime, peak
    memory, host, and the failed ancestor of a blocked job."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in _TABLE_COLUMNS:
        right = column in ("attempts", "runtime", "peak mem")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for row in rows:
        table.add_row(
            Text(row["job"]), Text(row["state"], style=STATE_STYLE.get(row["state"], "")),
            str(row["attempts"]), Text(how_it_ended(row)), format_duration(row["runtime"]),
            format_memory(row["peak_rss_mb"]), Text(row["host"] or "-"),
            Text(row["blocked_by"] or ""),
        )  # fmt: skip
    return table


def to_tsv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """A header line and one tab-separated line per row; ``None`` is an empty field.

    Tabs and newlines inside a value (a job name is user data) become spaces, so every
    row stays one line with one field per column.
    """

    def field(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            value = round(value, 3)
        return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")

    lines = ["\t".join(columns)]
    lines += ["\t".join(field(row[column]) for column in columns) for row in rows]
    return "\n".join(lines) + "\n"
