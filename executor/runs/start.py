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
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor._version import __version__
from executor.driver.loop import RunContext
from executor.driver.parsl_session import ParslSession
from executor.formats.native import graph_to_dict
from executor.formats.saved import saved_text
from executor.model.graph import JobGraph
from executor.model.states import RunState
from executor.policy.pools import assign_pools
from executor.shipping import tarball as shipping
from executor.shipping.tarball import Shipment
from executor.sites.base import SiteConfig
from executor.store import Locations, Store
from executor.store.recorder import (
    create_run,
)


def new_run_id() -> str:
    """Sortable by time, readable, and unique enough for one database."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def driver_identity() -> dict[str, Any]:
    import psutil

    started = psutil.Process(os.getpid()).create_time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": started}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def reserve_run_dir(locations: Locations) -> tuple[str, Path]:
    """A new run's id and its (new, empty) directory, before anything is recorded."""
    run_id = new_run_id()
    run_dir = locations.run_dir(run_id)
    run_dir.mkdir(parents=True, mode=0o750)
    return run_id, run_dir


def start_run(
    graph: JobGraph,
    site: SiteConfig,
    store: Store,
    locations: Locations,
    *,
    source: Path | None = None,
    reserved: tuple[str, Path] | None = None,
) -> RunContext:
    """Record a new run (all jobs pending) and lay out its directory.

    ``reserved``: the run's id and directory from :func:`reserve_run_dir` (pilots may
    be booting there already, :func:`start_pilots_early`); else new ones.

    Raises :class:`GraphError` before anything is recorded when a job fits no pool.
    """
    assign_pools(graph, site.pools)
    run_id, run_dir = reserved or reserve_run_dir(locations)
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
        **driver_identity(),
    }
    create_run(store, run, ((job.name, job.label, job.describe()) for job in graph))
    return run_context(run_id, run_dir, workdir)


# A workflow file this large takes longer to read (YAML, graph, validation: about 0.6 s
# for 8,000 jobs here) than a worker pool takes to start booting, so its pilots start
# first and boot meanwhile. Smaller ones are read first: bad input is then reported
# before any pilot starts.
EARLY_START_BYTES = 128 * 1024


@dataclass
class EarlyStart:
    """A run's directory and its Parsl session, started before its workflow was read."""

    run_id: str
    run_dir: Path
    session: ParslSession

    def abandon(self) -> None:
        """The workflow turned out unusable: stop the pilots and leave no trace."""
        try:
            self.session.stop()
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def worth_starting_early(workflow: Path) -> bool:
    """Whether ``workflow`` is large enough that its pilots should boot while it is
    read (:data:`EARLY_START_BYTES`)."""
    try:
        return workflow.stat().st_size >= EARLY_START_BYTES
    except OSError:
        return False  # reading it says what is wrong


def start_pilots_early(site: SiteConfig, locations: Locations) -> EarlyStart:
    """Start the site's first pilots in a new run directory, before the workflow is read.

    The caller reads the workflow, passes ``(run_id, run_dir)`` to :func:`start_run`
    and the session to the driver, or calls :meth:`EarlyStart.abandon` if anything fails.
    """
    from executor.driver.loop import PARSL_SHUTDOWN_SECONDS

    run_id, run_dir = reserve_run_dir(locations)
    try:
        session = ParslSession(site, run_dir, PARSL_SHUTDOWN_SECONDS).start()
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return EarlyStart(run_id, run_dir, session)


def ship_code(graph: JobGraph, run_dir: Path) -> Shipment:
    """Build the graph's ``code:`` into the run directory, where restarts find it."""
    limit = graph.code_limit or shipping.DEFAULT_LIMIT_BYTES
    shipment = shipping.build(graph.code, run_dir / "code", limit=limit)
    shipping.save_manifest(shipment, run_dir)
    return shipment


def run_context(run_id: str, run_dir: Path, workdir: Path) -> RunContext:
    return RunContext(
        run_id=run_id,
        run_dir=run_dir,
        workdir=workdir,
        environment_file=run_dir / "environment.json",
        shipment=shipping.load_manifest(run_dir),
    )
