"""Canonical job and run states, and the legal moves between them.

These names are a public contract: ``pilot status --json`` prints them and scripts
depend on them (see DESIGN.md). Add states only with care; never rename them.
"""

from __future__ import annotations

from enum import Enum
from functools import cache


class _Named(str, Enum):
    """An enum whose members print as their stored names (``running``, not ``JobState.RUNNING``)."""

    def __str__(self) -> str:
        return self.value


class JobState(_Named):
    PENDING = "pending"  # waiting for parents
    READY = "ready"  # parents done; queued in the driver or handed to Parsl
    RUNNING = "running"  # handed to a pilot (shown queued until it starts: SHOWN_STATES)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed for good: retries used up
    BLOCKED = "blocked"  # an ancestor failed for good; will never run
    CANCELLED = "cancelled"  # the run was cancelled before this job finished


class RunState(_Named):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Never stored: derived when a run says "running" but its driver is gone.
    DRIVER_LOST = "driver_lost"


JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState)

# What counts show (``pilot status``, progress, reports, the dashboard): a job the store
# has ``running`` is *queued* while its current attempt has not started on a worker
# (handed to a pilot, waiting for a worker slot), and *running* once it has. Not a state
# of the store: the job's state stays ``running`` throughout.
QUEUED = "queued"
SHOWN_STATES: tuple[str, ...] = (
    JobState.PENDING.value, JobState.READY.value, QUEUED, *JOB_STATES[2:]
)  # fmt: skip

# A restart may move any final state except SUCCEEDED back to PENDING. The store
# refuses every other move, whoever writes it (executor.store.moves).
_JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.READY, JobState.BLOCKED, JobState.CANCELLED}),
    JobState.READY: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.PENDING}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.READY, JobState.CANCELLED, JobState.PENDING}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.PENDING}),
    JobState.BLOCKED: frozenset({JobState.PENDING}),
    JobState.CANCELLED: frozenset({JobState.PENDING}),
}


def can_move(old: JobState, new: JobState) -> bool:
    """Whether a job may go from ``old`` to ``new``."""
    return new in _JOB_TRANSITIONS[old]


@cache
def legal_sources(target: JobState, *, through: tuple[JobState, ...] = ()) -> tuple[str, ...]:
    """The states a job may move to ``target`` from, for the store's ``state IN (...)``.

    Parameters
    ----------
    target
        The state the job moves to.
    through
        States the job may have passed through on the way in moves that happened but
        were never recorded. Recovering a dead driver's outcomes passes
        ``(READY, RUNNING)``: a worker's outcome log says an attempt succeeded, and
        the driver that made the job ready and running may have died before it
        committed either, so the job may still be recorded as pending or ready.

    Returns
    -------
    tuple of str
        State values, in the order of :class:`JobState`.
    """
    reached = {target}
    sources: set[JobState] = set()
    while True:
        more = {s for s in JobState if any(can_move(s, t) for t in reached)} - sources
        if not more:
            return tuple(s.value for s in JobState if s in sources)
        sources |= more
        reached |= more & set(through)


# Revising a workflow redefines each job whose definition, or an ancestor's, changed: a
# new job under the old name, which starts over at pending from whatever state the old
# definition reached. That is the one way out of succeeded, and only the revise reset
# (:func:`executor.store.revisions.revise_jobs`) takes it.
REDEFINED_FROM: tuple[str, ...] = tuple(s.value for s in JobState if s is not JobState.PENDING)

# Parsl's ``JobState`` names, in lower case, that end a pilot (block): it never runs again.
ENDED_PILOT_STATES = frozenset(
    {"cancelled", "completed", "failed", "timeout", "missing", "scaled_in"}
)


class FailureClass(_Named):
    """Why an attempt failed. Transient classes are retried without using a job's retries."""

    EXIT_CODE = "exit_code"
    # The job never ran: its program is missing or not executable, its working directory
    # is gone, or its function's module or name cannot be found (the reason is the message).
    COULD_NOT_START = "could_not_start"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    PILOT_LOST = "pilot_lost"
    SUBMIT_ERROR = "submit_error"
    CANCELLED = "cancelled"
    # The shipped code could not be verified or unpacked on the worker's node.
    CODE_UNAVAILABLE = "code_unavailable"
    # pilot's own worker code failed on this job (a bug to report, with its traceback):
    # counted against the job's retries, so a fault that repeats cannot loop forever.
    WORKER_ERROR = "worker_error"

    @property
    def transient(self) -> bool:
        # A node's broken cache or a transfer error may not recur on another try.
        return self in (
            FailureClass.PILOT_LOST,
            FailureClass.SUBMIT_ERROR,
            FailureClass.CODE_UNAVAILABLE,
        )
