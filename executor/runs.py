"""Start, resume and run runs: the glue between a graph, the store and the driver.

A run directory (``runs/<id>/``) keeps everything a restart needs, so a restart works
from any directory and with any environment: the workflow as submitted
(``workflow.json``), the site (``site.json``) and the submit-time environment
(``environment.json``, readable by its owner only).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from executor import outcome_log, shipping
from executor._version import __version__
from executor.driver import Driver, Progress, RunContext, pid_start_time
from executor.errors import RunFailed, RunStateError, SiteError, StoreError
from executor.formats.native import graph_from_saved, graph_to_dict
from executor.formats.saved import read_saved, saved_text
from executor.graph import JobGraph
from executor.parsl_processes import ParslSession
from executor.pools import assign_pools
from executor.shipping import Shipment
from executor.sites import get_site
from executor.sites.base import SiteConfig
from executor.states import RunState
from executor.store import Locations, Store, locate
from executor.store.queries import driver_alive, get_run
from executor.store.recorder import (
    RunRecorder,
    abandon_unfinished,
    claim_for_restart,
    create_run,
    recover_outcomes,
)

logger = logging.getLogger(__name__)


def new_run_id() -> str:
    """Sortable by time, readable, and unique enough for one database."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _driver_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": pid_start_time()}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def start_run(
    graph: JobGraph,
    site: SiteConfig,
    store: Store,
    locations: Locations,
    *,
    source: Path | None = None,
) -> RunContext:
    """Record a new run (all jobs pending) and lay out its directory.

    Raises :class:`GraphError` before anything is recorded when a job fits no pool.
    """
    assign_pools(graph, site.pools)
    run_id = new_run_id()
    run_dir = locations.run_dir(run_id)
    run_dir.mkdir(parents=True, mode=0o750)
    if graph.code:
        try:
            ship_code(graph, run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing recorded yet: leave no trace
            raise
    workdir = graph.workdir or Path.cwd()
    workflow = graph_to_dict(graph)
    workflow["workdir"] = str(workdir)
    workflow_text = saved_text(workflow)
    (run_dir / "workflow.json").write_text(workflow_text)
    if source is not None:
        shutil.copyfile(source, run_dir / f"submitted{source.suffix}")
    (run_dir / "site.json").write_text(json.dumps(site.to_dict(), indent=1))
    _write_private(run_dir / "environment.json", json.dumps(dict(os.environ)))
    run = {
        "id": run_id,
        "name": graph.name,
        "owner": getpass.getuser(),
        "site": site.name,
        "state": RunState.RUNNING.value,
        "n_jobs": len(graph),
        "workflow_source": str(source.resolve()) if source else None,
        "workflow_copy": str(run_dir / "workflow.json"),
        "workflow_hash": hashlib.sha256(workflow_text.encode()).hexdigest(),
        "run_dir": str(run_dir),
        "workdir": str(workdir),
        "created": time.time(),
        "started": time.time(),
        "heartbeat": time.time(),
        "pilot_version": __version__,
        **_driver_identity(),
    }
    create_run(store, run, ((job.name, job.label, job.describe()) for job in graph))
    return _context(run_id, run_dir, workdir)


def ship_code(graph: JobGraph, run_dir: Path) -> Shipment:
    """Build the graph's ``code:`` into the run directory, where restarts find it."""
    limit = graph.code_limit or shipping.DEFAULT_LIMIT_BYTES
    shipment = shipping.build(graph.code, run_dir / "code", limit=limit)
    shipping.save_manifest(shipment, run_dir)
    return shipment


def _context(run_id: str, run_dir: Path, workdir: Path) -> RunContext:
    return RunContext(
        run_id=run_id,
        run_dir=run_dir,
        workdir=workdir,
        environment_file=run_dir / "environment.json",
        shipment=shipping.load_manifest(run_dir),
    )


@dataclass(frozen=True)
class Resumed:
    graph: JobGraph
    site: SiteConfig
    context: RunContext
    already_succeeded: int  # jobs not in ``graph``: they succeeded and never run again
    done_per_label: dict[str, int]
    attempts: dict[str, int]
    to_run: int
    session: ParslSession | None = None


def resume_run(
    store: Store, run_id: str, *, workflow: Path | None = None, start_parsl: bool = False
) -> Resumed:
    """Take over a run that ended (or whose driver died) so its unfinished jobs run again.

    Everything comes from the run directory and the database; nothing from the
    current directory or environment. Before taking over, whatever a dead driver
    left running (local Parsl processes, pilots in a batch queue) is stopped.
    With ``workflow``, the run continues with that edited workflow: unchanged jobs
    keep their results; changed and new jobs and their descendants run again.

    With ``start_parsl``, Parsl and the first pilots start before the graph is loaded,
    so the pilots boot while a large graph is read (``Resumed.session``).

    Raises :class:`RunStateError` when the run's driver is still alive.
    """
    from executor.detach import clean_up_after_dead_driver

    run = get_run(store, run_id)
    if run["state"] == RunState.RUNNING.value and driver_alive(run):
        raise RunStateError(
            f"run {run['id']} is still running: its driver (pid {run['pid']} on {run['host']}) "
            "is alive; wait for it to end or `pilot cancel` it first"
        )
    clean_up_after_dead_driver(store, run)
    recover_finished_jobs(store, run)
    if workflow is not None:
        from executor.revision import revise_run

        revise_run(store, run, workflow)
        run = get_run(store, run["id"])
    to_run = claim_for_restart(store, run["id"], _driver_identity())
    session = start_parsl_for(store, run["id"]) if start_parsl else None
    try:
        resumed = load_run(store, run["id"], to_run=len(to_run))
    except BaseException:
        if session is not None:
            session.stop()
        raise
    return replace(resumed, session=session)


def recover_finished_jobs(store: Store, run: dict[str, Any]) -> int:
    """Record what the run's workers finished that its dead driver never recorded.

    Call only once nothing of the old driver runs any more (after
    :func:`executor.detach.clean_up_after_dead_driver`). Returns how many jobs turned
    out to have succeeded.
    """
    records = outcome_log.read_all(run["run_dir"])
    return recover_outcomes(store, run["id"], records)


def start_parsl_for(store: Store, run_id: str) -> ParslSession:
    """Start Parsl and the first pilots of a recorded run (its saved site)."""
    run = get_run(store, run_id)
    run_dir = Path(run["run_dir"])
    site = SiteConfig.from_dict(json.loads((run_dir / "site.json").read_text()))
    return ParslSession(site, run_dir).start()


def load_run(store: Store, run_id: str, *, to_run: int | None = None) -> Resumed:
    """Everything needed to drive a recorded run, from its run directory and the store."""
    run = get_run(store, run_id)
    run_dir = Path(run["run_dir"])
    # Only the unfinished part is read and rebuilt: succeeded jobs never run again.
    rows = store.query(
        "SELECT name, attempts FROM jobs WHERE run_id = ? AND state != 'succeeded'", [run["id"]]
    )
    done_per_label = {
        row["label"]: row["n"]
        for row in store.query(
            "SELECT label, count(*) AS n FROM jobs WHERE run_id = ? AND state = 'succeeded' "
            "GROUP BY label",
            [run["id"]],
        )
    }
    unfinished = {r["name"] for r in rows}
    workflow = read_saved(Path(run["workflow_copy"]), keep=unfinished)
    graph = graph_from_saved(workflow, source=run["workflow_copy"], keep=unfinished)
    site = SiteConfig.from_dict(json.loads((run_dir / "site.json").read_text()))
    return Resumed(
        graph=graph,
        site=site,
        context=_context(run["id"], run_dir, Path(run["workdir"])),
        already_succeeded=sum(done_per_label.values()),
        done_per_label=done_per_label,
        attempts={r["name"]: r["attempts"] for r in rows},
        to_run=len(unfinished) if to_run is None else to_run,
    )


def drive(
    store: Store,
    graph: JobGraph,
    site: SiteConfig,
    context: RunContext,
    *,
    done_per_label: dict[str, int] | None = None,
    attempts: dict[str, int] | None = None,
    on_progress: Progress | None = None,
    session: ParslSession | None = None,
) -> RunState:
    """Run until every job is final or the run is cancelled; return the final state.

    Raises :class:`RunFailed` when the site fails in the middle of the run (the run is
    recorded as failed; ``pilot restart`` continues it).
    """
    recorder = RunRecorder(store, context.run_id)
    driver = Driver(
        graph, site, context, recorder,
        attempts_so_far=attempts, on_progress=on_progress,
        done_per_label=done_per_label, session=session,
    )  # fmt: skip
    with driver.signals_cancel():
        try:
            with driver:
                state = driver.run()
        except BaseException as exc:
            # Never leave the run, its jobs or their attempts "running" with no driver.
            # Parsl has stopped (leaving `with driver`): what the workers finished is final.
            interrupted = isinstance(exc, KeyboardInterrupt)
            final = RunState.CANCELLED if interrupted else RunState.FAILED
            message = "interrupted" if interrupted else f"driver error: {exc}"
            _close_abandoned(store, recorder, final, message)
            if isinstance(exc, SiteError):
                raise RunFailed(
                    f"run {context.run_id} failed: {exc}", run_id=context.run_id
                ) from exc
            raise
    from executor.report.html import write_final_report

    # After Parsl has stopped; never raises, so the report cannot change the outcome.
    write_final_report(store, context.run_id, context.run_dir / "report.html")
    return state


def _close_abandoned(store: Store, recorder: RunRecorder, final: RunState, message: str) -> None:
    """Record what a driver that stopped on an error knew, then end its run as ``final``."""
    try:
        recorder.flush()
    except StoreError:  # the very write that failed: its outcomes are in the outcome log
        recorder.discard_pending()
    try:
        recover_finished_jobs(store, get_run(store, recorder.run_id))
        abandon_unfinished(store, recorder.run_id, final, message)
    except StoreError:  # the store itself is failing: the original error says more
        logger.exception("could not record how run %s ended", recorder.run_id)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns."""

    run_id: str
    state: RunState
    run_dir: Path


def run(
    workflow: JobGraph | Any,
    *,
    site: str | SiteConfig | None = None,
    db: str | os.PathLike | None = None,
) -> RunResult:
    """Run a workflow to the end from Python and return its id and final state.

    ``workflow`` is a :class:`JobGraph`, a :class:`~executor.workflow.Workflow` or a
    path to a workflow file. Results land in the same database ``pilot status`` reads.
    """
    from executor.formats import load_workflow

    source = None
    if isinstance(workflow, (str, os.PathLike)):
        source = Path(workflow)
        graph = load_workflow(source)
    elif isinstance(workflow, JobGraph):
        graph = workflow
    else:
        graph = workflow.build()
    site_config = site if isinstance(site, SiteConfig) else get_site(site)
    locations = locate(db, site_db=site_config.monitoring_db)
    with Store(locations.db) as store:
        context = start_run(graph, site_config, store, locations, source=source)
        state = drive(store, graph, site_config, context)
    return RunResult(run_id=context.run_id, state=state, run_dir=context.run_dir)


def cancel(store: Store, run_id: str, *, wait: float = 30.0) -> str:
    """Cancel a run started anywhere; return its state afterwards.

    A live driver is asked to stop (SIGTERM on this host, and the run's cancel marker,
    which a driver on another host reads) and given ``wait`` seconds to record the
    cancel. For a run whose driver is gone, what it left running is stopped, the jobs
    its workers finished are recorded, and the rest is marked cancelled.

    Raises :class:`RunStateError` when the run's driver can be reached neither way
    (another user's run in a shared database).
    """
    from executor.store.queries import effective_state

    run = get_run(store, run_id)
    if run["state"] != RunState.RUNNING.value:
        return run["state"]
    queued = bool(run.get("driver_job")) and not run.get("pid")
    if queued:  # its driver job has not started: take it out of the queue
        from executor.detach import cancel_driver_job

        cancel_driver_job(store, run)
    elif driver_alive(run):
        _ask_driver_to_stop(run)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            state = effective_state(get_run(store, run["id"]))
            if state != RunState.RUNNING.value:
                return state
            time.sleep(0.2)
        return RunState.RUNNING.value
    from executor.detach import clean_up_after_dead_driver

    clean_up_after_dead_driver(store, run)
    recover_finished_jobs(store, run)
    abandon_unfinished(store, run["id"], RunState.CANCELLED, "cancelled after its driver was lost")
    return RunState.CANCELLED.value


def _ask_driver_to_stop(run: dict[str, Any]) -> None:
    """Write the run's cancel marker and, on the driver's host, send it SIGTERM."""
    import signal

    reached = []
    try:
        (Path(run["run_dir"]) / "cancel").touch()
        reached.append("marker")
    except OSError:  # another user's run directory, or not mounted here
        pass
    if run["host"] == socket.gethostname():
        try:
            os.kill(run["pid"], signal.SIGTERM)
            reached.append("signal")
        except ProcessLookupError:
            reached.append("signal")  # it just ended: the wait sees how
        except PermissionError:
            pass
    if not reached:
        raise RunStateError(
            f"cannot cancel run {run['id']}: its driver (pid {run['pid']} on {run['host']}) "
            f"belongs to {run['owner']!r}, and you may neither signal it nor write its run "
            f"directory {run['run_dir']}; ask {run['owner']} to run `pilot cancel {run['id']}`"
        )
