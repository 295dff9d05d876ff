"""What a worker is told about one job attempt: the :class:`JobSpec` dict.

The driver builds it (:func:`executor.driver.context.job_spec`); the worker reads it
(:mod:`executor.worker.bundle`, :mod:`~executor.worker.inprocess`,
:mod:`~executor.worker.watch`). Like an outcome it stays a plain, JSON-able dict on the
wire: a shipped runtime cannot unpickle a class of the driver's.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class _FromDriver(TypedDict):
    run_id: str
    run_dir: str
    job: str
    attempt: int
    kind: Literal["shell", "function"]
    command: str | list[str] | None
    function: str | None
    args: list[Any]
    kwargs: dict[str, Any]
    environment: dict[str, str]
    environment_file: str | None
    workdir: str
    walltime: float | None
    memory: int | None
    memory_tolerance: float
    in_process: bool
    stdout: str
    stderr: str
    cancel_path: str | None
    outcome_log: str | None


class JobSpec(_FromDriver, total=False):
    """One attempt of one job, as the worker runs it.

    Attributes
    ----------
    run_id, run_dir
        The run's id and directory (``PILOT_RUN_ID``, ``PILOT_RUN_DIR`` in the job's
        environment).
    job, attempt
        The job's name and the attempt's number, from 1 (``PILOT_JOB_NAME``,
        ``PILOT_ATTEMPT``).
    kind
        ``"shell"``: run ``command``; ``"function"``: call ``function``.
    command
        A shell job's command: a string (run directly when it is a plain program and
        its arguments, by ``bash -c`` otherwise) or an argv list. ``None`` for a
        function job.
    function
        A function job's ``"package.module:callable"``, imported from the working
        directory or the shipped code. ``None`` for a shell job.
    args, kwargs
        The function's arguments (JSON values).
    environment
        Variables the job sets, over the submit-time environment.
    environment_file
        A JSON file holding the submit-time environment; ``None`` (or unreadable,
        without a shared filesystem): the pilot's own environment.
    workdir
        The working directory.
    walltime
        Seconds before the job is killed (``timeout``); ``None``: no limit.
    memory
        Megabytes the attempt asked for; ``None``: no limit.
    memory_tolerance
        How far past ``memory`` the job's process tree may go before it is killed
        (``out_of_memory``): 0.1 allows 10% more.
    in_process
        Call the function inside the worker process, without a fork (a function
        job with no memory limit).
    stdout, stderr
        The job's log files, created (with their directory) only when the job writes
        to them (:mod:`executor.worker.capture`).
    cancel_path
        A marker file whose appearance means "the run is cancelled: stop now".
    outcome_log
        The run directory whose outcome log the worker appends the attempt's outcome
        to when it ends (:mod:`executor.worker.outcome_log`); ``None`` without a
        shared filesystem.
    code
        Set by the worker, not the driver: the unpacked trees of shipped code, put
        first on the job's ``sys.path``, ``PYTHONPATH`` and ``PATH``.
    """

    code: list[str]
