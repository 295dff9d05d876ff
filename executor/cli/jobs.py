"""The commands that look at a run's jobs one by one: jobs, and logs.

A job's log exists in the run directory only if the job wrote something to it (the
worker creates it at the first byte, :mod:`executor.worker.capture`), so a missing log
of a job that has started is an empty one, not an error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from executor.cli import (
    EXIT_CANCELLED,
    BadInput,
    cli,
    console,
    db_option,
    json_option,
    open_store,
)
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


@cli.command()
@click.argument("run")
@click.argument("job")
@click.option("--attempt", type=int, default=None, help="Attempt number (default: the last).")
@click.option("--stderr", "which", flag_value="stderr", help="Print stderr instead of stdout.")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing what the job writes until its attempt ends."
)
@db_option
def logs(
    run: str, job: str, attempt: int | None, which: str | None, follow: bool, db: Path | None
) -> None:
    """Print the captured stdout (or --stderr) of JOB in RUN, also while it runs.

    A job that wrote nothing has an empty log: nothing is printed. With -f, keep
    printing lines as the job writes them until its attempt ends (or the run's driver
    is gone); Ctrl-C stops following and leaves the job running.

    \b
    Examples:
      pilot logs 20261122-101500-ab12 isr-3
      pilot logs 20261122-101500-ab12 isr-3 --attempt 1 --stderr
      pilot logs 20261122-101500-ab12 isr-3 -f
    """
    import difflib

    from executor.store.queries import attempts_of, get_run, job_names, job_row

    store, _ = open_store(db)
    with store:
        run_row = get_run(store, run)
        row = job_row(store, run_row["id"], job)
        if row is None:
            close = difflib.get_close_matches(job, job_names(store, run_row["id"]), n=3)
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
        if follow and path:
            _follow_log(store, run_row["id"], job, chosen["attempt"], Path(path))
            return
    if not path:
        # A finished attempt names only the logs its job wrote to. One that names none
        # wrote nothing there, or never reported (its pilot was lost): then what it
        # wrote before is where the worker puts logs (RunContext.log_paths).
        suffix = ".err" if which == "stderr" else ".out"
        where = Path(run_row["run_dir"]) / "logs" / job / f"attempt-{chosen['attempt']}{suffix}"
        if not where.is_file():
            return
        path = str(where)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        if chosen["state"] != "running":
            raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
        if chosen["start"] is None:
            raise BadInput(
                f"attempt {chosen['attempt']} of {job!r} has no log yet: it is queued in its "
                f"pilot, not started (`pilot logs {run_row['id']} {job} -f` waits for it)"
            ) from exc
        data = b""  # started, and has written nothing yet
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _follow_log(store: Any, run_id: str, job: str, attempt: int, path: Path) -> None:
    from executor.cli.follow import attempt_running, follow_file

    try:
        follow_file(path, lambda: attempt_running(store, run_id, job, attempt), sys.stdout.buffer)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.exit(EXIT_CANCELLED)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
