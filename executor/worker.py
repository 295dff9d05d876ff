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
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from . import outcome_log

# How long a job may take to exit after SIGTERM before it gets SIGKILL.
KILL_GRACE_SECONDS = 2.0
# The longest pause between checks of walltime and the cancel marker.
MAX_POLL_SECONDS = 0.1

# Runs a function job in a fresh interpreter: reads the call from stdin, imports the
# module from the working directory, and writes the JSON-encoded return value.
# Shipped code goes before the working directory, so the shipped copy is the one imported.
_FUNCTION_RUNNER = """
import importlib, json, os, sys
call = json.load(sys.stdin)
sys.path[:0] = [*call["code"], os.getcwd()]
module_name, _, attribute = call["function"].partition(":")
target = importlib.import_module(module_name)
for part in attribute.split("."):
    target = getattr(target, part)
value = target(*call["args"], **call["kwargs"])
with open(call["result_path"], "w") as out:
    json.dump(value, out, default=repr)
"""


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


def _argv(spec: dict[str, Any], env: dict[str, str]) -> list[str]:
    if spec["kind"] == "function":
        return [sys.executable, "-c", _FUNCTION_RUNNER]
    command = spec["command"]
    if isinstance(command, str):
        words = command.split(" ")
        if _PLAIN_WORDS.match(command) and _is_program(words[0], env.get("PATH", "")):
            return words
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
    # The pilot's batch-job variables (SLURM_JOB_ID, ...) say where the job runs now.
    env.update((k, v) for k, v in os.environ.items() if k.startswith("SLURM_"))
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


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_bundle(
    specs: list[dict[str, Any]], code: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]] | dict[str, Any]:
    """Run several jobs back to back in this worker; each keeps its own outcome.

    One failing job does not stop the others. Once the run is cancelled, jobs not
    yet started are reported as cancelled without starting.

    ``code`` describes the shipped tarballs (see :mod:`executor.delivery`). When
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
            return ready
        trees = [ready[item["sha256"]] for item in code if not item.get("runtime")]
    outcomes = []
    for spec in specs:
        outcome = _run_one(spec, trees)
        outcomes.append(outcome)
        if spec.get("outcome_log"):
            outcome_log.append(
                spec["outcome_log"], {"job": spec["job"], "attempt": spec["attempt"], **outcome}
            )
    return outcomes


def _run_one(spec: dict[str, Any], trees: list[str]) -> dict[str, Any]:
    """One job's outcome, whatever happens: nothing one job does reaches its bundle-mates."""
    cancel_path = spec.get("cancel_path")
    if cancel_path and os.path.exists(cancel_path):
        return {
            "state": "failed", "failure_class": "cancelled", "start": None,
            "end": time.time(), "exit_code": None, "signal": None,
            "message": "the run was cancelled before this job started",
        }  # fmt: skip
    try:
        return run_job({**spec, "code": trees} if trees else spec)
    except Exception:  # a fault of this runtime (or its node) with this job, not the job's own
        import traceback

        return {
            "state": "failed", "failure_class": "worker_error", "start": None,
            "end": time.time(), "exit_code": None, "signal": None,
            "host": socket.gethostname(), "block_id": os.environ.get("PARSL_WORKER_BLOCK_ID"),
            "message": "pilot's worker failed running this job (please report it):\n"
            + traceback.format_exc(limit=8),
        }  # fmt: skip


def _code_failure(exc: BaseException) -> dict[str, Any]:
    return {
        "state": "failed", "failure_class": "code_unavailable", "start": None,
        "end": time.time(), "exit_code": None, "signal": None, "host": socket.gethostname(),
        "message": f"the shipped code is not usable on {socket.gethostname()}: {exc}",
    }  # fmt: skip


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
        "batch_job_id": os.environ.get("SLURM_JOB_ID"),
        "stdout": spec["stdout"],
        "stderr": spec["stderr"],
        "start": time.time(),
    }
    os.makedirs(os.path.dirname(spec["stdout"]), exist_ok=True)
    result_path = spec["stdout"].rsplit(".", 1)[0] + ".result.json"
    if spec.get("in_process") and threading.current_thread() is threading.main_thread():
        from .inprocess import run_function_here

        outcome.update(run_function_here(spec, _environment(spec), result_path))
        if outcome["state"] == "succeeded":
            outcome["result"] = _read_result(result_path)
        return outcome
    stdin = subprocess.PIPE if spec["kind"] == "function" else subprocess.DEVNULL
    # The driver starts pilots with terminal signals blocked; jobs get a normal mask.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        with (
            open(spec["stdout"], "wb", opener=_private) as out,
            open(spec["stderr"], "wb", opener=_private) as err,
        ):
            env = _environment(spec)
            process = subprocess.Popen(
                _argv(spec, env), cwd=spec["workdir"], env=env,
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
            call["code"] = spec.get("code") or []
            process.stdin.write(json.dumps(call).encode())
            process.stdin.close()
        watch = _Watch(process, spec)
        stopped_for = watch.wait()
    finally:
        # Whatever the job left behind in its group goes too.
        _kill_group(process.pid, signal.SIGKILL)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    outcome["end"] = time.time()
    outcome["peak_rss_mb"] = watch.peak_mb
    outcome["cpu_seconds"] = watch.cpu_seconds
    code = watch.returncode
    outcome["exit_code"] = code if code >= 0 else None
    outcome["signal"] = -code if code < 0 else None
    if stopped_for == "timeout":
        outcome.update(
            state="failed",
            failure_class="timeout",
            message=f"killed after exceeding its walltime of {spec['walltime']:g}s",
        )
    elif stopped_for == "out_of_memory":
        outcome.update(
            state="failed",
            failure_class="out_of_memory",
            message=(
                f"killed using {watch.peak_mb:.0f}MB, more than its {spec['memory']}MB request "
                f"(+{spec['memory_tolerance']:.0%} tolerance)"
            ),
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
            message=f"killed by signal {signal_name(-code)}",
        )
    else:
        outcome.update(state="failed", failure_class="exit_code", message=f"exit code {code}")
    return outcome


class _Watch:
    """Waits for a job while enforcing its walltime, memory limit and the run's cancel.

    The job is reaped with ``wait4`` so its CPU time and peak RSS come from the
    kernel; the RSS of its whole process tree is also sampled (psutil, imported only
    when needed), because the kernel's figure is per process, not per tree.
    """

    def __init__(self, process: subprocess.Popen, spec: dict[str, Any]):
        self.process = process
        walltime = spec.get("walltime")
        self.deadline = time.monotonic() + walltime if walltime else None
        self.cancel_path = spec.get("cancel_path")
        memory = spec.get("memory")
        self.limit_mb = memory * (1 + spec.get("memory_tolerance", 0.0)) if memory else None
        self.peak_mb: float | None = None
        self.cpu_seconds: float | None = None
        self.returncode = 0
        self._next_sample = time.monotonic() + 0.002
        # A forked child starts with this worker's resident pages, and the kernel's
        # peak counts them: below this size the kernel figure says nothing of the job.
        self._fork_image_mb = _own_rss_mb()

    def wait(self) -> str | None:
        """Return ``None``, or why the job was stopped: timeout, out_of_memory, cancelled."""
        with _ExitNotifier(self.process.pid) as exited:
            return self._watch(exited)

    def _watch(self, exited: _ExitNotifier) -> str | None:
        # Checks start often (a job may blow its memory early) and slow down to
        # MAX_POLL_SECONDS; the job's exit itself ends any pause at once.
        pause = 0.001
        while not self._reaped():
            exited.wait(pause)
            pause = min(pause * 2, MAX_POLL_SECONDS)
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                return self._stop("timeout")
            if self.cancel_path and os.path.exists(self.cancel_path):
                return self._stop("cancelled")
            if now >= self._next_sample:
                # Jobs with a limit are checked at every poll; others now and then for the peak.
                self._next_sample = now + (0.0 if self.limit_mb else 1.0)
                if self._sample() and self.limit_mb and (self.peak_mb or 0) > self.limit_mb:
                    return self._stop("out_of_memory")
        return None

    def _reaped(self) -> bool:
        try:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; nothing more to learn
            self.process.returncode = self.returncode = self.process.returncode or 0
            return True
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode  # so Popen does not wait for it again
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        kernel_peak = usage.ru_maxrss * 1024 / 1_000_000  # ru_maxrss is in KiB on Linux
        if kernel_peak > self._fork_image_mb * 1.05:
            self.peak_mb = max(self.peak_mb or 0.0, kernel_peak)
        return True

    def _sample(self) -> bool:
        total = _tree_rss_bytes(self.process.pid)
        if total is None:
            return False
        if total:  # a job that already exited (a zombie) has no resident pages
            self.peak_mb = max(self.peak_mb or 0.0, total / 1_000_000)
        return True

    def _stop(self, reason: str) -> str:
        """SIGTERM the job's process group, then SIGKILL it after a grace period."""
        _kill_group(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while not self._reaped():
            if time.monotonic() >= deadline:
                _kill_group(self.process.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)
        return reason


def _tree_rss_bytes(pid: int) -> int | None:
    """Resident bytes of ``pid`` and its descendants; ``None`` if it is gone."""
    try:
        import psutil
    except ImportError:  # a worker with only the shipped runtime: read /proc directly
        return _tree_rss_from_proc(pid)
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for member in tree:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def _tree_rss_from_proc(pid: int) -> int | None:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as handle:
                rss[int(entry)] = int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        # The field after the state letter is the parent's pid.
        children.setdefault(int(fields[1]), []).append(int(entry))
    if pid not in rss:
        return None
    total, frontier = 0, [pid]
    while frontier:
        member = frontier.pop()
        total += rss.get(member, 0)
        frontier.extend(children.get(member, ()))
    return total


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


class _ExitNotifier:
    """Waits up to a given time for a process to exit.

    With a pidfd (Linux 5.3+) a wait ends the moment the job exits, so a short job
    costs no polling delay; elsewhere it simply sleeps.
    """

    def __init__(self, pid: int):
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def wait(self, seconds: float) -> None:
        if self._pidfd is None:
            time.sleep(seconds)
            return
        import select

        select.select([self._pidfd], [], [], seconds)

    def __enter__(self) -> _ExitNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)


def _private(path: str, flags: int) -> int:
    """Open a log file readable by the owner and group only: logs may hold secrets."""
    return os.open(path, flags, 0o640)


def _own_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1_000_000


def _read_result(path: str) -> str | None:
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    # Large results belong in files; keep the database small.
    return text if len(text) <= 65536 else text[:65536]
