"""What the driver has shown of each job: its state in the store, and the counts per label.

The counts are those of :data:`executor.model.states.SHOWN_STATES`, as ``pilot status``
reads them from the store (:func:`executor.store.queries.label_counts`): a job the
store has ``running`` counts as ``queued`` until its worker reports that the current
attempt started (a start record in the outcome log), then as ``running``. Without a
shared filesystem no start record comes: the job stays queued until its bundle ends.
"""

from __future__ import annotations

from collections.abc import Mapping

from executor.model.graph import JobGraph
from executor.model.states import QUEUED, SHOWN_STATES, JobState, can_move


class ShownStates:
    """Each job's state as committed to the store, and the per-label counts shown.

    Parameters
    ----------
    graph
        The jobs (for their labels).
    states
        Each job's state now; ``ready`` ones count as pending until recorded ready.
    done_per_label
        Succeeded jobs per label that are not in ``graph`` (a restart's graph holds
        only the unfinished part), counted too.
    """

    def __init__(
        self,
        graph: JobGraph,
        states: Mapping[str, JobState],
        done_per_label: Mapping[str, int] | None = None,
    ):
        self._graph = graph
        self._state: dict[str, JobState] = {
            name: JobState.PENDING if state is JobState.READY else state
            for name, state in states.items()
        }
        self._started: set[str] = set()  # running jobs whose current attempt started
        self.counts: dict[str, dict[str, int]] = {}
        for name in self._state:
            self._counts_of(name)[self._shown(name)] += 1
        for label, done in (done_per_label or {}).items():
            self.counts.setdefault(label, dict.fromkeys(SHOWN_STATES, 0))["succeeded"] += done

    def move(self, name: str, state: JobState) -> None:
        """Count job ``name`` in ``state`` (``running``: queued until :meth:`start`).

        Raises
        ------
        RuntimeError
            When the move is not legal (:func:`executor.model.states.can_move`).
        """
        if not can_move(self._state[name], state):
            raise RuntimeError(f"job {name}: illegal move {self._state[name]} -> {state}")
        counts = self._counts_of(name)
        counts[self._shown(name)] -= 1
        self._started.discard(name)  # a new attempt, or none: not started
        self._state[name] = state
        counts[self._shown(name)] += 1

    def start(self, name: str) -> bool:
        """Count running job ``name`` as running (its attempt started); ``False`` if it
        is not running or was counted so already."""
        if self._state[name] is not JobState.RUNNING or name in self._started:
            return False
        counts = self._counts_of(name)
        counts[QUEUED] -= 1
        counts[JobState.RUNNING.value] += 1
        self._started.add(name)
        return True

    def started(self, name: str) -> bool:
        """Whether running job ``name``'s current attempt has started on a worker."""
        return name in self._started

    def _shown(self, name: str) -> str:
        state = self._state[name]
        if state is JobState.RUNNING and name not in self._started:
            return QUEUED
        return state.value

    def _counts_of(self, name: str) -> dict[str, int]:
        label = self._graph[name].label
        if label not in self.counts:
            self.counts[label] = dict.fromkeys(SHOWN_STATES, 0)
        return self.counts[label]
