"""Take over a run that ended, or whose driver died, and load what is left to run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from executor.driver.loop import RunContext
from executor.driver.parsl_session import ParslSession
from executor.errors import RunStateError
from executor.formats.native import graph_from_saved
from executor.formats.saved import read_saved
from executor.model.graph import JobGraph
from executor.model.states import RunState
from executor.runs.start import driver_identity, run_context
from executor.sites.base import SiteConfig
from executor.store import Store
from executor.store.queries import driver_alive, get_run, succeeded_per_label, unfinished_jobs
from executor.store.recorder import (
    claim_for_restart,
    recover_outcomes,
)
from executor.worker import outcome_log


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
    still_out: int = 0  # of ``to_run``, jobs the site may still be running (reattached to)


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
    from executor.runs.detach import clean_up_after_dead_driver

    run = get_run(store, run_id)
    if run["state"] == RunState.RUNNING.value and driver_alive(run):
        raise RunStateError(
            f"run {run['id']} is still running: its driver (pid {run['pid']} on {run['host']}) "
            "is alive; wait for it to end or `pilot cancel` it first"
        )
    clean_up_after_dead_driver(store, run)
    recover_finished_jobs(store, run)
    if workflow is not None:
        from executor.runs.revise import revise_run

        revise_run(store, run, workflow)
        run = get_run(store, run["id"])
    # Jobs a dead driver left running where a new one can reattach (Globus Compute
    # tasks) keep their attempts running: the driver adopts them instead of rerunning.
    still_out = SiteConfig.of_run(Path(run["run_dir"])).attempts_left_running(Path(run["run_dir"]))
    to_run = claim_for_restart(store, run["id"], driver_identity(), still_out=still_out)
    session = start_parsl_for(store, run["id"]) if start_parsl else None
    try:
        resumed = load_run(store, run["id"], to_run=len(to_run))
    except BaseException:
        if session is not None:
            session.stop()
        raise
    return replace(resumed, session=session, still_out=len(still_out))


def recover_finished_jobs(store: Store, run: dict[str, Any]) -> int:
    """Record what the run's workers finished that its dead driver never recorded.

    Call only once nothing of the old driver runs any more (after
    :func:`executor.runs.detach.clean_up_after_dead_driver`). Returns how many jobs turned
    out to have succeeded.
    """
    records = outcome_log.read_all(run["run_dir"])
    return recover_outcomes(store, run["id"], records)


def start_parsl_for(store: Store, run_id: str) -> ParslSession:
    """Start Parsl and the first pilots of a recorded run (its saved site)."""
    run = get_run(store, run_id)
    run_dir = Path(run["run_dir"])
    site = SiteConfig.of_run(run_dir)
    return ParslSession(site, run_dir).start()


def load_run(store: Store, run_id: str, *, to_run: int | None = None) -> Resumed:
    """Everything needed to drive a recorded run, from its run directory and the store."""
    run = get_run(store, run_id)
    run_dir = Path(run["run_dir"])
    # Only the unfinished part is read and rebuilt: succeeded jobs never run again.
    attempts = unfinished_jobs(store, run["id"])
    done_per_label = succeeded_per_label(store, run["id"])
    unfinished = set(attempts)
    workflow = read_saved(Path(run["workflow_copy"]), keep=unfinished)
    graph = graph_from_saved(workflow, source=run["workflow_copy"], keep=unfinished)
    site = SiteConfig.of_run(run_dir)
    return Resumed(
        graph=graph,
        site=site,
        context=run_context(run["id"], run_dir, Path(run["workdir"])),
        already_succeeded=sum(done_per_label.values()),
        done_per_label=done_per_label,
        attempts=attempts,
        to_run=len(unfinished) if to_run is None else to_run,
    )
