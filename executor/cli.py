"""The ``pilot`` command: a thin click layer that parses, calls the library, and renders.

Library errors become exit code 2 with a one-paragraph message in one place
(:class:`PilotGroup`); job outcomes map to exit codes 0 (all succeeded), 1 (some
failed) and 130 (cancelled).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from executor._version import __version__
from executor.errors import GraphError, PilotError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


class BadInput(click.ClickException):
    exit_code = EXIT_USAGE


class PilotGroup(click.Group):
    """Converts library errors to clean messages and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GraphError as exc:
            lines = [str(exc)] if len(exc.problems) <= 1 else [str(exc) + ":"]
            if len(exc.problems) > 1:
                lines += [f"  - {p}" for p in exc.problems]
            raise BadInput("\n".join(lines)) from exc
        except PilotError as exc:
            raise BadInput(str(exc)) from exc


db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Monitoring database to use (its runs go next to it). "
    "Default: $PILOT_DB, else $PILOT_HOME/monitoring.db (~/.local/share/pilot).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _open_store(db: Path | None):
    from executor.store import Store, locate

    locations = locate(db)
    return Store(locations.db), locations


@click.group(cls=PilotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pilot")
def cli() -> None:
    """Run job graphs of shell commands and Python functions in pilots.

    \b
    Start with:
      pilot validate workflow.yaml     check a workflow without running it
      pilot submit workflow.yaml       run it on this machine (the 'local' site)
      pilot status                     list runs, newest first
      pilot report RUN                 per-label table and failed jobs
    """


@cli.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--site", default=None, help="Site name or site file (default: local).")
@db_option
def submit(workflow: Path, site: str | None, db: Path | None) -> None:
    """Run WORKFLOW (YAML or JSON) until every job has finished.

    Prints `run <ID>` first, then live progress. Jobs run in the workflow file's
    directory (or its `workdir:`). The workflow is copied into the run directory at
    submit time: editing the file afterwards does not change this run or its restarts.

    Exit code 0 when every job succeeded, 1 when some failed, 2 on bad input,
    130 when interrupted (Ctrl-C stops running jobs and records the run as cancelled).

    \b
    Example:
      pilot submit examples/hello/workflow.yaml
    """
    from executor.formats import load_workflow
    from executor.runs import start_run
    from executor.sites import get_site

    graph = load_workflow(workflow)
    site_config = get_site(site)
    store, locations = _open_store(db)
    with store:
        context = start_run(graph, site_config, store, locations, source=workflow)
        click.echo(f"run {context.run_id}")
        sys.stdout.flush()
        _drive_and_exit(store, graph, site_config, context)


def _drive_and_exit(store, graph, site, context, **resume: Any) -> None:
    from executor.report.progress import LiveProgress
    from executor.runs import drive
    from executor.states import RunState
    from executor.store.queries import job_counts

    started = time.monotonic()
    try:
        with LiveProgress() as progress:
            state = drive(store, graph, site, context, on_progress=progress.update, **resume)
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


@cli.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@json_option
def validate(workflow: Path, as_json: bool) -> None:
    """Check WORKFLOW without running it: jobs per label, roots, leaves, longest chain.

    Exits 2 and lists every problem (file, line, job, field, and how to fix it)
    when the workflow is invalid.

    \b
    Example:
      pilot validate examples/hello/workflow.yaml
    """
    from executor.formats import load_workflow

    graph = load_workflow(workflow)
    chain = graph.longest_chain()
    facts: dict[str, Any] = {
        "workflow": graph.name,
        "jobs": len(graph),
        "labels": dict(graph.labels()),
        "roots": len(graph.roots()),
        "leaves": len(graph.leaves()),
        "edges": len(graph.edges()),
        "longest_chain": {"length": len(chain), "jobs": chain},
        "workdir": str(graph.workdir) if graph.workdir else None,
    }
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{graph.name}: {len(graph)} jobs", title_justify="left")
    table.add_column("label")
    table.add_column("jobs", justify="right")
    for label, n in graph.labels().items():
        table.add_row(Text(label), str(n))
    console = _console()
    console.print(table)
    shown = " -> ".join(chain if len(chain) <= 8 else [*chain[:4], "...", *chain[-3:]])
    console.print(
        Text(f"roots: {facts['roots']}  leaves: {facts['leaves']}  edges: {facts['edges']}")
    )
    console.print(Text(f"longest chain: {len(chain)} jobs: {shown}"))
    console.print(Text("valid", style="green"))


@cli.command()
@click.argument("run", required=False)
@click.option("--limit", default=20, show_default=True, help="How many runs to list.")
@json_option
@db_option
def status(run: str | None, limit: int, as_json: bool, db: Path | None) -> None:
    """Show runs (newest first), or one RUN: its state and job counts per label.

    A run whose driver died shows as `driver_lost`; `pilot restart RUN` continues it.

    \b
    Examples:
      pilot status
      pilot status 20261122-101500-ab12 --json
    """
    from executor.report import render
    from executor.store.queries import get_run, list_runs, run_summary

    store, _ = _open_store(db)
    with store, store.snapshot():
        if run is None:
            summaries = [run_summary(store, r) for r in list_runs(store, limit)]
            if as_json:
                click.echo(json.dumps({"runs": summaries}, indent=2))
            elif not summaries:
                click.echo(f"no runs in {store.path}")
            else:
                render.print_to(_console(), render.runs_table(summaries))
            return
        summary = run_summary(store, get_run(store, run))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        render.print_to(_console(), render.run_status(summary))


@cli.command()
@click.argument("run")
@click.option("--lines", default=10, show_default=True, help="Lines of stderr per failed job.")
@json_option
@db_option
def report(run: str, lines: int, as_json: bool, db: Path | None) -> None:
    """Per-label table of RUN (one column per state, plus expected), then each failed job
    with its exit code and the last lines of its stderr.

    \b
    Example:
      pilot report 20261122-101500-ab12 --lines 20
    """
    from executor.report import render
    from executor.report.data import build_report

    store, _ = _open_store(db)
    with store, store.snapshot():
        data = build_report(store, run, tail_lines=lines)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        render.print_to(_console(), render.report(data))


@cli.command()
@click.argument("run")
@click.argument("job")
@click.option("--attempt", type=int, default=None, help="Attempt number (default: the last).")
@click.option("--stderr", "which", flag_value="stderr", help="Print stderr instead of stdout.")
@db_option
def logs(run: str, job: str, attempt: int | None, which: str | None, db: Path | None) -> None:
    """Print the captured stdout (or --stderr) of JOB in RUN.

    \b
    Examples:
      pilot logs 20261122-101500-ab12 isr-3
      pilot logs 20261122-101500-ab12 isr-3 --attempt 1 --stderr
    """
    import difflib

    from executor.store.queries import attempts_of, get_run, job_row

    store, _ = _open_store(db)
    with store:
        run_row = get_run(store, run)
        row = job_row(store, run_row["id"], job)
        if row is None:
            names = [
                r["name"]
                for r in store.query("SELECT name FROM jobs WHERE run_id = ?", [run_row["id"]])
            ]
            close = difflib.get_close_matches(job, names, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise BadInput(f"run {run_row['id']} has no job {job!r}{hint}")
        attempts = attempts_of(store, run_row["id"], job)
    if not attempts:
        raise BadInput(f"job {job!r} has not run (state: {row['state']}), so it has no logs")
    chosen = (
        attempts[-1]
        if attempt is None
        else next((a for a in attempts if a["attempt"] == attempt), None)
    )
    if chosen is None:
        numbers = ", ".join(str(a["attempt"]) for a in attempts)
        raise BadInput(f"job {job!r} has no attempt {attempt}; its attempts: {numbers}")
    path = chosen["stderr" if which == "stderr" else "stdout"]
    if not path:
        raise BadInput(
            f"attempt {chosen['attempt']} of {job!r} has no log yet (it is still starting)"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@cli.command()
@click.argument("run")
@db_option
def restart(run: str, db: Path | None) -> None:
    """Continue RUN after it ended (failed or cancelled) or its driver died.

    Succeeded jobs never run again; failed, blocked, cancelled and never-started
    jobs run. The run uses the workflow copy, site, working directory and environment
    saved at submit time, so it works from any directory. It is refused while the
    run's driver is still alive.

    \b
    Example:
      pilot restart 20261122-101500-ab12
    """
    from executor.runs import resume_run

    store, _ = _open_store(db)
    with store:
        resumed = resume_run(store, run)
        click.echo(f"run {resumed.context.run_id}")
        click.echo(
            f"restarting: {resumed.to_run} job(s) to run, "
            f"{len(resumed.succeeded)} already succeeded",
            err=True,
        )
        sys.stdout.flush()
        _drive_and_exit(
            store, resumed.graph, resumed.site, resumed.context,
            succeeded=resumed.succeeded, attempts=resumed.attempts,
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
    from executor.runs import cancel as cancel_run
    from executor.store.queries import get_run

    store, _ = _open_store(db)
    with store:
        run_id = get_run(store, run)["id"]
        state = cancel_run(store, run_id, wait=wait)
    click.echo(f"run {run_id}: {state}")
    if state == "running":
        raise click.ClickException(f"the driver did not stop within {wait:g}s; try again")


def main() -> None:
    cli(prog_name="pilot")
