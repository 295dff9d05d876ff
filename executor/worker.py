"""What runs inside a pilot: one job attempt, start to finish.

This module is imported by every Parsl worker, so it imports only the standard
library and starts fast. It returns plain dicts (no pilot classes) so results
unpickle in the driver without surprises.

Each job runs in its own session and process group: a walltime, a cancel or the
worker's own termination kills the job's whole process tree, not just its first
process (Parsl's bash-app walltime leaves the process running, Parsl issue #2824).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

# How long a job may take to exit after SIGTERM before it gets SIGKILL.
KILL_GRACE_SECONDS = 2.0
# The longest pause between checks of walltime and the cancel marker.
MAX_POLL_SECONDS = 0.1

# Runs a function job in a fresh interpreter: reads the call from stdin, imports the
# module from the working directory, and writes the JSON-encoded return value.
_FUNCTION_RUNNER = """
import importlib, json, os, sys
call = json.load(sys.stdin)
sys.path.insert(0, os.getcwd())
module_name, _, attribute = call["function"].partition(":")
target = importlib.import_module(module_name)
for part in attribute.split("."):
    target = getattr(target, part)
value = target(*call["args"], **call["kwargs"])
with open(call["result_path"], "w") as out:
    json.dump(value, out, default=repr)
"""


def _argv(spec: dict[str, Any]) -> list[str]:
    if spec["kind"] == "function":
        return [sys.executable, "-c", _FUNCTION_RUNNER]
    command = spec["command"]
    if isinstance(command, str):
        return ["bash", "-c", command]
    return list(command)


# The submit-time environment, read once per worker process per run.
_BASE_ENVIRONMENTS: dict[str, dict[str, str]] = {}


def _base_environment(path: str | None) -> dict[str, str]:
    """The environment saved at submit time, so a restart runs jobs in the same one."""
    if not path:
        return dict(os.environ)
    if path not in _BASE_ENVIRONMENTS:
        try:
            with open(path) as handle:
                _BASE_ENVIRONMENTS[path] = json.load(handle)
        except (OSError, ValueError):
            return dict(os.environ)  # no shared filesystem: the pilot's own environment
    return dict(_BASE_ENVIRONMENTS[path])


def _environment(spec: dict[str, Any]) -> dict[str, str]:
    env = _base_environment(spec.get("environment_file"))
    env.update(spec.get("environment") or {})
    env.update(
        PILOT_RUN_ID=spec["run_id"],
        PILOT_JOB_NAME=spec["job"],
        PILOT_ATTEMPT=str(spec["attempt"]),
        PILOT_RUN_DIR=spec["run_dir"],
    )
    return env


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the job's process group, then SIGKILL it after a grace period."""
    _kill_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(process.pid, signal.SIGKILL)
    process.wait()


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one attempt of one job and describe how it went.

    Parameters
    ----------
    spec
        Built by the driver: ``kind``, ``command`` or ``function``/``args``/``kwargs``,
        ``workdir``, ``environment``, ``walltime``, ``stdout``/``stderr`` paths and the
        ``cancel_path`` marker whose appearance means "stop now".

    Returns
    -------
    dict
        ``state`` (``succeeded``/``failed``), ``exit_code``, ``signal``,
        ``failure_class``, ``message``, ``start``, ``end``, ``host`` and, for
        function jobs, ``result`` (the JSON-encoded return value).
    """
    outcome: dict[str, Any] = {
        "host": socket.gethostname(),
        # Set by Parsl's worker pool: which pilot (block) ran this attempt.
        "block_id": os.environ.get("PARSL_WORKER_BLOCK_ID"),
        "stdout": spec["stdout"],
        "stderr": spec["stderr"],
        "start": time.time(),
    }
    os.makedirs(os.path.dirname(spec["stdout"]), exist_ok=True)
    result_path = spec["stdout"].rsplit(".", 1)[0] + ".result.json"
    stdin = subprocess.PIPE if spec["kind"] == "function" else subprocess.DEVNULL
    # The driver starts pilots with terminal signals blocked; jobs get a normal mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        with open(spec["stdout"], "wb") as out, open(spec["stderr"], "wb") as err:
            process = subprocess.Popen(
                _argv(spec), cwd=spec["workdir"], env=_environment(spec),
                stdin=stdin, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
    except OSError as exc:
        outcome.update(
            state="failed",
            end=time.time(),
            exit_code=None,
            signal=None,
            failure_class="exit_code",
            message=f"could not start the job: {exc}",
        )
        return outcome

    previous_handler = _forward_termination(process)
    try:
        if process.stdin is not None:
            call = {key: spec[key] for key in ("function", "args", "kwargs")}
            call["result_path"] = result_path
            process.stdin.write(json.dumps(call).encode())
            process.stdin.close()
        stopped_for = _wait(process, spec)
    finally:
        # Whatever the job left behind in its group goes too.
        _kill_group(process.pid, signal.SIGKILL)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    outcome["end"] = time.time()
    code = process.returncode
    outcome["exit_code"] = code if code >= 0 else None
    outcome["signal"] = -code if code < 0 else None
    if stopped_for == "timeout":
        outcome.update(
            state="failed",
            failure_class="timeout",
            message=f"killed after exceeding its walltime of {spec['walltime']:g}s",
        )
    elif stopped_for == "cancelled":
        outcome.update(state="failed", failure_class="cancelled", message="the run was cancelled")
    elif code == 0:
        outcome.update(state="succeeded", failure_class=None, message=None)
        if spec["kind"] == "function":
            outcome["result"] = _read_result(result_path)
    elif code < 0:
        outcome.update(
            state="failed",
            failure_class="signal",
            message=f"killed by signal {signal.Signals(-code).name}",
        )
    else:
        outcome.update(state="failed", failure_class="exit_code", message=f"exit code {code}")
    return outcome


def _wait(process: subprocess.Popen, spec: dict[str, Any]) -> str | None:
    """Wait for the job; return ``"timeout"`` or ``"cancelled"`` if it had to be stopped."""
    walltime = spec.get("walltime")
    deadline = time.monotonic() + walltime if walltime else None
    cancel_path = spec.get("cancel_path")
    # Short jobs are noticed quickly; long ones are polled at most every MAX_POLL_SECONDS.
    pause = 0.002
    while True:
        try:
            process.wait(timeout=pause)
            return None
        except subprocess.TimeoutExpired:
            pass
        pause = min(pause * 2, MAX_POLL_SECONDS)
        if deadline is not None and time.monotonic() >= deadline:
            _stop(process)
            return "timeout"
        if cancel_path and os.path.exists(cancel_path):
            _stop(process)
            return "cancelled"


def _forward_termination(process: subprocess.Popen):
    """Make SIGTERM of this worker kill the job's group too (a pilot being shut down).

    Returns the previous handler, or ``None`` when handlers cannot be set (not the
    main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        _kill_group(process.pid, signal.SIGKILL)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return signal.signal(signal.SIGTERM, terminate)


def _read_result(path: str) -> str | None:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    # Large results belong in files; keep the database small.
    return text if len(text) <= 65536 else text[:65536]
