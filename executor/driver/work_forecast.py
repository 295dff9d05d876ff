"""Each pool's work now and soon, read from the driver's state for the scaling policy.

:func:`executor.policy.lookahead.forecast` wants plain data: each running job and its
expected end, each ready job and its expected runtime, and each pending job with its
unfinished parents, in topological order. :class:`WorkForecast` gathers them from the
schedule, the bundles in flight and the runtime estimates, and caches the result for
:data:`FORECAST_SECONDS` (one pass over the graph; a 200,000-job graph takes a
fraction of a second).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from executor.model.graph import JobGraph
from executor.model.states import JobState
from executor.policy.lookahead import WorkView, forecast

#: Seconds a forecast is reused, unless the caller asks for a fresh one.
FORECAST_SECONDS = 5.0
#: The runtime assumed for a label that has no measured runtime yet.
UNKNOWN_RUNTIME = 60.0


class WorkForecast:
    """The pools' :class:`WorkView`, from the driver's state (read, never changed).

    Parameters
    ----------
    graph
        The graph being run.
    states
        The schedule's state of each job.
    bundles
        The bundles in flight (``executor.driver.bundles.BundlesInFlight``).
    estimates
        Mean runtime per label so far (``RuntimeEstimates.as_mapping``).
    pool_of
        The pool a job's next attempt goes to.
    horizon
        Seconds ahead the forecast resolves finely (at least the queue wait).
    started
        Whether a sent job's current attempt has started on a worker. A bundle none
        of whose jobs started waits at the interchange for a worker: its jobs are
        work that still needs one (ready), not work being done.
    """

    def __init__(
        self,
        graph: JobGraph,
        states: Mapping[str, JobState],
        bundles: Any,
        estimates: Callable[[], Mapping[str, float]],
        pool_of: Callable[[str], str],
        horizon: float,
        started: Callable[[str], bool] = lambda name: True,
    ):
        self.graph = graph
        self.states = states
        self.bundles = bundles
        self.estimates = estimates
        self.pool_of = pool_of
        self.horizon = horizon
        self.started = started
        self._order = graph.topological_order()
        self._cached: dict[str, WorkView] = {}
        self._when = -float("inf")

    def views(self, *, fresh: bool = False) -> dict[str, WorkView]:
        """Each pool's work (pools with none are absent)."""
        if fresh or time.monotonic() - self._when >= FORECAST_SECONDS:
            self._cached = self._forecast(time.time())
            self._when = time.monotonic()
        return self._cached

    def _forecast(self, now: float) -> dict[str, WorkView]:
        means = self.estimates()
        graph, states = self.graph, self.states

        def runtime(name: str) -> float:
            return means.get(graph[name].label, UNKNOWN_RUNTIME)

        running: list[tuple[str, str, float]] = []
        placed: set[str] = set()
        ready: list[tuple[str, str, float]] = []
        for pool, members, sent in self.bundles.members_sent():
            names = [name for name, _attempt in members if states.get(name) is JobState.RUNNING]
            placed.update(names)
            if not any(self.started(name) for name in names):
                ready.extend((name, pool, runtime(name)) for name in names)
                continue
            end = sent
            for name, _attempt in members:  # a worker runs a bundle's jobs one by one
                end += runtime(name)
                if name in names:
                    running.append((name, pool, max(end, now)))
        pending = []
        for name in self._order:
            state = states.get(name)
            if state is JobState.READY:
                ready.append((name, self.pool_of(name), runtime(name)))
            elif state is JobState.RUNNING and name not in placed:
                running.append((name, self.pool_of(name), now + runtime(name)))
            elif state is JobState.PENDING:
                parents = [
                    p for p in graph.parents(name) if states.get(p) is not JobState.SUCCEEDED
                ]
                pending.append((name, self.pool_of(name), runtime(name), parents))
        return forecast(now, running=running, ready=ready, pending=pending, horizon=self.horizon)
