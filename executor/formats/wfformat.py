"""Real workflow traces in WfFormat (WfCommons JSON), replayed as ``sleep`` jobs.

A WfFormat instance records a production run: the task graph and each task's measured
runtime. Importing one gives a :class:`JobGraph` with the same shape whose jobs sleep
for the recorded runtime divided by ``time_scale``, so the scheduler, the pilots and the
reports can be exercised on realistic graphs without the scientific codes.

Layouts read (https://github.com/wfcommons/WfFormat)::

    1.5    workflow.specification.tasks[]  {name, id, parents, children, ...}
           workflow.execution.tasks[]      {id, runtimeInSeconds, command: {program}, ...}
    older  workflow.tasks[]                {name, id?, category?, parents, runtime[InSeconds]}
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from executor.errors import GraphError
from executor.model.graph import Job, JobGraph

__all__ = ["check_time_scale", "graph_from_wfformat", "is_wfformat"]

# WfFormat ids may contain '#', which job names (directory names) may not.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+=,-]")
# Pegasus and Makeflow traces name tasks '<category>_ID0000012'; others '<category>_00000001'.
_TRAILING_ID = re.compile(r"[-_.]?(?:ID)?\d+$")
# Pegasus and Makeflow record the executable as 'program'; Nextflow puts the whole script
# there, which is no use as a label.
_PROGRAM = re.compile(r"^[A-Za-z0-9_.+-]{1,100}$")


def is_wfformat(data: Any) -> bool:
    """Whether parsed JSON is a WfFormat instance rather than a native pilot workflow.

    A native workflow never has ``workflow`` or ``schemaVersion`` keys, so either one
    (without native ``jobs``) is enough; what is missing beyond that is reported by
    :func:`graph_from_wfformat` rather than as "unknown key" by the native loader. A JSON
    Schema document (``$schema``; WfFormat's own schema sits next to the instances) is
    claimed too, so that it is reported as a schema rather than as a broken workflow.
    """
    if not isinstance(data, Mapping) or "jobs" in data:
        return False
    return "schemaVersion" in data or "$schema" in data or isinstance(data.get("workflow"), Mapping)


def graph_from_wfformat(
    data: Any, *, source: str, base_dir: Path | None = None, time_scale: float = 1.0
) -> JobGraph:
    """Build and validate a graph that replays a WfFormat instance.

    Parameters
    ----------
    data
        The parsed JSON file.
    source
        The file it came from; every message names it.
    base_dir
        Directory the jobs run in (the file's directory), as for native workflows.
    time_scale
        Each job sleeps for its task's recorded runtime divided by this (> 0);
        1000 replays a day-long trace in under two minutes of sleeping.

    Returns
    -------
    JobGraph
        One job per task, named by task id (or by name when ids are missing or not
        unique), labelled by category, running ``sleep <runtime / time_scale>``, after
        the jobs of its parents. A task without a recorded runtime sleeps 0 s.

    Raises
    ------
    GraphError
        When the file lacks a task list, a task lacks an identifier, a runtime is not a
        non-negative number, or the graph has dangling parents or a cycle; every problem
        is listed, naming the file and the task.
    """
    check_time_scale(time_scale, source)
    tasks, runtimes, programs = _layout(data, source)
    problems: list[str] = []
    key_field = _key_field(tasks, source)
    keys = [str(task[key_field]) for task in tasks]
    names = _job_names(keys, source)
    resolve = _reference_resolver(tasks, key_field, names)
    # Old layouts list only 'children' in some generators; use them when no task has parents.
    use_children = not any("parents" in task for task in tasks)
    parents: dict[str, list[str]] = {name: [] for name in names}
    for task, name in zip(tasks, names, strict=True):
        field = "children" if use_children else "parents"
        refs = task.get(field) or []
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            problems.append(f"{_at(source, task)}: {field}: must be a list of task ids")
            continue
        for ref in refs:
            if not use_children:
                parents[name].append(resolve(ref))
            elif resolve(ref) in parents:
                parents[resolve(ref)].append(name)
            else:
                problems.append(f"{_at(source, task)}: children: no task {ref!r}")

    labels = _labels(tasks, programs)
    command_of: dict[str, tuple[str, ...]] = {}
    for task, key, name in zip(tasks, keys, names, strict=True):
        runtime = runtimes.get(key, task.get("runtimeInSeconds", task.get("runtime")))
        if runtime is None:
            runtime = 0.0
        if isinstance(runtime, bool) or not isinstance(runtime, (int, float)):
            problems.append(f"{_at(source, task)}: runtimeInSeconds: {runtime!r} is not a number")
            continue
        if not math.isfinite(runtime) or runtime < 0:
            problems.append(
                f"{_at(source, task)}: runtimeInSeconds: {runtime!r} must be a number of "
                "seconds >= 0"
            )
            continue
        command_of[name] = ("sleep", _seconds(runtime / time_scale))
    if problems:
        raise GraphError(f"{len(problems)} problem(s) in {source}", problems)

    jobs = [
        Job(name=name, label=label, command=command_of[name], after=tuple(parents[name]))
        for name, label in zip(names, labels, strict=True)
    ]
    where = {name: f"{source} (task {key!r})" for key, name in zip(keys, names, strict=True)}
    title = data.get("name")
    title = title if isinstance(title, str) and title else Path(source).stem
    workdir = base_dir.resolve() if base_dir is not None else None
    # JobGraph reports dangling parents and cycles the way the native loader does.
    return JobGraph(title, jobs, workdir=workdir, source=source, where=where)


def check_time_scale(time_scale: float, source: str) -> None:
    """Raise :class:`GraphError` unless ``time_scale`` is a finite number > 0."""
    if (
        isinstance(time_scale, bool)
        or not isinstance(time_scale, (int, float))
        or not math.isfinite(time_scale)
        or time_scale <= 0
    ):
        raise GraphError(
            f"{source}: time scale {time_scale!r} must be a number > 0 "
            "(e.g. --time-scale 1000 replays 1000 s of recorded runtime in 1 s)"
        )


def _layout(
    data: Any, source: str
) -> tuple[list[Mapping[str, Any]], dict[str, Any], dict[str, str]]:
    """The graph's tasks, and the runtimes and program names keyed by task id."""
    workflow = data.get("workflow") if isinstance(data, Mapping) else None
    if not isinstance(workflow, Mapping) and isinstance(data, Mapping) and "$schema" in data:
        raise GraphError(
            f"{source}: this is a JSON Schema ({data.get('title') or 'untitled'}), not a "
            "workflow instance: it has no workflow.specification.tasks; give a WfFormat "
            "instance (a trace) or a pilot workflow"
        )
    if not isinstance(workflow, Mapping):
        raise GraphError(
            f"{source}: not a WfFormat instance: no 'workflow' object "
            "(expected workflow.specification.tasks, see https://github.com/wfcommons/WfFormat)"
        )
    spec = workflow.get("specification")
    if isinstance(spec, Mapping):
        tasks, where = spec.get("tasks"), "workflow.specification.tasks"
    else:
        tasks, where = workflow.get("tasks"), "workflow.tasks"
    if tasks is None and spec is None:
        raise GraphError(
            f"{source}: WfFormat file has neither workflow.specification.tasks (schema 1.5) "
            "nor workflow.tasks (older schemas); nothing to import"
        )
    if not isinstance(tasks, list) or not tasks:
        raise GraphError(f"{source}: {where}: must be a non-empty list of tasks")
    bad = [i + 1 for i, task in enumerate(tasks) if not isinstance(task, Mapping)]
    if bad:
        raise GraphError(f"{source}: {where}: task #{bad[0]} is not an object with an 'id'")

    runtimes: dict[str, Any] = {}
    programs: dict[str, str] = {}
    execution = workflow.get("execution")
    records = execution.get("tasks") if isinstance(execution, Mapping) else None
    for record in records if isinstance(records, list) else []:
        if not isinstance(record, Mapping):
            continue
        ident = record.get("id", record.get("name"))
        if not isinstance(ident, str):
            continue
        if "runtimeInSeconds" in record or "runtime" in record:
            runtimes[ident] = record.get("runtimeInSeconds", record.get("runtime"))
        command = record.get("command")
        program = command.get("program") if isinstance(command, Mapping) else None
        if isinstance(program, str):
            programs[ident] = program
    # Execution records are keyed by id; tasks identified by name look theirs up by name.
    for task in tasks:
        ident, name = task.get("id"), task.get("name")
        if isinstance(name, str) and isinstance(ident, str) and name not in runtimes:
            if ident in runtimes:
                runtimes[name] = runtimes[ident]
            if ident in programs:
                programs[name] = programs[ident]
    return tasks, runtimes, programs


def _key_field(tasks: Sequence[Mapping[str, Any]], source: str) -> str:
    """``id`` when every task has a unique one, else ``name`` when those are unique."""
    reasons = []
    for field in ("id", "name"):
        values = [task.get(field) for task in tasks]
        missing = [i + 1 for i, v in enumerate(values) if not isinstance(v, str) or not v]
        if missing:
            reasons.append(f"task #{missing[0]} has no {field!r}")
            continue
        repeated = [v for v, n in Counter(values).items() if n > 1]
        if not repeated:
            return field
        shown = ", ".join(repr(v) for v in repeated[:3])
        reasons.append(f"{len(repeated)} {field}(s) are repeated ({shown})")
    raise GraphError(
        f"{source}: cannot tell tasks apart: {'; '.join(reasons)}; give every task a unique 'id'"
    )


def _job_names(keys: Sequence[str], source: str) -> list[str]:
    names = []
    for key in keys:
        name = _NAME_UNSAFE.sub("_", key)
        names.append("_" + name[1:] if name.startswith(".") else name)
    clashes = [n for n, count in Counter(names).items() if count > 1]
    if clashes:
        raise GraphError(
            f"{source}: task ids {clashes[0]!r} and others differ only in characters a job "
            "name cannot hold (such as '#'); rename them"
        )
    return names


def _reference_resolver(tasks: Sequence[Mapping[str, Any]], key_field: str, names: list[str]):
    """Map a parent/child reference (an id, or a name in older files) to a job name."""
    other = "name" if key_field == "id" else "id"
    by_key = {str(task[key_field]): name for task, name in zip(tasks, names, strict=True)}
    others = Counter(task.get(other) for task in tasks)
    by_other = {
        task[other]: name
        for task, name in zip(tasks, names, strict=True)
        if isinstance(task.get(other), str) and others[task[other]] == 1
    }

    def resolve(ref: str) -> str:
        # An unknown reference is kept as is, so JobGraph reports it as a dangling parent.
        return by_key.get(ref) or by_other.get(ref) or ref

    return resolve


def _labels(tasks: Sequence[Mapping[str, Any]], programs: Mapping[str, str]) -> list[str]:
    """Each task's category; without one, its name less the trailing id.

    Some traces (Pegasus epigenomics) put the sample into every name, so stripping the id
    leaves one label per task; the recorded program names such tasks' kind instead.
    """
    stripped = []
    for task in tasks:
        name = str(task.get("name") or task.get("id"))
        stripped.append(_TRAILING_ID.sub("", name) or name)
    counts = Counter(stripped)
    labels = []
    for task, plain in zip(tasks, stripped, strict=True):
        category = task.get("category")
        program = programs.get(str(task.get("id"))) or programs.get(str(task.get("name")))
        if isinstance(category, str) and category:
            labels.append(category)
        elif counts[plain] == 1 and len(tasks) > 1 and program and _PROGRAM.match(program):
            labels.append(program)
        else:
            labels.append(plain)
    return labels


def _seconds(value: float) -> str:
    """Seconds for ``sleep``: six significant digits, never exponent notation.

    Not every ``sleep`` reads ``4e-06``, and montage's 4 ms tasks at a scale of 1000 give it.
    """
    text = f"{value:.6g}"
    if "e" in text:
        text = f"{value:.0f}" if value >= 1 else f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _at(source: str, task: Mapping[str, Any]) -> str:
    ident = task.get("id") or task.get("name")
    return f"{source}: task {ident!r}"
