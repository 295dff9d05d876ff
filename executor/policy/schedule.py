"""Run-time state of a graph: which jobs are ready, which are blocked. Pure; no I/O.

The driver owns one :class:`Schedule` per run. It asks for ready jobs a few at a
time (never the whole graph up front) and reports outcomes; the schedule answers
with the jobs that became ready or blocked. Among ready jobs, those with the longest
chain of work below them go first, so long chains are not left for the end.

A label with a throttle (the workflow's ``max_running: {ingest: 2}``) never has more
than that many jobs out with the driver at once: taken by :meth:`Schedule.pop_ready`
and not yet returned (:meth:`~Schedule.put_back`, :meth:`~Schedule.requeue`) or
finished (:meth:`~Schedule.succeed`, :meth:`~Schedule.fail`, :meth:`~Schedule.cancel`).
Each throttled label *admits* at most its limit of jobs into the ready heap, counting
those out; its other ready jobs are *held* in a heap of their own (still ``ready``,
in rank order), and the best of them is admitted each time one of the label's jobs
leaves. So every job in the ready heap can be handed out as it is, and a label with
100,000 held jobs costs nothing per round. (A job that becomes ready while its label is
full waits behind the label's jobs admitted before it, whatever their ranks.)

A job that fails for good blocks its descendants: they will never run. A job with
``always_run`` is the exception: it waits until each of its parents has *ended*
(succeeded, failed, or blocked by a failure further up) and then becomes ready as if
they had all succeeded; a parent that fails or is blocked counts as ended. Blocking
stops at it: its own descendants wait for it and run if it succeeds. The jobs that a
failure makes ready this way are handed to the driver by :meth:`Schedule.take_released`
(the driver records them ready, as it does the children :meth:`~Schedule.succeed`
returns). A cancel (``pilot cancel``, ``abort_on_exit``) still cancels an ``always_run``
job that has not started, like every other job: a cancelled run runs nothing more.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from executor.model.graph import JobGraph
from executor.model.states import JobState

_Entry = tuple[tuple[int, int], str]  # (rank, name): the best rank is the smallest


class Schedule:
    """Tracks job states as a run progresses.

    Parameters
    ----------
    graph
        The jobs still to run. A restart's graph holds only the unfinished jobs, without
        the edges from those that succeeded
        (:func:`executor.formats.native.graph_from_saved` with ``keep``). Its
        ``max_running`` throttles labels (see the module's docstring).
    """

    def __init__(self, graph: JobGraph):
        self.graph = graph
        self.state: dict[str, JobState] = dict.fromkeys(graph.names, JobState.PENDING)
        depth = graph.depths()
        self._rank = {name: (-depth[name], i) for i, name in enumerate(graph.names)}
        self._waiting: dict[str, int] = {}
        self._ready: list[_Entry] = []
        # Per throttled label: its limit, its jobs admitted (in the ready heap or out
        # with the driver), and its ready jobs held back; the label of each of its jobs.
        self._limit: dict[str, int] = dict(graph.max_running)
        self._admitted = dict.fromkeys(self._limit, 0)
        self._held: dict[str, list[_Entry]] = {label: [] for label in self._limit}
        self._throttled = {job.name: job.label for job in graph if job.label in self._limit}
        # Jobs still pending, ready or running; the run is over when none are left.
        self.unfinished = len(self.state)
        self._always_run = {job.name for job in graph if job.always_run}
        self._released: list[str] = []  # always_run jobs a failure made ready, not yet taken
        roots = []
        for job in graph:
            parents = set(job.after)
            self._waiting[job.name] = len(parents)
            if not parents:
                roots.append(job.name)
        if self._throttled:  # a full label admits its best-ranked jobs, not its first
            roots.sort(key=self._rank.__getitem__)
        for name in roots:
            self._push(name)

    def _push(self, name: str) -> None:
        """``name`` became ready: into the ready heap, or held if its label is full."""
        self.state[name] = JobState.READY
        label = self._throttled.get(name)
        if label is None:
            heapq.heappush(self._ready, (self._rank[name], name))
        elif self._admitted[label] < self._limit[label]:
            self._admitted[label] += 1
            heapq.heappush(self._ready, (self._rank[name], name))
        else:
            heapq.heappush(self._held[label], (self._rank[name], name))

    def _leave(self, name: str) -> None:
        """A job that was out (running) is out no longer: admit the best held job."""
        label = self._throttled.get(name)
        if label is None:
            return
        self._admitted[label] -= 1
        held = self._held[label]
        if held:
            self._admitted[label] += 1
            heapq.heappush(self._ready, heapq.heappop(held))

    def _return(self, name: str) -> None:
        """A job that was out is ready again; a better-ranked held job may go first."""
        self.state[name] = JobState.READY
        label = self._throttled.get(name)
        if label is None:
            heapq.heappush(self._ready, (self._rank[name], name))
            return
        heapq.heappush(self._held[label], (self._rank[name], name))
        self._leave(name)

    @property
    def ready_count(self) -> int:
        """Ready jobs that :meth:`pop_ready` would hand out now.

        Jobs held back by ``max_running`` (:attr:`held_count`) are ready too, but not
        counted: with only held jobs left the driver has nothing to submit, and no pool
        grows for work that may not run yet.
        """
        return len(self._ready)

    @property
    def held_count(self) -> int:
        """Ready jobs held back because their label has ``max_running`` jobs out."""
        return sum(len(held) for held in self._held.values())

    def held(self) -> dict[str, int]:
        """Jobs held back per throttled label."""
        return {label: len(held) for label, held in self._held.items()}

    def initially_ready(self) -> list[str]:
        """Jobs that are ready before anything has run (to record their state), held or not."""
        held = [name for entries in self._held.values() for _, name in entries]
        return [name for _, name in self._ready] + held

    def pop_ready(self, limit: int) -> list[str]:
        """Take up to ``limit`` ready jobs, most important first; they are now running.

        Those the driver cannot hand out yet go back with :meth:`put_back`. No job of
        a label with ``max_running`` jobs out is ever taken.
        """
        taken: list[str] = []
        while self._ready and len(taken) < limit:
            _, name = heapq.heappop(self._ready)
            self.state[name] = JobState.RUNNING
            taken.append(name)
        return taken

    def take(self, names: Iterable[str]) -> list[str]:
        """Take these ready jobs out of the queue, running: a restart found them still
        out on the site (its driver reattaches to them). Returns those that were ready.

        A job of a throttled label counts as out, even over its label's limit.
        """
        wanted = {name for name in names if self.state.get(name) is JobState.READY}
        if not wanted:
            return []
        self._ready = [entry for entry in self._ready if entry[1] not in wanted]
        heapq.heapify(self._ready)
        for label, held in self._held.items():
            kept = [entry for entry in held if entry[1] not in wanted]
            self._admitted[label] += len(held) - len(kept)
            heapq.heapify(kept)
            self._held[label] = kept
        for name in wanted:
            self.state[name] = JobState.RUNNING
        # A label now over its limit holds back its worst-ranked jobs not yet handed out.
        for label, limit in self._limit.items():
            over = self._admitted[label] - limit
            if over <= 0:
                continue
            queued = sorted(e for e in self._ready if self._throttled.get(e[1]) == label)
            for entry in queued[::-1][:over]:
                self._ready.remove(entry)
                heapq.heappush(self._held[label], entry)
                self._admitted[label] -= 1
            heapq.heapify(self._ready)
        return sorted(wanted, key=self._rank.__getitem__)

    def requeue(self, name: str) -> None:
        """Put a running job back in the ready queue (it will be retried)."""
        self._return(name)

    def put_back(self, names: Iterable[str]) -> None:
        """Return jobs taken with :meth:`pop_ready` but not handed out to the ready queue."""
        if self._throttled:
            for name in names:
                self._return(name)
            return
        state, ready, rank = self.state, self._ready, self._rank
        for name in names:  # thousands a round while the pools are full: kept tight
            state[name] = JobState.READY
            heapq.heappush(ready, (rank[name], name))

    def _finish(self, name: str, state: JobState) -> None:
        if self.state[name] is JobState.RUNNING:
            self._leave(name)
        self.state[name] = state

    def succeed(self, name: str) -> list[str]:
        """Record a success; return the children that became ready."""
        self._finish(name, JobState.SUCCEEDED)
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
        """Record a final failure; return the descendants that are now blocked.

        Descendants with ``always_run`` are not blocked, and blocking does not pass
        through them: the failed job (and each job it blocks) counts as an ended parent
        of theirs, and those whose parents have now all ended are ready
        (:meth:`take_released`).
        """
        self._finish(name, JobState.FAILED)
        if not self._always_run:  # the common case: every pending descendant is blocked
            blocked = [d for d in self.graph.descendants(name) if self._block(d)]
        else:
            blocked = self._block_below(name)
        self.unfinished -= 1 + len(blocked)
        return blocked

    def _block(self, name: str) -> bool:
        if self.state[name] is not JobState.PENDING:
            return False
        self.state[name] = JobState.BLOCKED
        return True

    def _block_below(self, name: str) -> list[str]:
        """Block the descendants of ``name`` down to the ``always_run`` jobs, releasing those."""
        blocked: list[str] = []
        ended = [name]  # jobs that ended without succeeding: failed, then blocked
        while ended:
            parent = ended.pop()
            for child in set(self.graph.children(parent)):
                if self.state[child] is not JobState.PENDING:
                    continue  # blocked already, through another parent
                if child not in self._always_run:
                    self.state[child] = JobState.BLOCKED
                    blocked.append(child)
                    ended.append(child)
                    continue
                self._waiting[child] -= 1
                if self._waiting[child] == 0:
                    self._push(child)
                    self._released.append(child)
        return blocked

    def take_released(self) -> list[str]:
        """The ``always_run`` jobs that failures made ready since the last call.

        They are in the ready queue already; the driver records them ``ready``.
        """
        released, self._released = self._released, []
        return released

    def cancel_unstarted(self) -> list[str]:
        """Cancel every job that has not started; return their names."""
        cancelled = [
            name for name, state in self.state.items()
            if state in (JobState.PENDING, JobState.READY)
        ]  # fmt: skip
        for name in cancelled:
            self.state[name] = JobState.CANCELLED
        self._ready.clear()
        for label, held in self._held.items():
            held.clear()
            self._admitted[label] = 0
        for name, label in self._throttled.items():  # those still out stay admitted
            if self.state[name] is JobState.RUNNING:
                self._admitted[label] += 1
        self.unfinished -= len(cancelled)
        return cancelled

    def cancel(self, name: str) -> None:
        """Record that a running job was stopped by a cancel."""
        self._finish(name, JobState.CANCELLED)
        self.unfinished -= 1

    @property
    def finished(self) -> bool:
        return self.unfinished == 0
