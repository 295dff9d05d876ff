"""Drive a run to its end, from the command line or from Python (:func:`run`)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor.driver.loop import Driver, Progress, RunContext
from executor.driver.parsl_session import ParslSession
from executor.driver.signals import signals_cancel
from executor.errors import RunFailed, SiteError, StoreError
from executor.model.graph import JobGraph
from executor.model.states import JobState, RunState
from executor.runs.resume import recover_finished_jobs
from executor.runs.start import start_run
from executor.sites import get_site
from executor.sites.base import SiteConfig
from executor.store import Store, locate
from executor.store.estimates import label_runtimes
from executor.store.paths import assets_of
from executor.store.queries import get_run, job_results, job_states
from executor.store.recorder import (
    RunRecorder,
    abandon_unfinished,
)

logger = logging.getLogger(__name__)


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

    Packing starts from the runtimes measured by earlier runs of the workflow and, on
    a restart, by the run itself (:func:`executor.store.estimates.label_runtimes`).

    Raises :class:`RunFailed` when the site fails in the middle of the run (the run is
    recorded as failed; ``pilot restart`` continues it).
    """
    recorder = RunRecorder(store, context.run_id)
    driver = Driver(
        graph, site, context, recorder,
        attempts_so_far=attempts, on_progress=on_progress,
        estimates=_earlier_runtimes(store, context.run_id),
        done_per_label=done_per_label, session=session,
    )  # fmt: skip
    with signals_cancel(driver):
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
    write_final_report(
        store, context.run_id, context.run_dir / "report.html", assets=assets_of(context.run_dir)
    )
    return state


def _earlier_runtimes(store: Store, run_id: str) -> dict[str, float]:
    """The runtimes packing starts from; none when the store cannot say (packing learns)."""
    try:
        return label_runtimes(store, run_id)
    except StoreError:  # only a head start: a store that fails for good fails the run later
        logger.warning("run %s: no runtime estimates from earlier runs", run_id, exc_info=True)
        return {}


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
    """What :func:`run` returns.

    Attributes
    ----------
    run_id, state, run_dir
        The run's id, its final state and its directory (logs, ``report.html``).
    jobs
        Each job's final state, by job name.
    values
        The return value of each succeeded function job, JSON-decoded (a value JSON
        cannot hold arrives as its ``repr``). Shell jobs, and results too large to
        keep whole in the database (over 64 KiB), are left out.
    """

    run_id: str
    state: RunState
    run_dir: Path
    jobs: dict[str, JobState] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


def _outcomes(store: Store, run_id: str) -> tuple[dict[str, JobState], dict[str, Any]]:
    """The final state of each job of the run and the decoded values of the succeeded ones."""
    states = {name: JobState(state) for name, state in job_states(store, run_id).items()}
    values = {}
    for name, text in job_results(store, run_id).items():
        try:
            values[name] = json.loads(text)
        except ValueError:  # cut short at the size limit: not a whole value
            continue
    return states, values


def run(
    workflow: JobGraph | Any,
    *,
    site: str | SiteConfig | None = None,
    db: str | os.PathLike | None = None,
) -> RunResult:
    """Run a workflow to the end from Python; return its id, final state and job outcomes.

    ``workflow`` is a :class:`JobGraph`, a :class:`~executor.model.workflow.Workflow` or a
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
        jobs, values = _outcomes(store, context.run_id)
    return RunResult(
        run_id=context.run_id, state=state, run_dir=context.run_dir, jobs=jobs, values=values
    )
