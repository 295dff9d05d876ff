"""Run-time state of a graph: which jobs are ready, which are blocked. Pure; no I/O.

The driver owns one :class:`Schedule` per run. It asks for ready jobs a few at a
time (never the whole graph up front) and reports outcomes; the schedule answers
with the jobs that became ready or blocked. Among ready jobs, those with the longest
chain of work below them go first, so long chains are not left for the end.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from executor.model.graph import JobGraph
from executor.model.states import JobState


class Schedule:
    """Tracks job states as a run progresses.

    Parameters
    ----------
    graph
        The run's graph.
    succeeded
        Jobs that already succeeded (a restart); they never run again.
    """

    def __init__(self, graph: JobGraph, succeeded: Iterable[str] = ()):
        self.graph = graph
        self.state: dict[str, JobState] = dict.fromkeys(graph.names, JobState.PENDING)
        for name in succeeded:
            if name in self.state:  # a restart's graph may hold only unfinished jobs
                self.state[name] = JobState.SUCCEEDED
        unfinished = [n for n, state in self.state.items() if state is JobState.PENDING]
        depth = graph.depths(unfinished)
        self._rank = {
            name: (-depth[name], i) for i, name in enumerate(graph.names) if name in depth
        }
        self._waiting: dict[str, int] = {}
        self._ready: list[tuple[tuple[int, int], str]] = []
        # Jobs still pending, ready or running; the run is over when none are left.
        self.unfinished = sum(1 for state in self.state.values() if state is JobState.PENDING)
        for job in graph:
            if self.state[job.name] is JobState.SUCCEEDED:
                continue
            parents = {p for p in job.after if self.state[p] is not JobState.SUCCEEDED}
            self._waiting[job.name] = len(parents)
            if not parents:
                self._push(job.name)

    def _push(self, name: str) -> None:
        self.state[name] = JobState.READY
        heapq.heappush(self._ready, (self._rank[name], name))

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def initially_ready(self) -> list[str]:
        """Jobs that are ready before anything has run (to record their state)."""
        return [name for _, name in self._ready]

    def pop_ready(self, limit: int, accept: Callable[[str], bool] | None = None) -> list[str]:
        """Take up to ``limit`` ready jobs, most important first; they are now running.

        Jobs that ``accept`` turns down (their pool is full) stay ready, in order.
        """
        taken: list[str] = []
        declined: list[tuple[tuple[int, int], str]] = []
        while self._ready and len(taken) < limit:
            item = heapq.heappop(self._ready)
            if accept is not None and not accept(item[1]):
                declined.append(item)
                continue
            self.state[item[1]] = JobState.RUNNING
            taken.append(item[1])
        for item in declined:
            heapq.heappush(self._ready, item)
        return taken

    def requeue(self, name: str) -> None:
        """Put a running job back in the ready queue (it will be retried)."""
        self._push(name)

    def succeed(self, name: str) -> list[str]:
        """Record a success; return the children that became ready."""
        self.state[name] = JobState.SUCCEEDED
        self.unfinished -= 1
        ready = []
        for child in set(self.graph.children(name)):
            if self.state[child] is not JobState.PENDING:
                continue
            self._waiting[child] -= 1
            if self._waiting[child] == 0:
                self._push(child)
                ready.append(child)
        return ready

    def fail(self, name: str) -> list[str]:
        """Record a final failure; return the descendants that are now blocked."""
        self.state[name] = JobState.FAILED
        blocked = []
        for descendant in self.graph.descendants(name):
            if self.state[descendant] is JobState.PENDING:
                self.state[descendant] = JobState.BLOCKED
                blocked.append(descendant)
        self.unfinished -= 1 + len(blocked)
        return blocked

    def cancel_unstarted(self) -> list[str]:
        """Cancel every job that has not started; return their names."""
        cancelled = [
            name for name, state in self.state.items()
            if state in (JobState.PENDING, JobState.READY)
        ]  # fmt: skip
        for name in cancelled:
            self.state[name] = JobState.CANCELLED
        self._ready.clear()
        self.unfinished -= len(cancelled)
        return cancelled

    def cancel(self, name: str) -> None:
        """Record that a running job was stopped by a cancel."""
        self.state[name] = JobState.CANCELLED
        self.unfinished -= 1

    @property
    def finished(self) -> bool:
        return self.unfinished == 0
