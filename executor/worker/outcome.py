"""What a worker reports about one job attempt: the :class:`Outcome` dict, and its makers.

Every outcome is made by :func:`succeeded` or :func:`failed`, whoever makes it: the
worker after running a job, or the driver for an attempt that never reported (a lost
pilot, shipped code that never arrived, a cancel). So each outcome has every field,
``None`` where it is unknown, and the store writes each field to the attempt's row
(:mod:`executor.store.recorder` writes exactly :data:`FIELDS`).

An outcome stays a plain dict on the wire: with a shipped runtime these modules run
as a package the driver cannot import (``_pilot_runtime_<hash>``), so no class of
theirs may cross. A ``TypedDict`` is a plain dict at run time.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeGuard, cast

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; never imported


class _Verdict(TypedDict):
    state: Literal["succeeded", "failed"]
    failure_class: str | None
    message: str | None


class Details(TypedDict, total=False):
    """The fields of an :class:`Outcome` besides its verdict, each ``None`` when unknown."""

    start: float | None
    end: float | None
    exit_code: int | None
    signal: int | None
    peak_rss_mb: float | None
    cpu_seconds: float | None
    result: str | None
    host: str | None
    block_id: str | None
    batch_job_id: str | None
    stdout: str | None
    stderr: str | None
    error_type: str | None


class Outcome(_Verdict, Details):
    """How one attempt of one job went.

    Made by :func:`succeeded` and :func:`failed`, which fill every field (``None``
    when unknown); a record read back from an older worker's outcome log may lack some.

    Attributes
    ----------
    state
        ``"succeeded"`` (exit code 0, or the function returned) or ``"failed"``.
    failure_class
        Why it failed: a :class:`executor.model.states.FailureClass` value
        (``exit_code``, ``signal``, ``timeout``, ``out_of_memory``, ``cancelled``, ...);
        ``None`` when it succeeded.
    message
        What happened, for people (``exit code 3``, ``killed by signal SIGKILL``);
        ``None`` when it succeeded.
    start
        When the job's process (or in-process function) started, in seconds since the
        epoch; ``None`` when it never started.
    end
        When it ended, or when its failure was noticed (the driver's clock for an
        attempt that never reported).
    exit_code
        The process's exit status; ``None`` when killed by a signal or never started.
    signal
        The number of the signal that killed the process.
    peak_rss_mb
        Peak resident memory of the job's whole process tree, in megabytes (10⁶ bytes);
        ``None`` for a function run inside the worker, which has no process of its own.
    cpu_seconds
        User plus system CPU time of the job.
    result
        A function job's return value, JSON-encoded (at most 64 KiB of it).
    host
        The name of the node that ran the attempt.
    block_id
        Parsl's id of the pilot (block) that ran it (``PARSL_WORKER_BLOCK_ID``).
    batch_job_id
        The batch scheduler's id of that pilot (``SLURM_JOB_ID``).
    stdout, stderr
        Paths of the job's log files; ``None`` for a stream the job wrote nothing to
        (no file was created) or when the attempt never reported.
    error_type
        The type of the exception a function job raised (``ValueError``), or that kept
        a job from starting (``ModuleNotFoundError``, ``FileNotFoundError``).
    """


class LoggedOutcome(Outcome):
    """An outcome as the worker appends it to the run's outcome log
    (:mod:`executor.worker.outcome_log`): with the job and attempt it belongs to."""

    job: str
    attempt: int


class StartRecord(TypedDict):
    """What the worker appends to the outcome log as an attempt starts, before its
    outcome (:mod:`executor.worker.outcome_log`): told apart from an outcome by its
    ``event`` key, which an outcome never has. The driver records from it that the
    attempt runs (``running``, no longer ``queued``), where, and its log files.

    Attributes
    ----------
    event
        Always ``"started"``.
    job, attempt
        The attempt that started.
    start
        When it started, in seconds since the epoch (the outcome's ``start``).
    host, block_id, batch_job_id, stdout, stderr
        As in :class:`Outcome`.
    """

    event: Literal["started"]
    job: str
    attempt: int
    start: float
    host: str | None
    block_id: str | None
    batch_job_id: str | None
    stdout: str | None
    stderr: str | None


# What the outcome log holds: start records and outcomes, one JSON object a line.
LogRecord = LoggedOutcome | StartRecord
STARTED: Literal["started"] = "started"


def is_start(record: Mapping[str, Any]) -> TypeGuard[StartRecord]:
    """Whether an outcome-log record is the start of an attempt (not its outcome)."""
    return record.get("event") == STARTED


class CodeMissing(TypedDict):
    """A bundle's answer, instead of outcomes, when its node lacks shipped code: for
    each tarball's sha256, the indices of the chunks the node already holds. The driver
    sends the bundle again with the rest (:mod:`executor.driver.delivery`)."""

    code_missing: dict[str, list[int]]


# Every field, in the order records show them.
FIELDS: tuple[str, ...] = tuple(Outcome.__annotations__)


def succeeded(**details: Unpack[Details]) -> Outcome:
    """A successful attempt's outcome; ``end`` defaults to now, other fields to ``None``."""
    return _outcome({"state": "succeeded", "failure_class": None, "message": None}, details)


def failed(failure_class: str, message: str, **details: Unpack[Details]) -> Outcome:
    """A failed attempt's outcome; ``end`` defaults to now, other fields to ``None``.

    Parameters
    ----------
    failure_class
        A :class:`executor.model.states.FailureClass` value (this side cannot import it).
    message
        What happened, for people.
    """
    return _outcome(
        {"state": "failed", "failure_class": failure_class, "message": message}, details
    )


def _outcome(verdict: _Verdict, details: Details) -> Outcome:
    outcome: dict[str, Any] = dict.fromkeys(FIELDS)
    outcome.update(details)
    outcome.update(verdict)
    if outcome["end"] is None:
        outcome["end"] = time.time()
    return cast(Outcome, outcome)


def limit_result(text: str | None) -> str | None:
    """A function's JSON-encoded result as stored: large results belong in files, and
    the database stays small."""
    return text if text is None or len(text) <= 65536 else text[:65536]
