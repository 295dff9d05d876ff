"""Parsl's processes as the driver sees them: start them shielded, stop them for sure.

Parsl's interchange is a child of the driver and its worker pools run detached; a
terminal's Ctrl-C reaches the whole foreground process group, and Parsl's own
shutdown blocks forever if the interchange is already gone. These helpers keep
both problems out of the driver's loop.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from executor.model.states import FailureClass
from executor.worker.lean_parsl import SkipForParsl, skip_parsl_type_checks
from executor.worker.outcome import CodeMissing, Outcome, failed

logger = logging.getLogger(__name__)


# `import parsl` also imports the Kubernetes client, the Globus Compute SDK, boto3 and
# SQLAlchemy when they are installed, for backends these sites never use: about 0.9 s
# of its 1.3 s here (`python -X importtime`), at every start of a driver, and again in
# each of Parsl's own processes (:mod:`executor.worker.lean_parsl`). Other backends
# (plugins too) get Parsl whole.
_LEAN_BACKENDS = ("local", "slurm")
_LEAN = {"enabled": False}


def import_lean() -> None:
    """In this process, import Parsl without the optional modules its site does not use.

    For processes that drive one run and exit (``pilot submit``, ``pilot restart``):
    Parsl remembers for good that a skipped module is absent, so a later run of another
    site in the same process could not use it.
    """
    _LEAN["enabled"] = True


def import_parsl(site: Any) -> None:
    """Import what a :class:`ParslSession` uses (once per process; lean when asked)."""
    if not _LEAN["enabled"] or getattr(site, "backend", None) not in _LEAN_BACKENDS:
        return
    if "parsl.dataflow.dflow" in sys.modules:
        return
    skip_parsl_type_checks()  # for good: this process drives one run, pilot's own code
    finder = SkipForParsl()
    sys.meta_path.insert(0, finder)
    try:
        import parsl.app.python  # noqa: F401
        import parsl.dataflow.dflow  # noqa: F401
        import parsl.executors  # noqa: F401
        import parsl.providers  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


@contextmanager
def terminal_signals_blocked() -> Iterator[None]:
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


def interchange_dead(executor: Any) -> bool:
    process = getattr(executor, "interchange_proc", None)
    return process is not None and process.poll() is not None


def kill_executor(executor: Any) -> None:
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


_LEAN_LAUNCHER = ("-m", "executor.worker.lean_parsl")


def launch_lean(executor: Any, backend: str) -> None:
    """Start the executor's interchange, and on a local site its worker pools, through
    :mod:`executor.worker.lean_parsl`: each of Parsl's processes then boots without the
    optional packages it never uses.

    Only processes that run with this interpreter (which has pilot): the interchange
    always; a local site's pool; a Slurm pool when the node, after ``worker_init``,
    would run this interpreter's own pool script anyway (checked there, at the pilot's
    start: a node that sees another environment runs its pool as before). A command of
    another shape (a site's own) is left as it is.
    """
    command = list(getattr(executor, "interchange_launch_cmd", None) or ())
    if command and command[-1].endswith("interchange.py"):
        if len(command) >= 2 and command[-2] == sys.executable:
            # The lifeline trampoline execs `python interchange.py`: exec the launcher.
            executor.interchange_launch_cmd = [*command[:-1], *_LEAN_LAUNCHER, command[-1]]
        elif len(command) == 1:
            executor.interchange_launch_cmd = [sys.executable, *_LEAN_LAUNCHER, command[0]]
    launch = getattr(executor, "launch_cmd", None)
    if not (isinstance(launch, str) and launch.startswith("process_worker_pool.py ")):
        return
    # A format template: braces in the interpreter's path must stay literal.
    python = _template_literal(shlex.quote(sys.executable))
    if backend == "local":
        executor.launch_cmd = f"{python} {' '.join(_LEAN_LAUNCHER)} {launch}"
    elif backend == "slurm" and (script := _own_pool_script()) is not None:
        # On the node, after `worker_init`, the pool is lean only when the pool Parsl
        # would run there is this interpreter's own (the same file, so the same
        # interpreter, Parsl and pilot); anything else runs as it would have.
        here = _template_literal(shlex.quote(script))
        rest = launch.removeprefix("process_worker_pool.py ")
        executor.launch_cmd = (
            f'if [ "$(command -v process_worker_pool.py)" = {here} ]; then '
            f"exec {python} {' '.join(_LEAN_LAUNCHER)} {here} {rest}; fi; exec {launch}"
        )


def _template_literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _own_pool_script() -> str | None:
    """The ``process_worker_pool.py`` on this process's PATH, when it runs with this very
    interpreter (its ``#!`` line names it); else ``None``."""
    script = shutil.which("process_worker_pool.py")
    if script is None:
        return None
    try:
        with open(script, "rb") as handle:
            first = handle.readline(4096).decode(errors="replace")
    except OSError:
        return None
    interpreter = first[2:].strip() if first.startswith("#!") else ""
    if not interpreter or " " in interpreter:  # `#!/usr/bin/env python3`: not provably ours
        return None
    # The same file in the same directory: a venv's `python` links to its base
    # interpreter, which is the same file but not the same environment.
    try:
        same = os.path.samefile(interpreter, sys.executable)
    except OSError:
        return None
    here = os.path.dirname(os.path.abspath(sys.executable))
    if not same or os.path.dirname(os.path.abspath(interpreter)) != here:
        return None
    return os.path.abspath(script)


class _EarlyStartFailed(Exception):
    """Parsl did not start with a worker port chosen ahead (its ``__cause__`` says why)."""


def start_blocks_with_interchange(executor: Any, blocks: int) -> bool:
    """Make ``executor.start()`` launch its first ``blocks`` as it launches its interchange.

    Parsl starts a HighThroughputExecutor's interchange, waits until it has bound a port
    for workers, and only then can a worker pool be told where to connect: the pool's
    boot (seconds: it imports Parsl, then starts its workers, which import it again)
    comes after the interchange's. With the port chosen here first, the pool starts at
    the same moment as the interchange, and its connection waits (ZeroMQ retries) until
    the interchange listens. Returns ``False``, changing nothing, for an executor that is
    not one Parsl starts this way, has a worker port set already, or starts no blocks.
    """
    launch_interchange = getattr(executor, "_start_local_interchange_process", None)
    if blocks <= 0 or launch_interchange is None or executor.worker_port is not None:
        return False
    try:
        executor.worker_port = free_port(executor.worker_port_range or (54000, 55000))
    except OSError:  # none free: Parsl's interchange chooses, as without this
        return False
    compose = executor.initialize_scaling

    def launch_both() -> None:
        compose()  # the pool's command line, which needs only the port
        executor.initialize_scaling = lambda: None  # start() composes it after this
        executor.scale_out_facade(blocks)
        launch_interchange()

    executor._start_local_interchange_process = launch_both
    return True


def free_port(port_range: tuple[int, int]) -> int:
    """A TCP port in ``port_range`` that nothing listens on now, on any address.

    The interchange binds it a moment later; in between another process could take it
    (then the interchange cannot start and the site fails to start, as for any port
    conflict). Ports are tried in random order, as Parsl's own choice does.
    """
    import random
    import socket

    low, high = port_range
    candidates = random.sample(range(low, high), min(100, high - low))
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port for workers in {low}-{high}")


def stop_parsl(dfk: Any, timeout: float) -> None:
    """Stop a DataFlowKernel and every pilot, even when Parsl's own shutdown cannot finish.

    Parsl's cleanup talks to the interchange; if that process died (a signal sent to
    the whole process group, say) the cleanup blocks forever. So it runs in a thread
    with a deadline, and whatever is left is killed here directly.
    """
    executors = list(dfk.executors.values())
    if not any(interchange_dead(e) for e in executors):
        cleanup = threading.Thread(target=dfk.cleanup, name="parsl-cleanup", daemon=True)
        cleanup.start()
        cleanup.join(timeout)
        if not cleanup.is_alive():
            return
        logger.warning("Parsl did not shut down in %ss; killing its processes", timeout)
    for executor in executors:
        kill_executor(executor)


def outcomes_of(future: Any, jobs: int) -> list[Outcome] | CodeMissing:
    """The worker's reports, or a pilot-level failure for every job when the bundle
    never reported (its worker or pilot died). A dict is the worker's request for
    shipped code its node lacks (see :mod:`executor.driver.delivery`)."""
    try:
        return future.result()
    except Exception as exc:  # the boundary with Parsl: classify, never crash the loop
        lost = type(exc).__name__ in ("ManagerLost", "WorkerLost")
        failure = FailureClass.PILOT_LOST if lost else FailureClass.SUBMIT_ERROR
        logger.warning("task failed in Parsl: %r", exc)
        outcome = failed(failure.value, f"{type(exc).__name__}: {exc}")
        return [outcome.copy() for _ in range(jobs)]


def worker_lost(future: Any) -> bool:
    """Whether a finished bundle failed because its worker process died (Parsl's
    ``WorkerLost``) while its pilot lived on: a job inside it may have crashed it."""
    try:
        return type(future.exception(timeout=0)).__name__ == "WorkerLost"
    except BaseException:  # cancelled, or not done: no worker to blame
        return False


# Parsl logs to these (exceptions from future callbacks go to concurrent.futures).
_PARSL_LOGGERS = ("parsl", "concurrent.futures")


def _parsl_log_handler(path: Path) -> logging.Handler:
    """What Parsl's ``initialize_logging`` would attach: everything to ``parsl.log``."""
    from parsl.log_utils import DEFAULT_FORMAT

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(DEFAULT_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.getLogger("parsl").setLevel(logging.DEBUG)
    for name in _PARSL_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return handler


class ParslSession:
    """Parsl for one run: a DataFlowKernel with one HighThroughputExecutor per pool.

    :meth:`start` launches the first pilots at once (not at Parsl's first strategy
    poll, 5 s later), together with each pool's interchange rather than after it
    (:func:`start_blocks_with_interchange`), and returns while they boot, so a restart
    can start Parsl first and load its graph meanwhile. Use as a context manager, or
    call :meth:`stop`.
    """

    def __init__(self, site: Any, run_dir: Path, shutdown_seconds: float = 30.0):
        self.site = site
        self.run_dir = run_dir
        self.shutdown_seconds = shutdown_seconds
        self.dfk: Any = None
        self.executors: dict[str, Any] = {}
        self.apps: dict[str, Any] = {}
        self._log_handler: logging.Handler | None = None

    def start(self) -> ParslSession:
        import_parsl(self.site)
        from parsl.app.python import PythonApp

        from executor.errors import SiteError
        from executor.worker.bundle import run_bundle

        self._log_handler = _parsl_log_handler(self.run_dir / "parsl" / "parsl.log")
        try:
            try:
                executors = self._launch(early_ports=True)
            except _EarlyStartFailed as failure:
                # The worker port chosen ahead was free when chosen, but the interchange
                # binds it a moment later: another process (a concurrent run, an outgoing
                # connection given that ephemeral port) may have taken it. Once more,
                # with Parsl choosing its own port as it binds it.
                logger.warning(
                    "starting with a worker port chosen ahead failed (%s); starting again "
                    "with Parsl's own choice", failure.__cause__,
                )  # fmt: skip
                executors = self._launch(early_ports=False)
        except Exception as exc:  # the retry never starts early: a plain failure
            self.stop()
            raise SiteError(f"site {self.site.name!r} could not start its pilots: {exc}") from exc
        self.executors = {executor.label: executor for executor in executors}
        # With a shipped runtime, bundles are calls of the built-in eval (shipping.runtime).
        function = eval if self.site.ship_runtime else run_bundle
        self.apps = {
            label: PythonApp(function, data_flow_kernel=self.dfk, executors=[label])
            for label in self.executors
        }
        return self

    def _launch(self, early_ports: bool) -> list[Any]:
        """Start a DataFlowKernel with the site's executors and their initial blocks; on a
        failure, nothing of it is left running."""
        from parsl.config import Config
        from parsl.dataflow.dflow import DataFlowKernel

        executors = self.site.make_executors()
        config = Config(
            executors=executors,
            run_dir=str(self.run_dir / "parsl"),
            strategy="none",
            usage_tracking=0,
            # Parsl's own log handler is never closed (it leaks an open file per run in a
            # long-lived process); this session owns one and closes it in stop().
            initialize_logging=False,
        )
        for executor in executors:
            launch_lean(executor, self.site.backend)
        early = {
            executor.label
            for executor in executors
            if early_ports
            and start_blocks_with_interchange(executor, self.site.init_blocks_of(executor.label))
        }
        try:
            with terminal_signals_blocked():
                self.dfk = DataFlowKernel(config)
                for executor in executors:
                    if executor.label not in early:
                        executor.scale_out_facade(self.site.init_blocks_of(executor.label))
        except Exception as exc:
            if self.dfk is None:  # blocks may be up already, with no DataFlowKernel to stop them
                for executor in executors:
                    kill_executor(executor)
            else:
                dfk, self.dfk = self.dfk, None
                stop_parsl(dfk, self.shutdown_seconds)
            if early:
                raise _EarlyStartFailed() from exc
            raise
        return executors

    def broken(self) -> bool:
        """Whether an interchange died (nothing can reach the pilots any more)."""
        return self.dfk is not None and any(interchange_dead(e) for e in self.executors.values())

    def check(self) -> None:
        """Raise :class:`SiteError` if a pool can no longer run anything."""
        from executor.errors import SiteError

        parsl_dir = self.run_dir / "parsl"
        for executor in self.executors.values() if self.dfk is not None else ():
            if getattr(executor, "bad_state_is_set", False):
                raise SiteError(
                    f"pool {executor.label!r} cannot start pilots: {executor.executor_exception}; "
                    f"see {parsl_dir}, fix the site, then `pilot restart`"
                )
            if interchange_dead(executor):
                code = executor.interchange_proc.returncode
                raise SiteError(
                    f"Parsl's interchange for pool {executor.label!r} exited (code {code}); "
                    f"see {parsl_dir} for its log, then `pilot restart`"
                )

    def stop(self) -> None:
        if self.dfk is not None:
            dfk, self.dfk = self.dfk, None
            stop_parsl(dfk, self.shutdown_seconds)
        if self._log_handler is not None:
            for name in _PARSL_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def __enter__(self) -> ParslSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
