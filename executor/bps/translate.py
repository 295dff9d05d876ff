"""A bps ``GenericWorkflow`` as a pilot :class:`~executor.model.graph.JobGraph`.

Each payload job becomes one shell job with the same name and label, its command line
as bps defines it (:mod:`executor.bps.command`), and its requests:

==========================  ==========================================================
bps (``GenericWorkflowJob``)  pilot job field
==========================  ==========================================================
``request_cpus``            ``cores`` (1 when unset)
``request_memory`` (MB)     ``memory``
``request_walltime`` (min)  ``walltime`` (seconds)
``number_of_retries``       ``retries``
``retry_unless_exit``       ``retry_unless_exit`` (one code or a list)
``memory_multiplier``       ``memory_multiplier``: after an OOM kill, memory × m^n ...
``request_memory_max``      ``memory_max``: ... capped here (and by the site's pools)
``abort_on_value``          ``abort_on_exit``: that exit code stops the whole run
``environment``             ``environment`` (``<ENV:X>`` read at submit)
==========================  ==========================================================

Edges come from the graph; a no-op node (bps's special job ordering) passes its
parents on to its children. The init job is a root of the graph, so it runs first. The
final job (``GenericWorkflow.get_final()``) comes last, after every other job, with
``always_run``: like DAGMan's ``FINAL`` node it runs once every other job has ended,
even when some failed (see :mod:`executor.policy.schedule`).

Pure: reads the bps objects by attribute and imports no lsst module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.bps.command import command_line, environment
from executor.errors import GraphError
from executor.model.graph import JobGraph
from executor.model.workflow import Workflow

# pilot job names become directory names; bps names are usually valid already.
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:@+=,-]")
_PAYLOAD, _NOOP, _GROUP = "PAYLOAD", "NOOP", "GROUP"


@dataclass(frozen=True)
class Translation:
    """The pilot graph of a bps workflow, and what the plugin needs to know about it."""

    graph: JobGraph
    # pilot job name -> bps job name, for the few names pilot had to change.
    renamed: Mapping[str, str] = field(default_factory=dict)
    init_job: str | None = None  # pilot names
    final_job: str | None = None


def pilot_name(bps_name: str) -> str:
    """A valid pilot job name for a bps job name (most are valid as they are)."""
    name = _INVALID_NAME_CHARS.sub("_", bps_name)[:200]
    return name if not name.startswith(".") else "_" + name[1:]


def minutes_to_seconds(value: Any) -> float | None:
    """bps's ``request_walltime`` (minutes, as text or a number) in seconds."""
    if value in (None, ""):
        return None
    try:
        minutes = float(value)
    except (TypeError, ValueError) as exc:
        raise GraphError(f"request_walltime: {value!r} is not a number of minutes") from exc
    return minutes * 60 if minutes > 0 else None


def job_fields(generic_workflow: Any, gwjob: Any, submit_env: Mapping[str, str] | None) -> dict:
    """The pilot fields of one bps payload job (all but its name and edges)."""
    fields: dict[str, Any] = {
        "label": gwjob.label or gwjob.name,
        "cores": int(gwjob.request_cpus or 1),
        "retries": max(int(gwjob.number_of_retries or 0), 0),
    }
    if gwjob.request_memory:
        fields["memory"] = int(gwjob.request_memory)
    walltime = minutes_to_seconds(gwjob.request_walltime)
    if walltime is not None:
        fields["walltime"] = walltime
    unless = gwjob.retry_unless_exit
    if unless is not None and unless != []:
        codes = [unless] if isinstance(unless, int) else list(unless)
        fields["retry_unless_exit"] = [int(code) for code in codes]
    # bps leaves the multiplier unset when it is 1 or less (no escalation).
    if gwjob.memory_multiplier and float(gwjob.memory_multiplier) > 1:
        fields["memory_multiplier"] = float(gwjob.memory_multiplier)
        if gwjob.request_memory_max:
            # bps caps the escalation; below the first request it caps nothing.
            fields["memory_max"] = max(int(gwjob.request_memory_max), fields.get("memory", 0))
    if gwjob.abort_on_value is not None:
        fields["abort_on_exit"] = int(gwjob.abort_on_value)
    env = environment(gwjob, submit_env)
    if env:
        fields["environment"] = env
    return fields


def translate(
    generic_workflow: Any,
    *,
    workdir: str | Path | None = None,
    submit_env: Mapping[str, str] | None = None,
    final_fits: tuple[int, int | None] | None = None,
) -> Translation:
    """Translate ``generic_workflow`` into a validated pilot graph.

    Parameters
    ----------
    generic_workflow
        An ``lsst.ctrl.bps.GenericWorkflow``.
    workdir
        Where the jobs run (bps's submit directory).
    submit_env
        The environment ``<ENV:X>`` in job environments is read from (default: this
        process's, which pilot saves with the run and gives every job).
    final_fits
        The cores and memory (MB) of the site's largest pool: the final job asks for
        no more. bps's defaults give it 16 cores and 32 GiB (for large transfers), which
        a laptop or a small pool does not have, and it must run wherever the rest ran.

    Raises
    ------
    GraphError
        A job bps gave that pilot cannot run (a placeholder without a value, a job
        group), naming the job.
    """
    wf = Workflow(str(generic_workflow.name), workdir=workdir)
    names = _pilot_names(generic_workflow)
    renamed = {ours: theirs for theirs, ours in names.items() if ours != theirs}
    parents = _payload_parents(generic_workflow)
    init_job = None
    for bps_name in generic_workflow:  # topological order: the init job first
        gwjob = generic_workflow.get_job(bps_name)
        if _node_type(gwjob) != _PAYLOAD:
            continue
        after = [names[p] for p in parents[bps_name]]
        fields = job_fields(generic_workflow, gwjob, submit_env)
        wf.shell(names[bps_name], command_line(generic_workflow, gwjob), after=after, **fields)
        if init_job is None and not after and _is_init(gwjob):
            init_job = names[bps_name]
    final_job = _add_final(wf, generic_workflow, names, parents, submit_env, final_fits)
    return Translation(wf.build(), renamed=renamed, init_job=init_job, final_job=final_job)


def _node_type(node: Any) -> str:
    kind = getattr(node, "node_type", None)
    name = getattr(kind, "name", None)
    if name == _GROUP:
        raise GraphError(
            f"bps job group {node.name!r}: pilot does not run bps job groups "
            "(from `ordering:` with `implementation: group`) yet; use noop ordering"
        )
    return name or _PAYLOAD


def _is_init(gwjob: Any) -> bool:
    return "init" in str(gwjob.label).lower() or "init" in str(gwjob.name).lower()


def _pilot_names(generic_workflow: Any) -> dict[str, str]:
    """bps job name -> pilot job name, unique."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    final = generic_workflow.get_final()
    every = [*generic_workflow, *([final.name] if _is_single_job(final) else [])]
    for bps_name in every:
        ours = base = pilot_name(bps_name)
        suffix = 1
        while ours in taken:
            suffix += 1
            ours = f"{base[:190]}-{suffix}"
        taken.add(ours)
        names[bps_name] = ours
    return names


def _payload_parents(generic_workflow: Any) -> dict[str, list[str]]:
    """Each job's payload parents, looking through no-op nodes."""
    found: dict[str, list[str]] = {}
    for name in generic_workflow:  # parents before children: their entries exist
        direct = list(generic_workflow.predecessors(name))
        through: list[str] = []
        for parent in direct:
            if _node_type(generic_workflow.get_job(parent)) == _NOOP:
                through.extend(found[parent])
            else:
                through.append(parent)
        found[name] = list(dict.fromkeys(through))
    return found


def _is_single_job(final: Any) -> bool:
    return final is not None and hasattr(final, "executable") and hasattr(final, "arguments")


def _add_final(
    wf: Workflow,
    generic_workflow: Any,
    names: Mapping[str, str],
    parents: Mapping[str, list[str]],
    env: Mapping[str, str] | None,
    fits: tuple[int, int | None] | None,
) -> str | None:
    final = generic_workflow.get_final()
    if final is None:
        return None
    if not _is_single_job(final):
        raise GraphError(
            f"bps workflow {generic_workflow.name!r}: its final step is a workflow of several "
            "jobs; pilot runs a single final job"
        )
    # After every job (its leaves), so that it sees what every job left behind.
    payload = [n for n in generic_workflow if _node_type(generic_workflow.get_job(n)) == _PAYLOAD]
    with_children = {parent for n in payload for parent in parents[n]}
    after = [names[n] for n in payload if n not in with_children]
    fields = job_fields(generic_workflow, final, env)
    overrides = {}
    if fits is not None:
        cores, memory = fits
        if fields["cores"] > cores:
            fields["cores"] = cores
            # Its command runs `-j {requestCpus}` processes: as many as it now has cores.
            if "requestCpus" in (final.cmdvals or {}):
                overrides["requestCpus"] = cores
        if memory is not None and fields.get("memory", 0) > memory:
            fields["memory"] = memory
            fields.pop("memory_max", None)
    name = names[final.name]
    wf.shell(
        name, command_line(generic_workflow, final, overrides), after=after, always_run=True,
        **fields,
    )  # fmt: skip
    return name
