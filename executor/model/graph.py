"""Jobs and the immutable graph they form: validation, order, and shape.

A :class:`JobGraph` is built once, validated as a whole (every problem is reported,
not just the first), and never changes afterwards; the driver keeps run-time state
elsewhere (:mod:`executor.policy.schedule`).
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from executor.errors import GraphError

# Job names become directory names under the run's log directory, so they may not
# contain path separators, whitespace or start with a dot.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+=,-]{0,199}$")
_FUNCTION_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_TRAILING_INDEX = re.compile(r"[-_.]?\d+$")


def default_label(name: str) -> str:
    """The label a job gets when it has none: its name without a trailing index."""
    return _TRAILING_INDEX.sub("", name) or name


# The shared, read-only default of a job's kwargs and environment: one object for all
# jobs rather than two empty dicts per job (25 MB for a 200,000-job graph).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class Clustering:
    """Static clustering, as chosen in the workflow (``cluster_by``, ``cluster_max``).

    Ready jobs with the same key (their label, or their ``cluster`` value) run
    together in bundles of up to ``max_size``, whatever their measured runtimes.
    """

    by: str  # "label" or "cluster"
    max_size: int = 10

    def key(self, job: Job) -> str | None:
        return job.label if self.by == "label" else job.cluster


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Job:
    """One node of the graph: a shell command or a Python function, and what it needs.

    ``memory`` is in megabytes and ``walltime`` in seconds; ``None`` means "not set".
    A job with ``always_run`` is not blocked when an ancestor fails: it runs once every
    parent has ended (:mod:`executor.policy.schedule` says exactly when).
    """

    name: str
    label: str
    command: str | tuple[str, ...] | None = None
    function: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    after: tuple[str, ...] = ()
    cores: int = 1
    memory: int | None = None
    walltime: float | None = None
    retries: int = 0
    environment: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    # Retry policy, with the semantics of HTCondor-based batch production.
    retry_unless_exit: tuple[int, ...] = ()  # never retry these exit codes
    memory_multiplier: float = 1.0  # after an OOM kill: memory × multiplier^n ...
    memory_max: int | None = None  # ... capped here (megabytes)
    abort_on_exit: int | None = None  # this exit code stops the whole run at once
    # Retry even what cannot succeed on a retry (a missing program or module, exit 127).
    retry_permanent_failures: bool = False
    cluster: str | None = None  # a user key for static clustering (`cluster_by: cluster`)
    # Runs once all its parents have ended, however they ended (a final clean-up or
    # transfer, bps's final job), instead of being blocked by a failure above it.
    always_run: bool = False

    @property
    def kind(self) -> Literal["function", "shell"]:
        return "function" if self.function else "shell"

    def describe(self) -> str:
        """The command a person would type to run this job by hand."""
        if self.function:
            return f"{self.function}(*{list(self.args)!r}, **{dict(self.kwargs)!r})"
        if isinstance(self.command, tuple):
            import shlex

            return shlex.join(self.command)
        return str(self.command)


def check_job(job: Job) -> list[str]:
    """Problems with one job taken alone (not its edges), as ``field: message`` strings."""
    problems = []
    if not _NAME_RE.match(job.name):
        problems.append(
            f"name: {job.name!r} is not a valid job name; use letters, digits and _.:@+=,- "
            "(no '/', spaces or leading '.'; at most 200 characters)"
        )
    if (job.command is None) == (job.function is None):
        which = "both" if job.command is not None else "neither"
        problems.append(
            f"command/function: job has {which} of 'command' and 'function'; give exactly one"
        )
    if job.command is not None:
        if isinstance(job.command, tuple):
            if not job.command or not all(isinstance(a, str) for a in job.command):
                problems.append("command: a command list must be a non-empty list of strings")
        elif not isinstance(job.command, str) or not job.command.strip():
            problems.append("command: must be a non-empty string (run by bash) or list (argv)")
    if job.function is not None and not _FUNCTION_RE.match(str(job.function)):
        problems.append(f"function: {job.function!r} must look like 'package.module:callable'")
    if (job.args or job.kwargs) and job.function is None:
        problems.append("args/kwargs: only a 'function' job takes args and kwargs")
    if not isinstance(job.cores, int) or isinstance(job.cores, bool) or job.cores < 1:
        problems.append(f"cores: {job.cores!r} must be a whole number of at least 1")
    if not isinstance(job.retries, int) or isinstance(job.retries, bool) or job.retries < 0:
        problems.append(f"retries: {job.retries!r} must be a whole number of 0 or more")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in job.retry_unless_exit):
        problems.append("retry_unless_exit: must be a list of exit codes (whole numbers)")
    multiplier = job.memory_multiplier
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier < 1:
        problems.append(f"memory_multiplier: {multiplier!r} must be a number >= 1 (e.g. 2)")
    if job.memory_max is not None and job.memory is not None and job.memory_max < job.memory:
        problems.append("memory_max: must not be less than memory")
    if job.abort_on_exit is not None and (
        isinstance(job.abort_on_exit, bool) or not isinstance(job.abort_on_exit, int)
    ):
        problems.append(f"abort_on_exit: {job.abort_on_exit!r} must be an exit code (a number)")
    if not isinstance(job.retry_permanent_failures, bool):
        problems.append(
            f"retry_permanent_failures: {job.retry_permanent_failures!r} must be true or false"
        )
    if not isinstance(job.always_run, bool):
        problems.append(
            f"always_run: {job.always_run!r} must be true or false (true: the job runs once "
            "its parents have ended, even if some failed)"
        )
    for key, value in job.environment.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            problems.append(f"environment: {key!r} is not a valid variable name")
        elif not isinstance(value, str):
            problems.append(f"environment: {key} must be a string; quote it")
    return problems


def max_running_problems(limits: Mapping[str, object], labels: Iterable[str]) -> list[str]:
    """Problems of a workflow's ``max_running`` (label -> jobs out at once), as strings."""
    known = sorted(set(labels))
    problems = []
    for label, limit in limits.items():
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            problems.append(
                f"max_running: {label}: {limit!r} must be a whole number of at least 1 "
                f"(jobs of label {label!r} running at once), e.g. max_running: {{{label}: 2}}"
            )
        if label not in known:
            import difflib

            close = difflib.get_close_matches(str(label), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            shown = ", ".join(known[:10]) + (f", ... ({len(known)} in all)" if known[10:] else "")
            problems.append(
                f"max_running: no job has label {label!r}; {hint}throttle one of the "
                f"workflow's labels ({shown or 'none'}) or remove it"
            )
    return problems


class JobGraph:
    """An immutable, validated directed acyclic graph of jobs.

    Parameters
    ----------
    name
        The workflow's name.
    jobs
        The jobs, in the order they were written.
    workdir
        Directory jobs run in; ``None`` means the directory the run is started from.
    source
        File the graph came from, for messages only.
    code
        Directories and files shipped to the workers (the workflow's ``code:``),
        absolute; ``code_limit`` caps their total size in bytes.
    max_running
        Throttles: at most this many jobs of a label handed to pilots at once (the
        workflow's ``max_running``); labels not in it are not limited.
    trusted
        The jobs come from a graph pilot validated and saved itself (a run's
        ``workflow.json``): skip the checks, so a 200,000-job restart starts fast.
    """

    def __init__(
        self,
        name: str,
        jobs: Iterable[Job],
        *,
        workdir: Path | None = None,
        source: str | None = None,
        where: Mapping[str, str] | None = None,
        trusted: bool = False,
        clustering: Clustering | None = None,
        code: Iterable[Path] = (),
        code_limit: int | None = None,
        max_running: Mapping[str, int] | None = None,
    ):
        self.name = name
        self.workdir = workdir
        self.code = tuple(code)
        self.code_limit = code_limit
        self.source = source
        self.clustering = clustering
        self.max_running: Mapping[str, int] = MappingProxyType(dict(max_running or {}))
        job_list = list(jobs)
        where = where or {}
        problems = [] if trusted else _graph_problems(job_list, source, where)
        if self.max_running and not trusted:
            prefix = f"{source}: " if source else ""
            labels = (job.label for job in job_list)
            problems += [f"{prefix}{p}" for p in max_running_problems(self.max_running, labels)]
        if problems:
            raise GraphError(f"{len(problems)} problem(s) in workflow {source or name!r}", problems)
        self._jobs: dict[str, Job] = {job.name: job for job in job_list}
        children: dict[str, list[str]] = {name: [] for name in self._jobs}
        for job in job_list:
            for parent in job.after:
                children[parent].append(job.name)
        self._children = {name: tuple(kids) for name, kids in children.items()}
        cycle = [] if trusted else _find_cycle(self._jobs, self._children)
        if cycle:
            where_text = f"{source}: " if source else ""
            raise GraphError(
                f"{where_text}the graph has a cycle: {' -> '.join(cycle)}; "
                "remove one of these 'after' edges",
            )

    def with_code(self, extra: Iterable[Path]) -> JobGraph:
        """This graph, shipping ``extra`` paths too (``pilot submit --ship``)."""
        import copy

        shipped = copy.copy(self)
        shipped.code = (*self.code, *(Path(path).absolute() for path in extra))
        return shipped

    # -- access -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self):
        return iter(self._jobs.values())

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __getitem__(self, name: str) -> Job:
        return self._jobs[name]

    @property
    def names(self) -> list[str]:
        return list(self._jobs)

    def parents(self, name: str) -> tuple[str, ...]:
        return self._jobs[name].after

    def children(self, name: str) -> tuple[str, ...]:
        return self._children[name]

    def roots(self) -> list[str]:
        return [name for name, job in self._jobs.items() if not job.after]

    def leaves(self) -> list[str]:
        return [name for name, kids in self._children.items() if not kids]

    def labels(self) -> Counter[str]:
        """Jobs per label, in the order labels first appear."""
        return Counter(job.label for job in self._jobs.values())

    def edges(self) -> list[tuple[str, str]]:
        return [(parent, job.name) for job in self._jobs.values() for parent in job.after]

    # -- order and shape --------------------------------------------------------
    def topological_order(self) -> list[str]:
        """Every job after all its parents; ties broken by the order jobs were written."""
        position = {name: i for i, name in enumerate(self._jobs)}
        waiting = {name: len(set(job.after)) for name, job in self._jobs.items()}
        heap = [position[name] for name, count in waiting.items() if count == 0]
        heapq.heapify(heap)
        order: list[str] = []
        names = list(self._jobs)
        while heap:
            name = names[heapq.heappop(heap)]
            order.append(name)
            for child in set(self._children[name]):
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(heap, position[child])
        return order

    def descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self._children[name])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self._children[current])
        return seen

    def depths(self, among: Iterable[str] | None = None) -> dict[str, int]:
        """Jobs on the longest path from each job to a leaf, counting the job itself.

        The driver starts deeper jobs first so that long chains are not left for last.
        ``among`` limits the work to those jobs and their descendants (a restart needs
        only the unfinished part of a large graph).
        """
        depth: dict[str, int] = {}
        for start in self._jobs if among is None else among:
            stack = [(start, False)]
            while stack:  # depth-first, children before their parent
                name, children_done = stack.pop()
                if name in depth:
                    continue
                kids = self._children[name]
                if children_done:
                    depth[name] = 1 + max((depth[c] for c in kids), default=0)
                else:
                    stack.append((name, True))
                    stack.extend((c, False) for c in kids if c not in depth)
        return depth

    def longest_chain(self) -> list[str]:
        """The longest path through the graph, counted in jobs."""
        if not self._jobs:
            return []
        depth = self.depths()
        current = max(self.roots(), key=lambda n: depth[n])
        chain = [current]
        while self._children[current]:
            current = max(self._children[current], key=lambda n: depth[n])
            chain.append(current)
        return chain


def _graph_problems(jobs: Sequence[Job], source: str | None, where: Mapping[str, str]) -> list[str]:
    """Every problem of the jobs and their edges, each naming the place and the job."""

    def at(name: str) -> str:
        place = where.get(name) or source
        return f"{place}: job {name!r}" if place else f"job {name!r}"

    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, job in enumerate(jobs):
        problems.extend(f"{at(job.name)}: {p}" for p in check_job(job))
        if job.name in seen:
            problems.append(
                f"{at(job.name)}: name: duplicate job name (also job #{seen[job.name] + 1}); "
                "job names must be unique"
            )
        else:
            seen[job.name] = index
    import difflib

    for job in jobs:
        for parent in job.after:
            if parent == job.name:
                problems.append(f"{at(job.name)}: after: a job cannot run after itself")
            elif parent not in seen:
                close = difflib.get_close_matches(parent, list(seen), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(f"{at(job.name)}: after: no job named {parent!r}{hint}")
    return problems


def _find_cycle(jobs: Mapping[str, Job], children: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A cycle as a list of names that starts and ends with the same job, or ``[]``."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(jobs, white)
    for start in jobs:
        if colour[start] != white:
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                colour[node] = grey
                path.append(node)
            kids = children[node]
            if index < len(kids):
                stack.append((node, index + 1))
                kid = kids[index]
                if colour[kid] == grey:
                    return path[path.index(kid) :] + [kid]
                if colour[kid] == white:
                    stack.append((kid, 0))
            else:
                colour[node] = black
                path.pop()
    return []
