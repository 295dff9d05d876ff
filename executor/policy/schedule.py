"""Run-time state of a graph: which jobs are ready, which are blocked. Pure; no I/O.

The driver owns one :class:`Schedule` per run. It asks for ready jobs a few at a
time (never the whole graph up front) and reports outcomes; the schedule answers
with the jobs that became ready or blocked. Among ready jobs, those with the longest
chain of work below them go first, so long chains are not left for the end.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from executor.model.graph import JobGraph
from executor.model.states import JobState


class Schedule:
    """Tracks job states as a run progresses.

    Parameters
    ----------
    graph
        The jobs still to run. A restart's graph holds only the unfinished jobs, without
        the edges from those that succeeded
        (:func:`executor.formats.native.graph_from_saved` with ``keep``).
    """

    def __init__(self, graph: JobGraph):
        self.graph = graph
        self.state: dict[str, JobState] = dict.fromkeys(graph.names, JobState.PENDING)
        depth = graph.depths()
        self._rank = {name: (-depth[name], i) for i, name in enumerate(graph.names)}
        self._waiting: dict[str, int] = {}
        self._ready: list[tuple[tuple[int, int], str]] = []
        # Jobs still pending, ready or running; the run is over when none are left.
        self.unfinished = len(self.state)
        for job in graph:
            parents = set(job.after)
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

    def pop_ready(self, limit: int) -> list[str]:
        """Take up to ``limit`` ready jobs, most important first; they are now running.

        Those the driver cannot hand out yet go back with :meth:`put_back`.
        """
        taken: list[str] = []
        while self._ready and len(taken) < limit:
            _, name = heapq.heappop(self._ready)
            self.state[name] = JobState.RUNNING
            taken.append(name)
        return taken

    def requeue(self, name: str) -> None:
        """Put a running job back in the ready queue (it will be retried)."""
        self._push(name)

    def put_back(self, names: Iterable[str]) -> None:
        """Return jobs taken with :meth:`pop_ready` but not handed out to the ready queue."""
        state, ready, rank = self.state, self._ready, self._rank
        for name in names:  # thousands a round while the pools are full: kept tight
            state[name] = JobState.READY
            heapq.heappush(ready, (rank[name], name))

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
