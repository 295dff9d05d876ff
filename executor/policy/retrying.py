"""What to do after a failed attempt: retry (maybe with more memory), fail, or abort.

Pure policy, with the semantics of HTCondor-based batch production:

- ``pilot_lost`` and ``submit_error`` are the pilot's fault: retried without using
  the job's ``retries`` (at most ``MAX_TRANSIENT_RETRIES`` times, so a job that
  kills its pilot every time cannot loop forever);
- ``abort_on_exit`` stops the whole run when the job exits with that code;
- exit codes in ``retry_unless_exit`` are never retried;
- what cannot succeed on a retry is not retried either, and the message says so (see
  :func:`cannot_succeed_on_retry`): a job that could not start because its program or
  its function's module is missing, exit code 127 or 126 (the shell found no such
  command, or could not execute it), a function that raised ``ImportError`` or
  ``ModuleNotFoundError``; a job with ``retry_permanent_failures: true`` is retried anyway;
- an ``out_of_memory`` failure retries with ``memory × memory_multiplier^n`` (capped
  by ``memory_max``), in a larger pool when needed;
- anything else is retried while ``retries`` last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from executor.model.graph import Job
from executor.model.states import FailureClass
from executor.model.units import format_memory
from executor.policy.pools import PoolConfig, escalated_memory, select_pool

if TYPE_CHECKING:  # the worker's report, as plain data: a type only, nothing imported
    from executor.worker.outcome import Outcome

MAX_TRANSIENT_RETRIES = 3
# How the note on an attempt that is not retried begins (after "; ").
NOT_RETRIED = "not retried: "

# Exit codes the shell gives for a command it cannot run: 127 "command not found", 126
# "permission denied" (not executable). A retry runs the same command on the same files.
_SHELL_CANNOT_RUN = {127: "command not found", 126: "command not executable"}
# Exception types that mean code is missing or broken, not a bad moment: the same
# import fails the same way on every retry (the environment does not change between
# attempts). An OSError of another kind (out of memory, a full disk) may pass.
_PERMANENT_ERRORS = frozenset({
    "ModuleNotFoundError", "ImportError", "AttributeError", "SyntaxError",
    "FileNotFoundError", "PermissionError", "NotADirectoryError", "IsADirectoryError",
})  # fmt: skip
# A function that runs and raises one of these failed importing something at run time.
_PERMANENT_WHEN_RAISED = frozenset({"ModuleNotFoundError", "ImportError"})


def cannot_succeed_on_retry(outcome: Outcome) -> str | None:
    """Why ``outcome``'s failure would repeat on a retry, or ``None`` when it might not.

    A job that could not start because something is missing (its program, its working
    directory, its function's module or name), exit code 127 or 126 from a shell, and a
    function that raised ``ImportError``/``ModuleNotFoundError`` fail the same way every
    time: retrying only delays the report.
    """
    failure = outcome["failure_class"]
    error_type = outcome.get("error_type")
    if failure == FailureClass.COULD_NOT_START.value:
        if error_type in _PERMANENT_ERRORS:
            return "it could not start and would not on a retry"
        return None
    if failure != FailureClass.EXIT_CODE.value:
        return None
    code = outcome.get("exit_code")
    if error_type is None and code in _SHELL_CANNOT_RUN:
        return f"exit code {code} means {_SHELL_CANNOT_RUN[code]}"
    if error_type in _PERMANENT_WHEN_RAISED:
        return f"{error_type} repeats on a retry"
    return None


@dataclass(frozen=True)
class RetryState:
    """What one job has used up so far in this run."""

    retries_used: int = 0
    transient_used: int = 0
    out_of_memory: int = 0
    memory: int | None = None  # requested by the next attempt (None: the job's own)


@dataclass(frozen=True)
class Decision:
    action: Literal["retry", "fail", "abort"]
    detail: str
    state: RetryState
    # Said on the attempt itself (its message) as well: why it is not retried.
    note: str | None = None


def decide(job: Job, outcome: Outcome, state: RetryState, pools: Sequence[PoolConfig]) -> Decision:
    """Decide after a failed attempt described by ``outcome`` (the worker's report)."""
    failure = FailureClass(outcome["failure_class"])
    message = outcome.get("message") or str(failure)
    code = outcome.get("exit_code")
    if failure.transient:
        if state.transient_used < MAX_TRANSIENT_RETRIES:
            used = state.transient_used + 1
            return Decision(
                "retry",
                f"{message}; retrying ({failure}, not counted: {used}/{MAX_TRANSIENT_RETRIES})",
                replace(state, transient_used=used),
            )
        return Decision("fail", f"{message}; lost {state.transient_used} times, giving up", state)
    exited = failure is FailureClass.EXIT_CODE
    if exited and job.abort_on_exit is not None and code == job.abort_on_exit:
        return Decision("abort", f"exit code {code} is the job's abort_on_exit: stopping", state)
    if exited and code in job.retry_unless_exit:
        return Decision("fail", f"exit code {code} is in retry_unless_exit: not retried", state)
    if state.retries_used >= job.retries:
        return Decision("fail", message, state)
    permanent = None if job.retry_permanent_failures else cannot_succeed_on_retry(outcome)
    if permanent:
        note = f"{NOT_RETRIED}{permanent} (retry_permanent_failures: true retries it)"
        return Decision("fail", f"{message}; {note}", state, note)
    state = replace(state, retries_used=state.retries_used + 1)
    detail = f"{message}; retry {state.retries_used}/{job.retries}"
    if failure is FailureClass.OUT_OF_MEMORY and job.memory is not None:
        oom = state.out_of_memory + 1
        memory = escalated_memory(job.memory, job.memory_multiplier, oom, job.memory_max)
        if select_pool(pools, job.cores, memory) is None:
            return Decision(
                "fail",
                f"{message}; the next attempt would need {format_memory(memory)}, "
                "more than any pool of this site has",
                state,
            )
        state = replace(state, out_of_memory=oom, memory=memory)
        if memory != job.memory:
            detail += f" with {format_memory(memory)}"
    return Decision("retry", detail, state)
