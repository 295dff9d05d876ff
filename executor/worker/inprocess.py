"""Run a Python-function job inside the worker process: no fork, no interpreter start.

Used for function jobs that ask for no memory limit (enforcing one needs a process
of its own). Each call is isolated so one job cannot break the next: its stdout and
stderr go to its own log files at the file-descriptor level, and the environment,
working directory, ``sys.path``, ``sys.argv`` and the user's own modules (anything
imported from the working directory or the shipped code) are restored or dropped
afterwards. A walltime is enforced with a timer signal, so this path is used only in a
main thread.

What makes that cheap: the environment is switched by its differences only
(:mod:`executor.worker.environ`), and a dropped module's compiled code is kept, so
the next job executes it afresh without reading or compiling its file again
(:mod:`executor.worker.modulecode`).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any

from .environ import Switch
from .modulecode import ReusingFinder
from .outcome import Details, Outcome, failed, limit_result, succeeded
from .spec import JobSpec


class _Walltime(BaseException):
    """Raised inside the job when its walltime is over (BaseException: hard to swallow)."""


def run_function_here(
    spec: JobSpec, environment: dict[str, str], where: Details, fds: tuple[int, int]
) -> Outcome:
    """Call ``spec["function"]`` with its stdout and stderr on ``fds``; return its outcome,
    with ``where`` (start, host, logs) and its JSON-encoded ``result`` when it succeeded."""
    out, err = fds
    switch = Switch(environment)
    roots = [*spec.get("code", ()), spec["workdir"]]
    saved = _Saved.take(switch)
    modules_before = set(sys.modules)
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    function = spec["function"] or ""  # a function job names one (checked at submit)
    exit_code: int | None = 0
    failure: tuple[str, str] | None = None  # failure class and message
    error_type: str | None = None  # the exception's type, for a function that raised
    resolved = False  # whether the module and name were found (the job started)
    result: str | None = None
    try:
        _redirect(out, err)
        switch.enter()
        os.chdir(spec["workdir"])
        # Shipped code first, so the shipped copy is imported rather than the original.
        sys.path[:0] = [*spec.get("code", ()), spec["workdir"]]
        sys.argv = [function]
        _arm(spec.get("walltime"))
        try:
            with ReusingFinder(roots):
                target = _resolve(function)
                resolved = True
                value = target(*spec["args"], **spec["kwargs"])
        finally:
            _arm(None)
        # Encoded here, so a value JSON cannot encode is the job's own error.
        result = json.dumps(value, default=repr)
    except _Walltime:
        exit_code = None
        failure = ("timeout", f"killed after exceeding its walltime of {spec['walltime']:g}s")
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exit_code:
            failure = ("exit_code", f"exit code {exit_code}")
    except BaseException as exc:  # noqa: BLE001 - the job's own error, reported as such
        traceback.print_exc()
        exit_code = 1
        error_type = type(exc).__name__
        what = f"{error_type}: {exc}".rstrip(": ")
        if not resolved and isinstance(exc, Exception):
            failure = ("could_not_start", f"could not start: {what}")
        else:
            failure = ("exit_code", f"exit code 1: {what}")
    finally:
        saved.restore()
        _forget_user_modules(modules_before, roots)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # No peak memory: the kernel's figure is the whole worker's, not this job's.
    ended: Details = {
        **where,
        "end": time.time(),
        "exit_code": exit_code,
        "error_type": error_type,
        "cpu_seconds": (usage.ru_utime - usage_before.ru_utime)
        + (usage.ru_stime - usage_before.ru_stime),
    }
    if failure is None:
        ended["result"] = limit_result(result)
        return succeeded(**ended)
    return failed(*failure, **ended)


class _Saved:
    """What a job may change in the worker process, to put back afterwards."""

    def __init__(self, environ: Switch) -> None:
        self.environ = environ
        self.cwd = os.getcwd()
        self.path = list(sys.path)
        self.argv = list(sys.argv)
        sys.stdout.flush()
        sys.stderr.flush()
        self.fds = (os.dup(1), os.dup(2))
        self.streams = (sys.stdout, sys.stderr)

    @classmethod
    def take(cls, environ: Switch) -> _Saved:
        return cls(environ)

    def restore(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self.fds[0], 1)
        os.dup2(self.fds[1], 2)
        for fd in self.fds:
            os.close(fd)
        sys.stdout, sys.stderr = self.streams
        self.environ.leave()
        os.chdir(self.cwd)
        sys.path[:] = self.path
        sys.argv = self.argv


def _redirect(out: int, err: int) -> None:
    os.dup2(out, 1)
    os.dup2(err, 2)
    # Fresh text streams on the redirected descriptors, line-buffered like a terminal.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def _arm(walltime: float | None) -> None:
    if walltime:

        def expire(signum: int, frame: Any) -> None:
            raise _Walltime

        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, walltime)
    else:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


def _resolve(function: str) -> Any:
    module_name, _, attribute = function.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _forget_user_modules(before: set[str], roots: list[str]) -> None:
    """Drop modules the job imported from its working directory or shipped code: the next
    job re-imports them fresh, so module-level state cannot leak from one job to the next."""
    raw = tuple(os.path.join(root, "") for root in roots)
    real: tuple[str, ...] | None = None
    for name in set(sys.modules) - before:
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        if not path:
            continue
        if not path.startswith(raw):  # a link into a root, or a module from elsewhere
            real = real or tuple(os.path.join(os.path.realpath(r), "") for r in roots)
            if not os.path.realpath(path).startswith(real):
                continue
        del sys.modules[name]
