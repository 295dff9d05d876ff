"""The run loop: hand ready jobs to Parsl, collect outcomes, retry, block, cancel.

This is the only module that talks to the Parsl DataFlowKernel. The driver keeps the
ready queue itself (:class:`executor.scheduling.Schedule`) and gives Parsl a bounded
number of jobs at a time, so a 200,000-job graph never becomes 200,000 futures.
Every state change is committed to the store before it is shown to anyone.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.errors import SiteError
from executor.graph import JobGraph
from executor.scheduling import Schedule
from executor.sites.base import SiteConfig
from executor.states import FailureClass, JobState, RunState
from executor.store.queries import HEARTBEAT_INTERVAL
from executor.store.recorder import RunRecorder

logger = logging.getLogger(__name__)

# A job may be lost with its pilot this many times before it fails for good.
MAX_TRANSIENT_RETRIES = 3
# How long a cancel waits for running jobs to report that they stopped.
CANCEL_GRACE_SECONDS = 8.0
# How long Parsl's own shutdown may take before the driver kills its processes itself.
PARSL_SHUTDOWN_SECONDS = 30.0


@dataclass(frozen=True)
class RunContext:
    """Where a run lives: what the driver needs besides the graph and the site."""

    run_id: str
    run_dir: Path
    workdir: Path
    environment_file: Path

    @property
    def cancel_marker(self) -> Path:
        return self.run_dir / "cancel"

    def log_paths(self, job: str, attempt: int) -> tuple[str, str]:
        base = self.run_dir / "logs" / job / f"attempt-{attempt}"
        return f"{base}.out", f"{base}.err"


Progress = Callable[[dict[str, dict[str, int]]], None]


class Driver:
    """Runs one run of a graph on a site until every job is final, or it is cancelled.

    Use as a context manager: entering starts Parsl and the first pilots, leaving
    stops them, whatever happened in between.

    Parameters
    ----------
    graph, site, context
        What to run, where, and the run's directories.
    recorder
        The store writer for this run.
    attempts_so_far
        Attempts each job already had (a restart continues the numbering).
    succeeded
        Jobs that already succeeded (a restart); they never run again.
    on_progress
        Called with per-label state counts after each batch of changes is committed.
    """

    def __init__(
        self,
        graph: JobGraph,
        site: SiteConfig,
        context: RunContext,
        recorder: RunRecorder,
        *,
        attempts_so_far: dict[str, int] | None = None,
        succeeded: set[str] | frozenset[str] = frozenset(),
        on_progress: Progress | None = None,
    ):
        self.graph = graph
        self.site = site
        self.context = context
        self.recorder = recorder
        self.schedule = Schedule(graph, succeeded=succeeded)
        self.on_progress = on_progress
        self._attempts = dict(attempts_so_far or {})
        self._retries_used: dict[str, int] = {}
        self._transient_used: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}  # job -> attempt handed to Parsl
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._max_in_flight = 2 * site.worker_slots()
        self._shown: dict[str, JobState] = dict(self.schedule.state)
        self.counts: dict[str, dict[str, int]] = {}
        for name, state in self._shown.items():
            by_state = self.counts.setdefault(graph[name].label, {s.value: 0 for s in JobState})
            by_state[state.value] += 1
        self._dfk: Any = None
        self._app: Any = None

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> Driver:
        if self.context.cancel_marker.exists():
            self.context.cancel_marker.unlink()
        self._start_parsl()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_parsl()

    def _start_parsl(self) -> None:
        from parsl.app.python import PythonApp
        from parsl.config import Config
        from parsl.dataflow.dflow import DataFlowKernel

        from executor.worker import run_job

        executors = self.site.make_executors()
        config = Config(
            executors=executors,
            run_dir=str(self.context.run_dir / "parsl"),
            strategy="none",
            usage_tracking=0,
            initialize_logging=True,
        )
        try:
            with _terminal_signals_blocked():
                self._dfk = DataFlowKernel(config)
                for executor in executors:
                    # Start the first pilots now, not at Parsl's first strategy poll (5 s).
                    executor.scale_out_facade(self.site.init_blocks)
        except Exception as exc:
            self._stop_parsl()
            raise SiteError(f"site {self.site.name!r} could not start its pilots: {exc}") from exc
        self._app = PythonApp(run_job, data_flow_kernel=self._dfk, executors=["pool"])

    def _stop_parsl(self) -> None:
        """Stop Parsl and every pilot, even when Parsl's own shutdown cannot finish.

        Parsl's cleanup talks to the interchange; if that process died (a signal sent
        to the whole process group, say) the cleanup blocks forever. So it runs in a
        thread with a deadline, and whatever is left is killed here directly.
        """
        if self._dfk is None:
            return
        dfk, self._dfk = self._dfk, None
        executors = list(dfk.executors.values())
        if not any(_interchange_dead(e) for e in executors):
            cleanup = threading.Thread(target=dfk.cleanup, name="parsl-cleanup", daemon=True)
            cleanup.start()
            cleanup.join(PARSL_SHUTDOWN_SECONDS)
            if not cleanup.is_alive():
                return
            logger.warning(
                "Parsl did not shut down in %ss; killing its processes", PARSL_SHUTDOWN_SECONDS
            )
        for executor in executors:
            _kill_executor(executor)

    def _parsl_broken(self) -> bool:
        return self._dfk is not None and any(
            _interchange_dead(e) for e in self._dfk.executors.values()
        )

    def check_parsl(self) -> None:
        """Raise :class:`SiteError` if a Parsl interchange died under the driver."""
        for executor in self._dfk.executors.values() if self._dfk else ():
            if _interchange_dead(executor):
                code = executor.interchange_proc.returncode
                raise SiteError(
                    f"Parsl's interchange for pool {executor.label!r} exited (code {code}); "
                    f"see {self.context.run_dir / 'parsl'} for its log, then `pilot restart`"
                )

    # -- the loop -------------------------------------------------------------------
    def request_cancel(self) -> None:
        """Ask the loop to stop: safe from signal handlers and other threads."""
        self._cancel.set()
        self._done.put(None)  # wake the loop; SimpleQueue.put is safe in a signal handler

    def run(self) -> RunState:
        """Run to the end; return the run's final state (also recorded in the store)."""
        for name in self.schedule.initially_ready():
            self._record(name, JobState.READY)
        self._commit()
        last_heartbeat = time.monotonic()
        while not self.schedule.finished and not self._cancel.is_set():
            self._submit_ready()
            self._collect(timeout=HEARTBEAT_INTERVAL)
            self._commit()
            if self.context.cancel_marker.exists():  # `pilot cancel` from another host
                self.request_cancel()
            self.check_parsl()
            if time.monotonic() - last_heartbeat > HEARTBEAT_INTERVAL / 2:
                self.recorder.heartbeat()
                last_heartbeat = time.monotonic()
        if self._cancel.is_set() and not self.schedule.finished:
            self._stop_everything()
            final = RunState.CANCELLED
        elif any(self.schedule.state[n] is not JobState.SUCCEEDED for n in self.graph.names):
            final = RunState.FAILED
        else:
            final = RunState.SUCCEEDED
        self.recorder.run_state(final)
        self._report_progress()
        return final

    def _submit_ready(self) -> None:
        room = self._max_in_flight - len(self._in_flight)
        for name in self.schedule.pop_ready(room):
            attempt = self._attempts.get(name, 0) + 1
            self._attempts[name] = attempt
            self._in_flight[name] = attempt
            self._record(name, JobState.RUNNING, attempts=attempt)
            self.recorder.attempt_submitted(name, attempt, time.time())
            future = self._app(self._spec(name, attempt))
            future.add_done_callback(
                lambda f, name=name, attempt=attempt: self._done.put((name, attempt, f))
            )

    def _spec(self, name: str, attempt: int) -> dict[str, Any]:
        job = self.graph[name]
        stdout, stderr = self.context.log_paths(name, attempt)
        return {
            "run_id": self.context.run_id,
            "run_dir": str(self.context.run_dir),
            "job": name,
            "attempt": attempt,
            "kind": job.kind,
            "command": list(job.command) if isinstance(job.command, tuple) else job.command,
            "function": job.function,
            "args": list(job.args),
            "kwargs": dict(job.kwargs),
            "environment": dict(job.environment),
            "environment_file": str(self.context.environment_file),
            "workdir": str(self.context.workdir),
            "walltime": job.walltime,
            "stdout": stdout,
            "stderr": stderr,
            "cancel_path": str(self.context.cancel_marker),
        }

    def _collect(self, timeout: float) -> None:
        """Wait for at least one outcome (or a wake-up), then take all that are waiting."""
        try:
            item = self._done.get(timeout=timeout)
        except queue.Empty:
            return
        while item is not None or not self._done.empty():
            if item is not None:
                self._settle(*item)
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                break

    def _settle(self, name: str, attempt: int, future: Any) -> None:
        if self._in_flight.get(name) != attempt:
            return  # already settled (e.g. given up on during a cancel)
        del self._in_flight[name]
        outcome = _outcome_of(future)
        self.recorder.attempt_finished(name, attempt, outcome)
        if outcome["state"] == "succeeded":
            self._record(name, JobState.SUCCEEDED)
            for child in self.schedule.succeed(name):
                self._record(child, JobState.READY)
            return
        failure = FailureClass(outcome["failure_class"])
        job = self.graph[name]
        if failure is FailureClass.CANCELLED or self._cancel.is_set():
            self.schedule.cancel(name)
            self._record(name, JobState.CANCELLED)
        elif failure.transient and self._transient_used.get(name, 0) < MAX_TRANSIENT_RETRIES:
            self._transient_used[name] = self._transient_used.get(name, 0) + 1
            self.schedule.requeue(name)
            self._record(name, JobState.READY, detail=f"{failure}: retrying (not counted)")
        elif not failure.transient and self._retries_used.get(name, 0) < job.retries:
            used = self._retries_used[name] = self._retries_used.get(name, 0) + 1
            self.schedule.requeue(name)
            self._record(
                name, JobState.READY, detail=f"{outcome['message']}; retry {used}/{job.retries}"
            )
        else:
            self._record(name, JobState.FAILED, detail=outcome["message"])
            for blocked in self.schedule.fail(name):
                self._record(blocked, JobState.BLOCKED, detail=f"ancestor {name} failed")

    def _stop_everything(self) -> None:
        """Cancel: start nothing new, stop running jobs, record what happened to each."""
        for name in self.schedule.cancel_unstarted():
            self._record(name, JobState.CANCELLED)
        self.context.cancel_marker.touch()
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while self._in_flight and time.monotonic() < deadline and not self._parsl_broken():
            self._collect(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
        for name, attempt in list(self._in_flight.items()):
            del self._in_flight[name]
            self.recorder.attempt_finished(name, attempt, {
                "state": "failed", "end": time.time(),
                "failure_class": FailureClass.CANCELLED.value,
                "message": "the run was cancelled; the worker did not report back in time",
            })  # fmt: skip
            self.schedule.cancel(name)
            self._record(name, JobState.CANCELLED)
        self._commit()

    # -- bookkeeping ----------------------------------------------------------------
    def _record(
        self, name: str, state: JobState, *, detail: str | None = None, attempts: int | None = None
    ) -> None:
        label = self.graph[name].label
        self.counts[label][self._shown[name].value] -= 1
        self.counts[label][state.value] += 1
        self._shown[name] = state
        self.recorder.job_state(name, state, detail=detail, attempts=attempts)

    def _commit(self) -> None:
        if self.recorder.pending:
            self.recorder.flush()
            self._report_progress()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress({label: dict(c) for label, c in self.counts.items()})

    @contextmanager
    def signals_cancel(self) -> Iterator[None]:
        """While inside, SIGINT/SIGTERM/SIGHUP cancel the run cleanly; a second SIGINT forces."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._cancel.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request_cancel()

        previous = {
            sig: signal.signal(sig, handler)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _outcome_of(future: Any) -> dict[str, Any]:
    """The worker's report, or a pilot-level failure when the task never reported."""
    try:
        return future.result()
    except Exception as exc:  # the boundary with Parsl: classify, never crash the loop
        lost = type(exc).__name__ in ("ManagerLost", "WorkerLost")
        failure = FailureClass.PILOT_LOST if lost else FailureClass.SUBMIT_ERROR
        logger.warning("task failed in Parsl: %r", exc)
        return {
            "state": "failed", "failure_class": failure.value, "end": time.time(),
            "message": f"{type(exc).__name__}: {exc}", "exit_code": None, "signal": None,
        }  # fmt: skip


@contextmanager
def _terminal_signals_blocked() -> Iterator[None]:
    """Start Parsl's processes with SIGINT and SIGHUP blocked (the mask is inherited).

    A terminal's Ctrl-C or hang-up goes to every process in the foreground group;
    the interchange would die of it mid-shutdown. The driver handles these signals
    and stops Parsl in order. SIGTERM stays deliverable: Parsl stops its processes
    with it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _interchange_dead(executor: Any) -> bool:
    process = getattr(executor, "interchange_proc", None)
    return process is not None and process.poll() is not None


def _kill_executor(executor: Any) -> None:
    """Cancel every block through the provider and kill the interchange."""
    job_ids = list(getattr(executor, "blocks_to_job_id", {}).values())
    provider = getattr(executor, "provider", None)
    if job_ids and provider is not None:
        try:
            provider.cancel(job_ids)
        except Exception:  # best effort: report and go on stopping the rest
            logger.exception("could not cancel blocks %s", job_ids)
    process = getattr(executor, "interchange_proc", None)
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def pid_start_time(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).create_time()
