"""Failures grouped by cause: the one grouping every report and the dashboard show.

``pilot report`` (text and ``--json``), the HTML report and the dashboard all group with
:func:`failure_groups`, so a failure mode has the same name, count and jobs wherever a
user looks. Each group carries one example job with the last lines of its stderr and
a script that reruns that attempt by hand, as pilot ran it (:mod:`executor.report.repro`),
shown as one short ``bash runs/<id>/repro/...`` line that survives wrapping and pasting.
A group also counts the jobs that failed that way and then
succeeded on a retry.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from executor.model.names import natural_key
from executor.model.states import FailureClass
from executor.policy.crashes import ALONE_NOTE
from executor.policy.retrying import NOT_RETRIED
from executor.report import repro
from executor.report.logs import log_tail
from executor.report.retries import signal_text
from executor.store import Store
from executor.store.queries import failed_jobs

# (failure class, exit code, signal, error: exception type and message head, or None)
Cause = tuple[str, int | None, int | None, str | None]

# Job names a page shows per group (``--json`` has them all); it says how many more.
NAMES_SHOWN = 5

# The classes where how the process ended is the failure mode itself. For the others
# (out_of_memory, timeout, pilot_lost, ...) pilot stopped the job or never ran it, and
# the exit code or signal that followed says nothing more.
_BY_EXIT_CODE = {FailureClass.EXIT_CODE.value, "unknown"}
_BY_SIGNAL = {FailureClass.SIGNAL.value, "unknown"}
_BY_ERROR = {FailureClass.EXIT_CODE.value, FailureClass.COULD_NOT_START.value, "unknown"}
# How much of an exception's message tells one failure mode from another.
_HEAD_CHARS = 80


def error_of(attempt: dict[str, Any]) -> str | None:
    """``ValueError: bad input N``: the attempt's exception type and the head of its
    message (first line, numbers as ``N``, so ``bad input 3`` and ``bad input 4`` are one
    failure mode), or ``None`` when the attempt recorded no exception type."""
    error_type = attempt.get("error_type")
    if not error_type:
        return None
    message = attempt.get("message") or ""
    _, found, rest = message.partition(f"{error_type}: ")
    head = rest.splitlines()[0] if found and rest.strip() else ""
    # The driver's notes on the attempt say nothing about the failure mode.
    head = head.split(f"; {NOT_RETRIED}")[0].split(ALONE_NOTE)[0].strip()
    head = re.sub(r"\d+", "N", head)
    if len(head) > _HEAD_CHARS:
        head = head[: _HEAD_CHARS - 1] + "…"
    return f"{error_type}: {head}" if head else error_type


def cause_of(attempt: dict[str, Any]) -> Cause:
    """The group of a failed attempt: ``(failure class, exit code, signal, error)``.

    The failure class says why pilot counts the attempt failed, and it is what a
    user acts on (more memory, a longer walltime, a flaky node); the exit code or
    signal tells the job's own failure modes apart (``exit 3``: input missing, ``exit
    1``: a crash; a segfault from a kill), so it is kept where the class is
    ``exit_code``, ``signal`` or unknown. The label is not part of the key: one cause
    often hits several labels at once (a full disk, a lost node), and splitting it
    per label would show one problem many times; a group lists its ``labels``. A
    function job that raised, and a job that could not start, are told apart by
    :func:`error_of` (every Python exception is exit code 1).
    """
    failure_class = attempt["failure_class"] or "unknown"
    return (
        failure_class,
        attempt["exit_code"] if failure_class in _BY_EXIT_CODE else None,
        attempt["signal"] if failure_class in _BY_SIGNAL else None,
        error_of(attempt) if failure_class in _BY_ERROR else None,
    )


def describe_cause(cause: Cause) -> str:
    """``exit code 3``, ``killed by signal 11 (SIGSEGV)``, ``out_of_memory``,
    ``ValueError: bad input N``, ``could not start: ModuleNotFoundError: ...``, ..."""
    failure_class, exit_code, signal, error = cause
    if failure_class == FailureClass.COULD_NOT_START.value:
        return f"could not start: {error}" if error else "could not start"
    if failure_class == FailureClass.EXIT_CODE.value and error:
        return error
    if failure_class == FailureClass.EXIT_CODE.value and exit_code is not None:
        return f"exit code {exit_code}"
    if failure_class == FailureClass.SIGNAL.value and signal:
        return f"killed by {signal_text(signal)}"
    details = [f"exit code {exit_code}"] if exit_code is not None else []
    details += [signal_text(signal)] if signal else []
    return failure_class + (f" ({', '.join(details)})" if details else "")


def describe_labels(labels: list[str]) -> str:
    """``label big`` or ``labels big, small``."""
    return ("label " if len(labels) == 1 else "labels ") + ", ".join(labels)


def final_failures(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The jobs that failed for good, each with the facts of its last attempt.

    The entries of ``pilot report --json``'s ``failed`` (without ``stderr_tail``), in
    label then name order, names in natural order (``job-2`` before ``job-10``).
    """
    rows = sorted(failed_jobs(store, run_id), key=lambda r: (r["label"], natural_key(r["name"])))
    return [
        {
            "job": row["name"],
            "label": row["label"],
            "attempts": row["attempts"],
            "exit_code": row["exit_code"],
            "signal": row["signal"],
            "failure_class": row["failure_class"],
            "error_type": row["error_type"],
            "message": row["message"],
            "command": row["command"],
            "host": row["host"],
            "stderr": row["stderr"],
            "memory_mb": row["memory_mb"],
        }
        for row in rows
    ]


def recovered_by(jobs: list[dict[str, Any]]) -> dict[Cause, list[dict[str, Any]]]:
    """Per cause, the first failed attempt of each job that recovered from it.

    ``jobs`` are :func:`~executor.report.retries.retry_summary`'s; each attempt comes
    with the job's ``job``, ``label`` and ``command`` added. A job that failed twice the
    same way and then succeeded counts once for that cause.
    """
    groups: dict[Cause, list[dict[str, Any]]] = {}
    for job in jobs:
        if not job["recovered"]:
            continue
        seen: set[Cause] = set()
        for attempt in job["failed_attempts"]:
            row = {**attempt, "job": job["job"], "label": job["label"], "command": job["command"]}
            cause = cause_of(row)
            if cause not in seen:
                seen.add(cause)
                groups.setdefault(cause, []).append(row)
    return groups


def failure_groups(
    run: dict[str, Any],
    failed: list[dict[str, Any]],
    retried: list[dict[str, Any]],
    *,
    tail_lines: int = 10,
    examples: int | None = None,
    reproduce: bool = True,
    rewrite: bool = True,
) -> list[dict[str, Any]]:
    """Failed jobs grouped by :func:`cause_of`, largest group first.

    Parameters
    ----------
    run
        The ``runs`` row (its directories, and its workflow copy for ``reproduce``).
    failed
        The jobs that failed for good, as :func:`final_failures` gives them.
    retried
        The ``jobs`` of :func:`~executor.report.retries.retry_summary`.
    examples
        At most this many names in each group's ``jobs`` and ``recovered_jobs``
        (all of them by default, as ``--json`` promises).
    reproduce
        Write each group's script to rerun its example by hand
        (:mod:`executor.report.repro`; this reads the workflow copy) and add
        ``reproduce_script`` (its path) and ``reproduce`` (``bash`` and that path).
    rewrite
        Write the scripts again even where they exist; ``False`` (a page that polls)
        reads the workflow copy only when one is missing.

    Returns
    -------
    list of dict
        Per group: ``failure_class``, ``exit_code``, ``signal`` and ``error`` (the
        exception type and message head, see :func:`error_of`) (the cause),
        ``cause`` (it in words), ``labels`` (in order of first appearance), ``count``
        and ``jobs`` (the jobs that failed for good), ``recovered`` and
        ``recovered_jobs`` (those that failed that way and then succeeded),
        ``example`` (a failed job, with its ``stderr_tail``; for a cause only
        recovered from, its first failed attempt, marked ``recovered``),
        ``reproduce`` and ``reproduce_script``.
    """
    groups: dict[Cause, dict[str, Any]] = {}

    def group_of(cause: Cause, example: dict[str, Any]) -> dict[str, Any]:
        if cause not in groups:
            groups[cause] = {
                "failure_class": cause[0], "exit_code": cause[1], "signal": cause[2],
                "error": cause[3], "cause": describe_cause(cause), "labels": [], "count": 0,
                "jobs": [], "recovered": 0, "recovered_jobs": [],
                "example": {**example, "stderr_tail": log_tail(
                    example["stderr"], run["run_dir"], tail_lines
                )},
            }  # fmt: skip
        return groups[cause]

    def add(group: dict[str, Any], kind: str, row: dict[str, Any]) -> None:
        group[kind] += 1
        names = group["jobs" if kind == "count" else "recovered_jobs"]
        if examples is None or len(names) < examples:
            names.append(row["job"])
        if row["label"] not in group["labels"]:
            group["labels"].append(row["label"])

    for failure in failed:
        add(group_of(cause_of(failure), failure), "count", failure)
    for cause, attempts in recovered_by(retried).items():
        group = group_of(cause, _recovered_example(attempts[0]))
        for attempt in attempts:
            add(group, "recovered", attempt)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["recovered"]))
    if reproduce and ordered:
        _add_reproduce(run, ordered, rewrite=rewrite)
    return ordered


def _add_reproduce(run: dict[str, Any], groups: list[dict[str, Any]], *, rewrite: bool) -> None:
    """Each group's ``reproduce_script`` (written) and ``reproduce``: ``bash`` and its path,
    or, when the run directory cannot be written, the whole command on one line."""
    examples = [group["example"] for group in groups]
    if not rewrite and all(repro.script_path(run, e["job"], e["attempts"]).exists()
                           for e in examples):  # fmt: skip
        specs: dict[str, dict[str, Any]] = {}  # a polling page: no need to read the workflow
    else:
        specs = _job_specs(Path(run["workflow_copy"]), {example["job"] for example in examples})
    tolerance = _memory_tolerance(Path(run["run_dir"]))
    for group, example in zip(groups, examples, strict=True):
        spec = specs.get(example["job"], {})
        script = repro.write_script(run, spec, example, memory_tolerance=tolerance, rewrite=rewrite)
        group["reproduce_script"] = str(script) if script else None
        group["reproduce"] = (
            repro.command_line(script)
            if script
            else reproduce_command(spec, run, example["job"], example["attempts"])
        )


def _memory_tolerance(run_dir: Path) -> float:
    """The site's ``memory_tolerance`` the run was driven with (its saved ``site.json``)."""
    try:
        return float(json.loads((run_dir / "site.json").read_text())["memory_tolerance"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.1


def _recovered_example(attempt: dict[str, Any]) -> dict[str, Any]:
    """A failed attempt of a job that recovered, shaped like a failed job of the report."""
    return {
        "job": attempt["job"],
        "label": attempt["label"],
        # The attempt to reproduce: this failed one, not the job's last.
        "attempts": attempt["attempt"],
        "exit_code": attempt["exit_code"],
        "signal": attempt["signal"],
        "failure_class": attempt["failure_class"],
        "error_type": attempt.get("error_type"),
        "message": attempt["message"],
        "command": attempt["command"],
        "host": attempt["host"],
        "stderr": attempt["stderr"],
        "memory_mb": attempt["memory_mb"],
        "recovered": True,
    }


def _job_specs(workflow_copy: Path, names: set[str]) -> dict[str, dict[str, Any]]:
    try:
        jobs = json.loads(workflow_copy.read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        return {}
    return {job["name"]: job for job in jobs if job.get("name") in names}


def reproduce_command(spec: dict[str, Any], run: dict[str, Any], job: str, attempt: int) -> str:
    """A shell line that reruns one attempt of a job by hand, where and as pilot ran it.

    Shown only when its script cannot be written: it is long, and it leaves out the
    submit-time environment and the attempt's limits.
    """
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
