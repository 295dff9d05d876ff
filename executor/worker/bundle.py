"""What runs inside a pilot: one job attempt, start to finish.

This module is imported by every Parsl worker, so it imports only the standard
library and starts fast. It takes a :class:`~executor.worker.spec.JobSpec` and returns
an :class:`~executor.worker.outcome.Outcome`, both plain dicts (no pilot classes), so
they unpickle on either side without surprises.

Each job runs in its own session and process group: a walltime, a cancel or the
worker's own termination kills the job's whole process tree, not just its first
process (Parsl's bash-app walltime leaves the process running, Parsl issue #2824).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, cast

from . import outcome_log
from .capture import Capture, read_scratch, scratch_file
from .environ import own_environment, slurm_variables
from .outcome import (
    STARTED,
    CodeMissing,
    Details,
    LoggedOutcome,
    Outcome,
    StartRecord,
    failed,
    limit_result,
    succeeded,
)
from .spec import JobSpec
from .watch import CancelMarker, Watch, kill_group
from .wire import PackedList

# Runs a function job in a fresh interpreter: reads the call from stdin, imports the
# module from the working directory, and writes the JSON-encoded return value.
# Shipped code goes before the working directory, so the shipped copy is the one imported.
_FUNCTION_RUNNER = """
import importlib, json, os, sys, traceback
call = json.load(sys.stdin)
sys.path[:0] = [*call["code"], os.getcwd()]
def hand_back(fd, value):
    with os.fdopen(fd, "w") as out:
        json.dump(value, out, default=repr)
def fail(stage, exc):
    traceback.print_exc()
    hand_back(call["error_fd"], {"stage": stage, "type": type(exc).__name__, "message": str(exc)})
    sys.exit(1)
try:
    module_name, _, attribute = call["function"].partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
except Exception as exc:
    fail("resolve", exc)
try:
    value = target(*call["args"], **call["kwargs"])
except Exception as exc:
    fail("call", exc)
hand_back(call["result_fd"], value)
"""
# The runner hands back the JSON-encoded return value on one descriptor and, only when
# the function fails, the error on the other (unnamed scratch files of the worker's
# node, :mod:`executor.worker.capture`: nothing is created in the run directory):
# ``stage`` is ``resolve`` (the module or the name could not be found: the job never
# started) or ``call`` (the function raised), with the exception's type and message.
# SystemExit passes through: its code is the job's exit code.


# A command string with nothing for a shell to do (no quotes, variables, globs,
# redirections or operators) whose first word is a program (not a shell builtin such
# as `exit` or `cd`) is run directly: starting bash would cost more than many jobs take.
_PLAIN_WORDS = re.compile(r"^[\w./=:,+@%-]+(?: [\w./=:,+@%-]+)*$")
_PROGRAMS: dict[tuple[str, str], bool] = {}


def _is_program(word: str, path: str) -> bool:
    if (word, path) not in _PROGRAMS:
        import shutil

        _PROGRAMS[(word, path)] = shutil.which(word, path=path) is not None
    return _PROGRAMS[(word, path)]


def _argv(spec: JobSpec, env: dict[str, str]) -> list[str]:
    if spec["kind"] == "function":
        return [sys.executable, "-c", _FUNCTION_RUNNER]
    command = spec["command"]
    if isinstance(command, str):
        words = command.split(" ")
        if _PLAIN_WORDS.match(command) and _is_program(words[0], env.get("PATH", "")):
            return words
        return ["bash", "-c", command]
    if command is None:  # the driver validates every job: never sent
        raise ValueError(f"shell job {spec['job']!r} has no command")
    return list(command)


# The submit-time environment, read once per worker process per run.
_BASE_ENVIRONMENTS: dict[str, dict[str, str]] = {}


def _base_environment(path: str | None) -> dict[str, str]:
    """The environment saved at submit time, so a restart runs jobs in the same one."""
    if not path:
        return dict(own_environment())
    if path not in _BASE_ENVIRONMENTS:
        try:
            with open(path) as handle:
                _BASE_ENVIRONMENTS[path] = json.load(handle)
        except (OSError, ValueError):
            return dict(own_environment())  # no shared filesystem: the pilot's own
    return dict(_BASE_ENVIRONMENTS[path])


def _environment(spec: JobSpec) -> dict[str, str]:
    env = _base_environment(spec.get("environment_file"))
    # The pilot's batch-job variables (SLURM_JOB_ID, ...) say where the job runs now.
    env.update(slurm_variables())
    env.update(spec.get("environment") or {})
    env.update(
        PILOT_RUN_ID=spec["run_id"],
        PILOT_JOB_NAME=spec["job"],
        PILOT_ATTEMPT=str(spec["attempt"]),
        PILOT_RUN_DIR=spec["run_dir"],
    )
    if spec.get("code"):
        from .codecache import with_code_on_paths

        with_code_on_paths(env, spec["code"])
    return env


def signal_name(number: int) -> str:
    """``SIGKILL``; ``SIGRTMIN+6`` for a real-time signal, which has no name of its own."""
    try:
        return signal.Signals(number).name
    except ValueError:
        low, high = getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1)
        return f"SIGRTMIN+{number - low}" if low <= number <= high else f"signal {number}"


def run_bundle(
    specs: list[JobSpec], code: list[dict[str, Any]] | None = None
) -> list[Outcome] | CodeMissing:
    """Run several jobs back to back in this worker; each keeps its own outcome.

    One failing job does not stop the others. Once the run is cancelled, jobs not
    yet started are reported as cancelled without starting.

    ``code`` describes the shipped tarballs (see :mod:`executor.driver.delivery`). When
    this node lacks one and the bundle did not bring all of it, nothing runs and
    the answer is ``{"code_missing": {sha256: [chunks held]}}``: the driver sends
    the bundle again with the rest.
    """
    trees: list[str] = []
    if code:
        from . import codecache

        try:
            ready = codecache.ready_trees(code)
        except (codecache.CodeUnavailable, OSError, EOFError, ValueError) as exc:
            return [_code_failure(exc) for _ in specs]
        if "code_missing" in ready:
            return cast(CodeMissing, ready)
        trees = [ready[item["sha256"]] for item in code if not item.get("runtime")]
    outcomes: list[Outcome] = []
    markers: dict[str | None, CancelMarker] = {}
    for spec in specs:
        path = spec.get("cancel_path")
        marker = markers.get(path) or markers.setdefault(path, CancelMarker(path))
        outcome = _run_one(spec, trees, marker)
        outcomes.append(outcome)
        log = spec.get("outcome_log")
        if log:
            record: LoggedOutcome = {"job": spec["job"], "attempt": spec["attempt"], **outcome}
            outcome_log.append(log, record)
    return PackedList(outcomes)  # Parsl pickles it back by C, not by dill's pure Python


def _run_one(spec: JobSpec, trees: list[str], cancel: CancelMarker) -> Outcome:
    """One job's outcome, whatever happens: nothing one job does reaches its bundle-mates."""
    if cancel.present():
        return failed("cancelled", "the run was cancelled before this job started")
    try:
        return run_job({**spec, "code": trees} if trees else spec, cancel)
    except Exception:  # a fault of this runtime (or its node) with this job, not the job's own
        import traceback

        return failed(
            "worker_error",
            "pilot's worker failed running this job (please report it):\n"
            + traceback.format_exc(limit=8),
            host=socket.gethostname(),
            block_id=os.environ.get("PARSL_WORKER_BLOCK_ID"),
        )


def _code_failure(exc: BaseException) -> Outcome:
    host = socket.gethostname()
    return failed("code_unavailable", f"the shipped code is not usable on {host}: {exc}", host=host)


def run_job(spec: JobSpec, cancel: CancelMarker | None = None) -> Outcome:
    """Run one attempt of one job and describe how it went.

    Parameters
    ----------
    spec
        Built by the driver (:func:`executor.driver.context.job_spec`).
    cancel
        The run's cancel marker, shared by a bundle's jobs (default: this job's own).

    Returns
    -------
    Outcome
        Every field of :class:`~executor.worker.outcome.Outcome`; ``result`` (the
        JSON-encoded return value) for a function job that succeeded; ``stdout`` and
        ``stderr`` name only logs the job wrote to (the others are never created:
        :mod:`executor.worker.capture`).
    """
    where: Details = {
        "start": time.time(),
        "host": socket.gethostname(),
        # Set by Parsl's worker pool: which pilot (block) ran this attempt.
        "block_id": os.environ.get("PARSL_WORKER_BLOCK_ID"),
        "batch_job_id": os.environ.get("SLURM_JOB_ID"),
        "stdout": spec["stdout"],
        "stderr": spec["stderr"],
    }
    _record_start(spec, where)
    with Capture(spec["stdout"], spec["stderr"]) as capture:
        outcome = _run_captured(spec, where, capture.fds, cancel)
        # The logs the job wrote to; ``None`` for one it left empty (no file exists).
        outcome["stdout"], outcome["stderr"] = capture.finish()
    return outcome


def _run_captured(
    spec: JobSpec, where: Details, fds: tuple[int, int], cancel: CancelMarker | None
) -> Outcome:
    if spec.get("in_process") and threading.current_thread() is threading.main_thread():
        from .inprocess import run_function_here

        return run_function_here(spec, _environment(spec), where, fds)
    # A function job hands back its result and error on descriptors of its own.
    handed = (scratch_file(), scratch_file()) if spec["kind"] == "function" else ()
    try:
        return _run_process(spec, where, fds, handed, cancel)
    finally:
        for fd in handed:
            os.close(fd)


def _run_process(
    spec: JobSpec,
    where: Details,
    fds: tuple[int, int],
    handed: tuple[int, ...],
    cancel: CancelMarker | None,
) -> Outcome:
    stdin = subprocess.PIPE if spec["kind"] == "function" else subprocess.DEVNULL
    # The driver starts pilots with terminal signals blocked; jobs get a normal mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        env = _environment(spec)
        process = subprocess.Popen(
            _argv(spec, env), cwd=spec["workdir"], env=env, stdin=stdin,
            stdout=fds[0], stderr=fds[1], start_new_session=True, pass_fds=handed,
        )  # fmt: skip
    except OSError as exc:
        # No program, not executable, no working directory: the job never started.
        never_ran: Details = {**where, "error_type": type(exc).__name__}
        return failed("could_not_start", f"could not start: {exc}", **never_ran)

    previous_handler = _forward_termination(process)
    try:
        if process.stdin is not None:
            call = {
                "function": spec["function"], "args": spec["args"], "kwargs": spec["kwargs"],
                "result_fd": handed[0], "error_fd": handed[1],
                "code": spec.get("code") or [],
            }  # fmt: skip
            process.stdin.write(json.dumps(call).encode())
            process.stdin.close()
        watch = Watch(process, spec, cancel)
        stopped_for = watch.wait()
    finally:
        # Whatever the job left behind in its group goes too.
        kill_group(process.pid, signal.SIGKILL)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    code = watch.returncode
    ended: Details = {
        **where,
        "end": time.time(),
        "exit_code": code if code >= 0 else None,
        "signal": -code if code < 0 else None,
        "peak_rss_mb": watch.peak_mb,
        "cpu_seconds": watch.cpu_seconds,
    }
    if stopped_for == "timeout":
        return failed(
            "timeout", f"killed after exceeding its walltime of {spec['walltime']:g}s", **ended
        )
    if stopped_for == "out_of_memory":
        return failed(
            "out_of_memory",
            f"killed using {watch.peak_mb:.0f}MB, more than its {spec['memory']}MB request "
            f"(+{spec['memory_tolerance']:.0%} tolerance)",
            **ended,
        )
    if stopped_for == "cancelled":
        return failed("cancelled", "the run was cancelled", **ended)
    if code == 0:
        if spec["kind"] == "function":
            ended["result"] = limit_result(read_scratch(handed[0]))
        return succeeded(**ended)
    if code < 0:
        return failed("signal", f"killed by signal {signal_name(-code)}", **ended)
    if spec["kind"] == "function":
        error = _read_error(handed[1])
        if error:
            return _function_failure(error["stage"] == "resolve", error, ended)
    return failed("exit_code", f"exit code {code}", **ended)


def _function_failure(unresolved: bool, error: dict[str, str], ended: Details) -> Outcome:
    """A function job's failure, by exception type: "could not start" when its module or
    name could not be resolved, else the exception the function raised."""
    what = f"{error['type']}: {error['message']}".rstrip(": ")
    typed: Details = {**ended, "error_type": error["type"]}
    if unresolved:
        return failed("could_not_start", f"could not start: {what}", **typed)
    return failed("exit_code", f"exit code {ended.get('exit_code')}: {what}", **typed)


def _read_error(fd: int) -> dict[str, str] | None:
    try:
        error = json.loads(read_scratch(fd) or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(error, dict) or not {"stage", "type", "message"} <= error.keys():
        return None
    return {key: str(error[key])[:2000] for key in ("stage", "type", "message")}


def _record_start(spec: JobSpec, where: Details) -> None:
    """Append the attempt's start to the outcome log: the driver then shows it running."""
    log = spec.get("outcome_log")
    if not log:
        return
    record: StartRecord = {
        "event": STARTED, "job": spec["job"], "attempt": spec["attempt"],
        "start": where["start"] or time.time(), "host": where["host"],
        "block_id": where["block_id"], "batch_job_id": where["batch_job_id"],
        "stdout": where["stdout"], "stderr": where["stderr"],
    }  # fmt: skip
    outcome_log.append(log, record)


def _forward_termination(process: subprocess.Popen):
    """Make SIGTERM of this worker kill the job's group too (a pilot being shut down).

    Returns the previous handler, or ``None`` when handlers cannot be set (not the
    main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        kill_group(process.pid, signal.SIGKILL)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return signal.signal(signal.SIGTERM, terminate)
