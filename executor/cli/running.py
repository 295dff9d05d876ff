"""Commands that run, continue, stop and follow runs: submit, restart, cancel, attach."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from executor.cli import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    BadInput,
    cli,
    db_option,
    describe_shipment,
    open_store,
    ship_option,
    time_scale_option,
)


@cli.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--site", default=None, help="Site name or site file (default: local).")
@click.option(
    "--detach",
    is_flag=True,
    help="Run the driver in the background (immune to hang-up; log in the run directory) "
    "and return at once.",
)
@click.option(
    "--driver-on",
    "driver_on",
    default=None,
    metavar="SITE",
    help="With --detach: run the driver itself in a one-core batch job of SITE (e.g. a "
    "Slurm site), so that a login node reboot does not matter.",
)
@ship_option
@time_scale_option
@db_option
def submit(
    workflow: Path,
    site: str | None,
    detach: bool,
    driver_on: str | None,
    ship: tuple[Path, ...],
    time_scale: float,
    db: Path | None,
) -> None:
    """Run WORKFLOW (YAML, JSON, or WfFormat JSON) until every job has finished.

    Prints `run <ID>` first, then live progress, and on stderr one line per job that
    fails for good as it happens (failure class or exit code, and its log). Jobs run
    in the workflow file's directory (or its `workdir:`). The workflow is copied into
    the run directory at submit time: editing the file afterwards does not change this
    run or its restarts (`pilot restart RUN --workflow FILE` continues it with an
    edited copy).

    The workflow's `code:` directories and files (and each --ship PATH) are packed
    into one tarball in the run directory and unpacked on every worker node, first
    on PYTHONPATH and PATH (and sys.path for function jobs); `$PILOT_CODE` names the
    unpacked tree. A restart ships that same tarball, not the files as they are now.

    With --detach the driver runs in the background: close the terminal, then follow
    the run from anywhere with `pilot attach RUN` or `pilot status RUN --watch`.
    With --driver-on SITE as well, the driver runs in a batch job of that site
    (its `driver_walltime`, one core); the database must be on a filesystem that
    site's nodes share.

    Exit code 0 when every job succeeded, 1 when some failed, 2 on bad input,
    130 when interrupted (Ctrl-C stops running jobs and records the run as cancelled).

    A WfFormat file (a WfCommons trace) runs each task as `sleep` for its recorded
    runtime divided by --time-scale, after its parents.

    \b
    Examples:
      pilot submit examples/hello/workflow.yaml
      pilot submit examples/hello/workflow.yaml --detach
      pilot submit workflow.yaml --ship ./mypkg --site remote
      pilot submit workflow.yaml --site usdf-slurm --detach --driver-on usdf-slurm
      pilot submit montage-chameleon-dss-15d-001.json --time-scale 1000
    """
    from executor.driver.parsl_session import import_lean
    from executor.formats import load_workflow
    from executor.model.graph import JobGraph
    from executor.policy.pools import assign_pools
    from executor.runs.start import start_pilots_early, start_run, worth_starting_early
    from executor.sites import get_site

    import_lean()  # this process drives one run, on one site
    if driver_on and not detach:
        raise BadInput("--driver-on puts a detached driver in a batch job: add --detach")
    site_config = get_site(site)
    driver_site = get_site(driver_on) if driver_on else None
    # A large workflow's pilots boot while it is read (a detached driver starts its own);
    # a smaller one is read first, so bad input leaves nothing behind, not even a database.
    early_start = not detach and worth_starting_early(workflow)

    def read() -> JobGraph:
        graph = load_workflow(workflow, time_scale=time_scale)
        graph = graph.with_code(ship) if ship else graph
        assign_pools(graph, site_config.pools)  # a job that fits no pool: exit 2
        return graph

    graph = None if early_start else read()
    # A site file may name its group's shared database (`monitoring_db:`).
    store, locations = open_store(db, site_config.monitoring_db, create=True)
    with store:
        early = start_pilots_early(site_config, locations) if early_start else None
        try:
            if graph is None:
                graph = read()
            reserved = (early.run_id, early.run_dir) if early else None
            context = start_run(
                graph, site_config, store, locations, source=workflow, reserved=reserved
            )
        except BaseException:
            if early is not None:
                early.abandon()
            raise
        click.echo(f"run {context.run_id}")
        sys.stdout.flush()
        if context.shipment is not None:
            click.echo(f"code: {describe_shipment(context.shipment)}", err=True)
        if driver_site is not None:
            _detach_to_batch(store, context.run_id, context.run_dir, driver_site)
        if detach:
            _detach(store, context.run_id, context.run_dir)
        _drive_and_exit(
            store, graph, site_config, context, session=early.session if early else None
        )


def _detach_to_batch(store, run_id: str, run_dir: Path, driver_site) -> None:
    from executor.runs.cancel import cancel
    from executor.runs.detach import start_driver_job

    try:
        job_id = start_driver_job(store, run_id, run_dir, driver_site)
    except BaseException:
        cancel(store, run_id, wait=0)  # nothing will drive this run: record that
        raise
    click.echo(
        f"driver in batch job {job_id} on site {driver_site.name} (log {run_dir / 'driver.log'}); "
        f"follow it with `pilot attach {run_id}`",
        err=True,
    )
    sys.exit(EXIT_OK)


def _detach(store, run_id: str, run_dir: Path) -> None:
    from executor.runs.detach import start_detached_driver

    pid = start_detached_driver(store, run_id, run_dir)
    click.echo(
        f"driver running in the background (pid {pid}, log {run_dir / 'driver.log'}); "
        f"follow it with `pilot attach {run_id}`",
        err=True,
    )
    sys.exit(EXIT_OK)


def _drive_and_exit(store, graph, site, context, **resume: Any) -> None:
    from executor.model.states import RunState
    from executor.report.feed import FailureFeed
    from executor.report.progress import LiveProgress
    from executor.runs.drive import drive
    from executor.store.queries import job_counts

    started = time.monotonic()
    try:
        with LiveProgress() as progress:
            update = _showing_failures(progress, FailureFeed(store, context.run_id))
            state = drive(store, graph, site, context, on_progress=update, **resume)
    except KeyboardInterrupt:
        click.echo(f"cancelled (forced): run {context.run_id}", err=True)
        sys.exit(EXIT_CANCELLED)
    counts = job_counts(store, context.run_id)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    click.echo(f"{state.value}: {summary} in {time.monotonic() - started:.1f}s")
    if state is RunState.SUCCEEDED:
        sys.exit(EXIT_OK)
    if state is RunState.CANCELLED:
        click.echo(f"cancelled; `pilot restart {context.run_id}` continues it", err=True)
        sys.exit(EXIT_CANCELLED)
    click.echo(f"see `pilot report {context.run_id}`", err=True)
    sys.exit(EXIT_FAILED)


def _showing_failures(progress, feed) -> Callable[[dict[str, dict[str, int]]], None]:
    """A progress callback that also prints each job's failure as it happens, above
    the bars (``feed``: a :class:`~executor.report.feed.FailureFeed`)."""

    def update(counts: dict[str, dict[str, int]]) -> None:
        progress.update(counts)
        for line in feed.lines(counts):
            progress.note(line)

    return update


@cli.command()
@click.argument("run")
@click.option(
    "--workflow",
    "workflow",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Continue with this edited workflow: changed and new jobs and their "
    "descendants run again; unchanged jobs keep their results.",
)
@click.option("--detach", is_flag=True, help="Run the driver in the background.")
@db_option
def restart(run: str, workflow: Path | None, detach: bool, db: Path | None) -> None:
    """Continue RUN after it ended (failed or cancelled) or its driver died.

    Succeeded jobs never run again; failed, blocked, cancelled, never-started and
    in-flight jobs run. The run uses the workflow copy, site, working directory and
    environment saved at submit time (not the file you may have edited since), so it
    works from any directory. It is refused while the run's driver is still alive.
    What a dead driver left running (worker pools, pilots in a batch queue) is
    stopped first.

    \b
    Examples:
      pilot restart 20261122-101500-ab12
      pilot restart 20261122-101500-ab12 --workflow workflow-fixed.yaml --detach
    """
    from executor.driver.parsl_session import import_lean
    from executor.runs.resume import resume_run

    import_lean()  # this process drives one run, on one site

    store, _ = open_store(db)
    with store:
        # In the foreground, pilots start booting while the graph loads.
        resumed = resume_run(store, run, workflow=workflow, start_parsl=not detach)
        click.echo(f"run {resumed.context.run_id}")
        click.echo(
            f"restarting: {resumed.to_run} job(s) to run, "
            f"{resumed.already_succeeded} already succeeded"
            + (
                f", {resumed.still_out} maybe still running on the site (reattaching)"
                if resumed.still_out
                else ""
            ),
            err=True,
        )
        sys.stdout.flush()
        if detach:
            _detach(store, resumed.context.run_id, resumed.context.run_dir)
        _drive_and_exit(
            store, resumed.graph, resumed.site, resumed.context,
            attempts=resumed.attempts,
            done_per_label=resumed.done_per_label, session=resumed.session,
        )  # fmt: skip


@cli.command()
@click.argument("run")
@click.option(
    "--wait", default=30.0, show_default=True, help="Seconds to wait for the driver to stop."
)
@db_option
def cancel(run: str, wait: float, db: Path | None) -> None:
    """Cancel RUN from any terminal: running jobs are stopped, nothing new starts.

    \b
    Example:
      pilot cancel 20261122-101500-ab12
    """
    from executor.runs.cancel import cancel as cancel_run
    from executor.store.queries import get_run

    store, _ = open_store(db)
    with store:
        run_id = get_run(store, run)["id"]
        state = cancel_run(store, run_id, wait=wait)
        run_dir = Path(get_run(store, run_id)["run_dir"])
    click.echo(f"run {run_id}: {state}")
    note = _cancel_note(run_dir)
    if note:  # e.g. Globus Compute: tasks already running cannot be stopped
        click.echo(f"note: {note}")
    if state == "running":
        raise click.ClickException(f"the driver did not stop within {wait:g}s; try again")


def _cancel_note(run_dir: Path) -> str | None:
    """What a cancel cannot do on the run's site (``SiteConfig.cancel_note``)."""
    from executor.sites import SiteConfig

    try:
        site = SiteConfig.of_run(run_dir)
    except Exception:  # an old or unreadable site.json, an unknown backend: no note
        return None
    return site.cancel_note()


@cli.command()
@click.argument("run")
@db_option
def attach(run: str, db: Path | None) -> None:
    """Show the live progress of RUN (detached or started elsewhere) until it ends,
    and one line per job that failed for good (as `pilot submit` shows them).

    Ctrl-C stops watching, not the run. Exits as `pilot submit` would have for the
    run's final state (0 succeeded, 1 failed or driver_lost, 130 cancelled).

    \b
    Example:
      pilot submit workflow.yaml --detach
      pilot attach 20261122-101500-ab12
    """
    from executor.cli.follow import attach as follow
    from executor.cli.follow import exit_code_for
    from executor.report.feed import FailureFeed
    from executor.report.progress import LiveProgress
    from executor.store.queries import get_run, job_counts

    store, _ = open_store(db)
    with store:
        run_id = get_run(store, run)["id"]
        click.echo(f"run {run_id}")
        try:
            with LiveProgress() as progress:
                feed = FailureFeed(store, run_id, from_start=True)
                state = follow(store, run_id, _showing_failures(progress, feed))
        except KeyboardInterrupt:
            click.echo(f"detached from run {run_id}; it goes on", err=True)
            sys.exit(EXIT_CANCELLED)
        counts = job_counts(store, run_id)
    click.echo(f"{state}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    sys.exit(exit_code_for(state))


@cli.command("_drive", hidden=True)
@click.argument("run")
@click.option("--adopt", is_flag=True, help="Name this process the run's driver (batch job).")
@db_option
def drive_detached(run: str, adopt: bool, db: Path | None) -> None:
    """The background driver started by `--detach` (not for direct use).

    \b
    Example:
      python -m executor _drive RUN --db PATH   (started by pilot itself)
    """
    from executor.driver.parsl_session import import_lean
    from executor.runs.detach import adopt_run, wait_to_be_named_driver
    from executor.runs.drive import drive
    from executor.runs.resume import load_run

    import_lean()  # this process drives one run, on one site
    _log_to_driver_log()
    store, _ = open_store(db)
    with store:
        if adopt:
            adopt_run(store, run)
        else:
            wait_to_be_named_driver(store, run)
        resumed = load_run(store, run)
        drive(
            store, resumed.graph, resumed.site, resumed.context,
            attempts=resumed.attempts,
            done_per_label=resumed.done_per_label,
            on_progress=_ProgressLog(),
        )  # fmt: skip


def _log_to_driver_log() -> None:
    """A detached driver's stderr is its run's driver.log: say there what happens."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("executor")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class _ProgressLog:
    """Logs the job counts at most every ``interval`` seconds, and at once when a job fails
    (or is blocked or cancelled): a log line per success would flood a 200,000-job run."""

    def __init__(self, interval: float = 30.0):
        self.interval = interval
        self._last = 0.0
        self._final: tuple[int, ...] = ()

    def __call__(self, counts: dict[str, dict[str, int]]) -> None:
        import logging

        from executor.model.states import SHOWN_STATES

        totals = {state: sum(c.get(state, 0) for c in counts.values()) for state in SHOWN_STATES}
        final = (totals["failed"], totals["blocked"], totals["cancelled"])
        now = time.monotonic()
        over = not (totals["pending"] + totals["ready"] + totals["queued"] + totals["running"])
        if now - self._last < self.interval and final == self._final and not over:
            return
        self._last, self._final = now, final
        logging.getLogger("executor.progress").info(
            "progress: %s", ", ".join(f"{n} {state}" for state, n in totals.items() if n)
        )
