"""pilot's own workflow format (YAML or JSON), read into a :class:`JobGraph` and written back.

Indicative file::

    name: demo
    defaults: {cores: 1, memory: 2GB, walltime: 10m, retries: 2}
    code: [./mypkg]        # shipped to the workers: `import mypkg` works there
    jobs:
      - {name: isr-1, label: isr, command: "python -m mypkg.isr --visit 1", memory: 4GB}
      - {name: sum, label: summary, function: "mypkg.stats:summarize", args: [1], after: [isr-1]}
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from executor.errors import GraphError
from executor.model.graph import (
    Clustering,
    Job,
    JobGraph,
    _graph_problems,
    check_job,
    default_label,
    max_running_problems,
)
from executor.model.units import parse_duration, parse_memory

WORKFLOW_KEYS = (
    "name", "description", "defaults", "workdir", "jobs", "cluster_by", "cluster_max",
    "max_running", "code", "code_limit",
)  # fmt: skip
JOB_KEYS = (
    "name", "label", "command", "function", "args", "kwargs", "after",
    "cores", "memory", "walltime", "retries", "environment",
    "retry_unless_exit", "memory_multiplier", "memory_max", "abort_on_exit", "cluster",
    "retry_permanent_failures", "always_run",
)  # fmt: skip
DEFAULT_KEYS = (
    "label", "cores", "memory", "walltime", "retries", "environment",
    "retry_unless_exit", "memory_multiplier", "memory_max", "abort_on_exit",
    "retry_permanent_failures",
)  # fmt: skip


def _unknown_key(key: object, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key {key!r}; {hint}"


def _not_a_default(key: object) -> str:
    if key == "always_run":
        # Every job running after failures would make failures block nothing: say so.
        return (
            "always_run: cannot be a default; set `always_run: true` on the jobs that must "
            "run even when jobs before them failed (a final clean-up or transfer)"
        )
    return _unknown_key(key, DEFAULT_KEYS)


def graph_from_dict(
    data: Any, *, source: str = "<workflow>", base_dir: Path | None = None
) -> JobGraph:
    """Build and validate a graph from the parsed file contents.

    Every problem is collected and raised together in one :class:`GraphError`.
    ``base_dir`` resolves a relative ``workdir`` (the workflow file's directory).
    """
    if not isinstance(data, Mapping):
        raise GraphError(
            f"{source}: a workflow must be a mapping with 'name' and 'jobs', "
            f"not {type(data).__name__}"
        )
    problems = [
        f"{source}: {_unknown_key(k, WORKFLOW_KEYS)}" for k in data if k not in WORKFLOW_KEYS
    ]
    name = data.get("name") or (Path(source).stem if source else "workflow")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        problems.append(f"{source}: defaults: must be a mapping such as {{cores: 1, memory: 2GB}}")
        defaults = {}
    defaults, defaults_problems = _checked_defaults(defaults, source)
    problems += defaults_problems
    raw_jobs = data.get("jobs")
    if not isinstance(raw_jobs, list) or not raw_jobs:
        problems.append(f"{source}: jobs: must be a non-empty list of jobs")
        raw_jobs = []
    workdir = _workdir(data.get("workdir"), base_dir)
    clustering, clustering_problems = _clustering(data, source)
    problems += clustering_problems
    code, code_limit, code_problems = _code(data, source, base_dir)
    problems += code_problems

    jobs: list[Job] = []
    where: dict[str, str] = {}
    for index, raw in enumerate(raw_jobs):
        line = getattr(raw, "line", 0)
        place = f"{source}:{line}" if line else f"{source} (job #{index + 1})"
        if not isinstance(raw, Mapping):
            problems.append(f"{place}: each job must be a mapping with a 'name'")
            continue
        job_name = raw.get("name")
        if not isinstance(job_name, str) or not job_name:
            problems.append(f"{place}: job #{index + 1}: name: every job needs a 'name' (a string)")
            continue
        where[job_name] = place
        job, job_problems = _job_from_mapping(raw, defaults)
        problems += [f"{place}: job {job_name!r}: {p}" for p in job_problems]
        jobs.append(job)
    max_running, limit_problems = _max_running(data, source, {job.label for job in jobs})
    problems += limit_problems
    if problems:
        # Report the graph's own problems (names, edges) with these, not on the next try.
        problems += _graph_problems(jobs, source, where)
        raise GraphError(f"{len(problems)} problem(s) in {source}", problems)
    return JobGraph(
        str(name), jobs, workdir=workdir, source=source, where=where, clustering=clustering,
        code=code, code_limit=code_limit, max_running=max_running,
    )  # fmt: skip


def _checked_defaults(defaults: Mapping[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """Check ``defaults:`` once: the valid defaults (merged into each job) and the problems.

    A bad default is reported once, at the defaults' line, and left out of the merge, so
    1,000 jobs that inherit it do not repeat it; a job that sets the key itself is still
    checked on its own line.
    """
    line = getattr(defaults, "line", 0)
    place = f"{source}:{line}: defaults" if line else f"{source}: defaults"
    problems = [f"{place}: {_not_a_default(k)}" for k in defaults if k not in DEFAULT_KEYS]
    known = {k: v for k, v in defaults.items() if k in DEFAULT_KEYS}
    # A stand-in job that takes every default and sets nothing else of its own.
    probe, found = _job_from_mapping({"name": "defaults", "command": "true"}, known)
    found += check_job(probe)
    bad = {problem.partition(":")[0] for problem in found}
    problems += [f"{place}: {problem}" for problem in found]
    return {k: v for k, v in known.items() if k not in bad}, problems


def _code(
    data: Mapping[str, Any], source: str, base_dir: Path | None
) -> tuple[list[Path], int | None, list[str]]:
    """``code:`` paths (relative to the workflow file) and ``code_limit``, checked."""
    raw, problems, paths = data.get("code"), [], []
    if raw is not None and (
        not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw)
    ):
        problems.append(f"{source}: code: must be a list of paths, e.g. code: [./mypkg]")
        raw = []
    for text in raw or ():
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.exists():
            problems.append(
                f"{source}: code: {text!r} does not exist (looked for {path}); paths are "
                "relative to the workflow file"
            )
        paths.append(path.absolute())
    names = [p.name for p in paths]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(
            f"{source}: code: two paths would both appear as {name!r} on the workers; "
            "rename one, or ship their common parent directory"
        )
    limit = None
    if "code_limit" in data:
        try:
            limit = parse_memory(data["code_limit"]) * 1_000_000
        except ValueError as exc:
            problems.append(f"{source}: code_limit: {exc}")
    return paths, limit, problems


def _clustering(data: Mapping[str, Any], source: str) -> tuple[Clustering | None, list[str]]:
    by, size = data.get("cluster_by"), data.get("cluster_max", 10)
    if by is None:
        if "cluster_max" in data:
            return None, [f"{source}: cluster_max: needs cluster_by (label or cluster)"]
        return None, []
    problems = []
    if by not in ("label", "cluster"):
        problems.append(
            f"{source}: cluster_by: {by!r} must be 'label' (jobs of one label together) or "
            "'cluster' (jobs with the same `cluster:` value together)"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"{source}: cluster_max: {size!r} must be a whole number >= 1")
    if problems:
        return None, problems
    return Clustering(by=by, max_size=size), []


def _max_running(
    data: Mapping[str, Any], source: str, labels: set[str]
) -> tuple[dict[str, int], list[str]]:
    """``max_running:`` (at most N jobs of a label handed to pilots at once), checked."""
    raw = data.get("max_running")
    if raw is None:
        return {}, []
    line = getattr(raw, "line", 0)
    place = f"{source}:{line}" if line else source
    if not isinstance(raw, Mapping):
        return {}, [
            f"{place}: max_running: must be a mapping of label to a number of jobs, "
            f"e.g. max_running: {{ingest: 2}}; not {type(raw).__name__} {raw!r}"
        ]
    limits = {str(label): limit for label, limit in raw.items()}
    problems = [f"{place}: {p}" for p in max_running_problems(limits, labels)]
    return ({} if problems else limits), problems


def _workdir(value: object, base_dir: Path | None) -> Path | None:
    if value is None:
        return base_dir.resolve() if base_dir else None
    path = Path(str(value)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path.resolve()


def _job_from_mapping(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[Job, list[str]]:
    problems = [_unknown_key(k, JOB_KEYS) for k in raw if k not in JOB_KEYS]
    merged = {**defaults, **raw}
    environment: dict[str, Any] = {}
    for env in (defaults.get("environment"), raw.get("environment")):
        if isinstance(env, Mapping):
            environment.update(env)
        elif env is not None:
            problems.append("environment: must be a mapping such as {OMP_NUM_THREADS: '4'}")
    values: dict[str, Any] = {}

    def convert(key: str, parse) -> None:
        if merged.get(key) is None:
            return
        try:
            values[key] = parse(merged[key])
        except ValueError as exc:
            problems.append(f"{key}: {exc}")

    convert("memory", parse_memory)
    convert("walltime", parse_duration)
    convert("memory_max", parse_memory)

    def as_list(key: str, single: type, expected: str) -> list[Any]:
        """The value of ``key`` as a list; one ``single`` value stands for a list of one."""
        value = merged.get(key) or []
        if isinstance(value, single):
            return [value]
        if isinstance(value, list):
            return value
        problems.append(f"{key}: must be {expected}")
        return []

    unless = as_list("retry_unless_exit", int, "a list of exit codes, e.g. [2, 3]")
    command = merged.get("command")
    if isinstance(command, list):
        command = tuple(command)
    after = as_list("after", str, "a list of job names")
    args = merged.get("args") or []
    kwargs = merged.get("kwargs") or {}
    if not isinstance(args, list):
        problems.append("args: must be a list")
        args = []
    if not isinstance(kwargs, Mapping):
        problems.append("kwargs: must be a mapping")
        kwargs = {}
    name = str(raw["name"])
    label = merged.get("label") or default_label(name)
    job = Job(
        name=name,
        label=str(label),
        command=command,
        function=merged.get("function"),
        args=tuple(args),
        kwargs=dict(kwargs),
        after=tuple(str(a) for a in after),
        cores=merged.get("cores", 1),
        memory=values.get("memory"),
        walltime=values.get("walltime"),
        retries=merged.get("retries", 0),
        environment=environment,
        retry_unless_exit=tuple(unless),
        memory_multiplier=merged.get("memory_multiplier", 1.0),
        memory_max=values.get("memory_max"),
        abort_on_exit=merged.get("abort_on_exit"),
        retry_permanent_failures=merged.get("retry_permanent_failures", False),
        cluster=None if merged.get("cluster") is None else str(merged["cluster"]),
        always_run=raw.get("always_run", False),
    )
    return job, problems


def graph_to_dict(graph: JobGraph) -> dict[str, Any]:
    """The graph in the native format, every field explicit; read back by :func:`graph_from_dict`.

    The run directory keeps this copy so a restart runs exactly what was submitted.
    """
    jobs = []
    for job in graph:
        entry: dict[str, Any] = {"name": job.name, "label": job.label}
        if job.function:
            entry["function"] = job.function
            if job.args:
                entry["args"] = list(job.args)
            if job.kwargs:
                entry["kwargs"] = dict(job.kwargs)
        else:
            entry["command"] = list(job.command) if isinstance(job.command, tuple) else job.command
        if job.after:
            entry["after"] = list(job.after)
        entry["cores"] = job.cores
        if job.memory is not None:
            entry["memory"] = job.memory
        if job.walltime is not None:
            entry["walltime"] = job.walltime
        entry["retries"] = job.retries
        if job.environment:
            entry["environment"] = dict(job.environment)
        if job.retry_unless_exit:
            entry["retry_unless_exit"] = list(job.retry_unless_exit)
        if job.memory_multiplier != 1.0:
            entry["memory_multiplier"] = job.memory_multiplier
        if job.memory_max is not None:
            entry["memory_max"] = job.memory_max
        if job.abort_on_exit is not None:
            entry["abort_on_exit"] = job.abort_on_exit
        if job.cluster is not None:
            entry["cluster"] = job.cluster
        if job.retry_permanent_failures:
            entry["retry_permanent_failures"] = True
        if job.always_run:
            entry["always_run"] = True
        jobs.append(entry)
    data: dict[str, Any] = {"name": graph.name, "jobs": jobs}
    if graph.workdir is not None:
        data["workdir"] = str(graph.workdir)
    if graph.clustering is not None:
        data["cluster_by"] = graph.clustering.by
        data["cluster_max"] = graph.clustering.max_size
    if graph.max_running:
        data["max_running"] = dict(graph.max_running)
    if graph.code:
        data["code"] = [str(path) for path in graph.code]
    if graph.code_limit is not None:
        data["code_limit"] = f"{graph.code_limit // 1_000_000}MB"
    return data


def graph_from_saved(
    data: Mapping[str, Any], *, source: str, keep: set[str] | None = None
) -> JobGraph:
    """Rebuild a graph from the copy :func:`graph_to_dict` saved in a run directory.

    That copy was validated when the run was submitted and holds every field in its
    final form (megabytes, seconds), so jobs are built directly, without the checks
    and conversions of :func:`graph_from_dict`. With ``keep``, only those jobs are
    built, and edges from the others (which succeeded) are dropped: a restart of a
    run that is mostly done rebuilds only what is left.
    """
    jobs = []
    for entry in data["jobs"]:
        if keep is not None and entry["name"] not in keep:
            continue
        fields = dict(entry)
        command = fields.get("command")
        if isinstance(command, list):
            fields["command"] = tuple(command)
        for key in ("args", "after", "retry_unless_exit"):
            if key in fields:
                fields[key] = tuple(fields[key])
        if keep is not None and fields.get("after"):
            fields["after"] = tuple(p for p in fields["after"] if p in keep)
        jobs.append(Job(**fields))
    workdir = Path(data["workdir"]) if data.get("workdir") else None
    clustering = (
        Clustering(by=data["cluster_by"], max_size=data.get("cluster_max", 10))
        if data.get("cluster_by")
        else None
    )
    return JobGraph(
        str(data["name"]), jobs, workdir=workdir, source=source, trusted=True,
        clustering=clustering, code=[Path(p) for p in data.get("code", ())],
        max_running=data.get("max_running"),
    )  # fmt: skip


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GraphError(f"{path}: cannot read the workflow file: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise GraphError(
            f"{path}: JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
