"""The command that lists a run's jobs one by one: jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from executor.cli import BadInput, cli, console, db_option, json_option, open_store
from executor.model.states import JOB_STATES


@cli.command()
@click.argument("run")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(JOB_STATES),
    help="Only jobs in this state; repeatable.",
)
@click.option("--label", default=None, help="Only jobs of this label.")
@json_option
@click.option("--tsv", "as_tsv", is_flag=True, help="Print a header line and tab-separated rows.")
@db_option
def jobs(
    run: str,
    states: tuple[str, ...],
    label: str | None,
    as_json: bool,
    as_tsv: bool,
    db: Path | None,
) -> None:
    """List the jobs of RUN, one per line, names in natural order (job-2 before job-10):
    state, attempts, how its last attempt ended (exit code, signal or failure class),
    runtime, peak memory, host, and for a blocked job the failed ancestor that blocked it.

    --json prints {"run": ID, "jobs": [{"job", "label", "state", "attempts",
    "exit_code", "signal", "failure_class", "runtime", "peak_rss_mb", "host",
    "blocked_by", "stdout", "stderr"}, ...]}; --tsv the same fields, tab-separated.

    \b
    Examples:
      pilot jobs 20261122-101500-ab12 --state failed
      pilot jobs 20261122-101500-ab12 --state blocked --label calibrate
      pilot jobs 20261122-101500-ab12 --json
      pilot jobs 20261122-101500-ab12 --tsv > jobs.tsv
    """
    from executor.report import render
    from executor.report.jobs import JOB_COLUMNS, jobs_table, list_jobs, to_tsv
    from executor.store.queries import get_run, label_counts

    if as_json and as_tsv:
        raise BadInput("--json and --tsv contradict each other; give one")
    store, _ = open_store(db)
    with store, store.snapshot():
        run_id = get_run(store, run)["id"]
        labels = list(label_counts(store, run_id))
        if label is not None and label not in labels:
            raise BadInput(
                f"run {run_id} has no label {label!r}; its labels: {', '.join(labels) or 'none'}"
            )
        rows = list_jobs(store, run_id, now=time.time(), states=states, label=label)
    if as_json:
        click.echo(json.dumps({"run": run_id, "jobs": rows}, indent=2))
    elif as_tsv:
        click.echo(to_tsv(JOB_COLUMNS, rows), nl=False)
    elif not rows:
        click.echo(f"no jobs of run {run_id} match")
    else:
        render.print_to(console(), jobs_table(rows))
