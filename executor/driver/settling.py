"""What follows an attempt's outcome: success, a retry, a failure and its blocked
descendants, a cancel, or an abort.

The run loop (:mod:`executor.driver.loop`) finds outcomes; this records each one and
moves its job (and the jobs that depend on it) on, through the retry policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from executor.model.graph import JobGraph
from executor.model.states import FailureClass, JobState
from executor.policy.crashes import alone_note
from executor.policy.packing import RuntimeEstimates
from executor.policy.pools import PoolConfig
from executor.policy.retrying import RetryState, decide
from executor.policy.schedule import Schedule
from executor.store.recorder import RunRecorder
from executor.worker.outcome import Outcome

logger = logging.getLogger(__name__)

Record = Callable[..., None]  # (name, state, *, detail=None, attempts=None)


class Settler:
    """Settles attempts of one run.

    Parameters
    ----------
    graph, schedule, recorder, pools
        The run's jobs, its ready queue, its store writer and its site's pools.
    estimates
        Runtimes per label, fed with every success.
    record
        Records a job's new state (in the store and in what progress shows).
    cancelling
        Whether the run is being cancelled (a failure then ends its job cancelled).
    request_cancel
        Stops the run (an ``abort_on_exit`` value was seen).
    """

    def __init__(
        self,
        graph: JobGraph,
        schedule: Schedule,
        recorder: RunRecorder,
        pools: Sequence[PoolConfig],
        estimates: RuntimeEstimates,
        record: Record,
        cancelling: Callable[[], bool],
        request_cancel: Callable[[], None],
    ):
        self._graph = graph
        self._schedule = schedule
        self._recorder = recorder
        self._pools = pools
        self._estimates = estimates
        self._record = record
        self._cancelling = cancelling
        self._request_cancel = request_cancel
        self.retry: dict[str, RetryState] = {}
        # Jobs that crashed a worker they ran in: from now on, alone and in their own process.
        self.alone: set[str] = set()
        self.abort: str | None = None  # why the run is being aborted (abort_on_exit)

    def memory(self, name: str) -> int | None:
        """Memory the job's next attempt asks for (more after an out-of-memory failure)."""
        state = self.retry.get(name)
        return state.memory if state and state.memory else self._graph[name].memory

    def settle(
        self, name: str, attempt: int, outcome: Outcome, *, uncounted: str | None = None
    ) -> None:
        """Record an attempt's outcome and what follows; ``uncounted``: run it again, using
        nothing, for this reason."""
        if name in self.alone and _the_jobs_own(outcome) and not uncounted:
            outcome = {**outcome, "message": alone_note(outcome.get("message") or "")}
        cancelled = outcome["failure_class"] == FailureClass.CANCELLED.value or self._cancelling()
        decision = None
        if outcome["state"] != "succeeded" and not cancelled and not uncounted:
            decision = decide(
                self._graph[name], outcome, self.retry.get(name, RetryState()), self._pools
            )
            if decision.note:  # shown wherever the attempt is: why it was not retried
                outcome = {**outcome, "message": f"{outcome.get('message')}; {decision.note}"}
        self._recorder.attempt_finished(name, attempt, outcome)
        if outcome["state"] == "succeeded":
            start, end = outcome.get("start"), outcome.get("end")
            if start and end:
                self._estimates.add(self._graph[name].label, end - start)
            self._record(name, JobState.SUCCEEDED)
            for child in self._schedule.succeed(name):
                self._record(child, JobState.READY)
            return
        if cancelled:
            self._schedule.cancel(name)
            self._record(name, JobState.CANCELLED)
            return
        if uncounted or decision is None:
            logger.info("job %s attempt %d was lost: %s", name, attempt, uncounted)
            self._schedule.requeue(name)
            self._record(name, JobState.READY, detail=uncounted)
            return
        self.retry[name] = decision.state
        logger.info(
            "job %s attempt %d failed (%s: %s); %s", name, attempt, outcome["failure_class"],
            next(iter((outcome.get("message") or "").splitlines()), ""),
            decision.detail or decision.action,
        )  # fmt: skip
        if decision.action == "retry":
            self._schedule.requeue(name)
            self._record(name, JobState.READY, detail=decision.detail)
            return
        self._record(name, JobState.FAILED, detail=decision.detail)
        for blocked in self._schedule.fail(name):
            self._record(blocked, JobState.BLOCKED, detail=f"ancestor {name} failed")
        for released in self._schedule.take_released():  # always_run jobs run anyway
            self._record(released, JobState.READY, detail=f"always_run, although {name} failed")
        if decision.action == "abort":
            self.abort = f"aborted: job {name} exited with {outcome['exit_code']} (abort_on_exit)"
            self._request_cancel()


def _the_jobs_own(outcome: Outcome) -> bool:
    """Whether a failed attempt's outcome is the job's own doing, not its pilot's or a cancel's."""
    failure = outcome["failure_class"]
    return (
        failure is not None
        and failure != FailureClass.CANCELLED.value
        and not (FailureClass(failure).transient)
    )
