"""Canonical job and run states, and the legal moves between them.

These names are a public contract: ``pilot status --json`` prints them and scripts
depend on them (see DESIGN.md). Add states only with care; never rename them.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    PENDING = "pending"  # waiting for parents
    READY = "ready"  # parents done; queued in the driver or handed to Parsl
    RUNNING = "running"  # an attempt has started on a worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed for good: retries used up
    BLOCKED = "blocked"  # an ancestor failed for good; will never run
    CANCELLED = "cancelled"  # the run was cancelled before this job finished

    def __str__(self) -> str:
        return self.value


class RunState(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Never stored: derived when a run says "running" but its driver is gone.
    DRIVER_LOST = "driver_lost"

    def __str__(self) -> str:
        return self.value


JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState)
RUN_STATES: tuple[str, ...] = tuple(s.value for s in RunState)

FINAL_JOB_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.BLOCKED, JobState.CANCELLED}
)

# A restart may move any final state except SUCCEEDED back to PENDING.
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


class FailureClass(str, Enum):
    """Why an attempt failed. Transient classes are retried without using a job's retries."""

    EXIT_CODE = "exit_code"
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

    def __str__(self) -> str:
        return self.value

    @property
    def transient(self) -> bool:
        # A node's broken cache or a transfer error may not recur on another try.
        return self in (
            FailureClass.PILOT_LOST,
            FailureClass.SUBMIT_ERROR,
            FailureClass.CODE_UNAVAILABLE,
        )
