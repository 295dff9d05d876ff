"""Commands that look at workflows and runs: validate, status, report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from executor.cli import (
    EXIT_CANCELLED,
    BadInput,
    cli,
    console,
    db_option,
    describe_shipment,
    json_option,
    open_store,
    run_filter,
    ship_option,
    time_scale_option,
)


@cli.command()
@click.argument("workflow", type=click.Path(path_type=Path))
@click.option("--site", default=None, help="Site whose pools jobs are matched to (default: local).")
@ship_option
@time_scale_option
@json_option
@click.option("--dot", is_flag=True, help="Print the graph in Graphviz DOT instead.")
@click.option(
    "--collapse", is_flag=True, help="With --dot: one node per label (the default above 200 jobs)."
)
def validate(
    workflow: Path,
    site: str | None,
    ship: tuple[Path, ...],
    time_scale: float,
    as_json: bool,
    dot: bool,
    collapse: bool,
) -> None:
    """Check WORKFLOW without running it: jobs per label, roots, leaves, longest chain,
    which pool of the site each label's jobs go to, the labels' throttles
    (`max_running:`), the jobs that run even after failures (`always_run:`), and
    the code that would be shipped (`code:` and --ship: its files, size and sha256).

    Exits 2 and lists every problem (file, line, job, field, and how to fix it)
    when the workflow is invalid or a job fits no pool of the site.

    With --dot, prints the valid graph in Graphviz DOT: one node per job, or with
    --collapse (and for more than 200 jobs) one node per label with its job count and
    the number of edges between labels.

    \b
    Examples:
      pilot validate examples/hello/workflow.yaml
      pilot validate workflow.yaml --site usdf-slurm --json
      pilot validate montage-chameleon-dss-15d-001.json --json
      pilot validate workflow.yaml --dot | dot -Tsvg > graph.svg
    """
    from collections import Counter

    from executor.formats import load_workflow
    from executor.policy.pools import assign_pools
    from executor.sites import get_site

    graph = load_workflow(workflow, time_scale=time_scale)
    if ship:
        graph = graph.with_code(ship)
    site_config = get_site(site)
    pool_of = assign_pools(graph, site_config.pools)
    if dot or collapse:
        from executor.formats.dot import to_dot

        click.echo(to_dot(graph, collapse=True if collapse else None), nl=False)
        return
    shipment = _trial_shipment(graph)
    pools_by_label: dict[str, Counter[str]] = {}
    for job in graph:
        pools_by_label.setdefault(job.label, Counter())[pool_of[job.name]] += 1
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
        "site": site_config.name,
        "pools": {label: dict(counts) for label, counts in pools_by_label.items()},
        "max_running": dict(graph.max_running),
        # Jobs that run even when jobs before them failed (a final clean-up or transfer).
        "always_run": [job.name for job in graph if job.always_run],
        "code": None
        if shipment is None
        else {
            "sha256": shipment.sha256, "size": shipment.size,
            "content_bytes": shipment.content_bytes, "sources": list(shipment.sources),
            "files": [{"path": name, "bytes": size} for name, size in shipment.files],
        },
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{graph.name}: {len(graph)} jobs", title_justify="left")
    table.add_column("label")
    table.add_column("jobs", justify="right")
    table.add_column(f"pools of site {site_config.name}")
    throttles = graph.max_running
    if throttles:
        table.add_column("max_running", justify="right")
    for label, n in graph.labels().items():
        pools = ", ".join(f"{pool}: {k}" for pool, k in pools_by_label[label].items())
        limit = [str(throttles.get(label, "-"))] if throttles else []
        table.add_row(Text(label), str(n), Text(pools), *limit)
    out = console()
    out.print(table)
    shown = " -> ".join(chain if len(chain) <= 8 else [*chain[:4], "...", *chain[-3:]])
    out.print(Text(f"roots: {facts['roots']}  leaves: {facts['leaves']}  edges: {facts['edges']}"))
    out.print(Text(f"longest chain: {len(chain)} jobs: {shown}"))
    if facts["always_run"]:
        names = ", ".join(facts["always_run"][:8]) + (" ..." if facts["always_run"][8:] else "")
        out.print(Text(f"always run, even after failures: {names}"))
    if shipment is not None:
        out.print(Text(f"code: {describe_shipment(shipment)}"))
        for name, size in shipment.files[:SHOWN_FILES]:
            out.print(Text(f"  {name}  ({size:,} B)"))
        if len(shipment.files) > SHOWN_FILES:
            more = len(shipment.files) - SHOWN_FILES
            out.print(Text(f"  ... and {more} more (--json lists all)"))
    out.print(Text("valid", style="green"))


# How many shipped files `validate` lists before summing up the rest.
SHOWN_FILES = 20


def _trial_shipment(graph):
    """Build the tarball the workflow would ship into a scratch directory (exact hash)."""
    import tempfile

    from executor.shipping import tarball as shipping

    if not graph.code:
        return None
    with tempfile.TemporaryDirectory(prefix="pilot-validate-") as scratch:
        limit = graph.code_limit or shipping.DEFAULT_LIMIT_BYTES
        return shipping.build(graph.code, Path(scratch), limit=limit)


@cli.command()
@click.argument("run", required=False)
@click.option("--limit", default=20, show_default=True, help="How many runs to list.")
@click.option("--all-users", is_flag=True, help="List everyone's runs, not only yours.")
@click.option("--user", "user", default=None, help="List the runs of user NAME.")
@click.option("--since", default=None, help="Only runs started within this long, e.g. 2d, 12h.")
@click.option("--watch", is_flag=True, help="Follow RUN live until it ends; exit as submit would.")
@json_option
@db_option
def status(
    run: str | None,
    limit: int,
    all_users: bool,
    user: str | None,
    since: str | None,
    watch: bool,
    as_json: bool,
    db: Path | None,
) -> None:
    """Show your runs (newest first), or one RUN: its state and job counts per label.

    A run whose driver died shows as `driver_lost`; `pilot restart RUN` continues it.
    On a database a group shares (PILOT_DB), --all-users lists everyone's runs.

    \b
    Examples:
      pilot status
      pilot status --all-users --since 2d
      pilot status --user alice --json
      pilot status 20261122-101500-ab12 --json
      pilot status 20261122-101500-ab12 --watch
    """
    from executor.report import render
    from executor.store.queries import get_run, list_runs, run_summary

    owner, cutoff = run_filter(all_users, user, since)
    if watch:
        if run is None:
            raise BadInput("--watch follows one run: give its id, e.g. `pilot status RUN --watch`")
        _watch(run, db)
    if run is None and db is None and not os.environ.get("PILOT_DB"):
        from executor.store import locate

        default = locate(None).db
        if not default.is_file():  # nothing submitted yet: not an error for a listing
            click.echo(json.dumps({"runs": []}) if as_json else f"no runs yet ({default})")
            return
    store, _ = open_store(db)
    with store, store.snapshot():
        if run is None:
            rows = list_runs(store, limit, owner=owner, since=cutoff)
            summaries = [run_summary(store, r) for r in rows]
            if as_json:
                click.echo(json.dumps({"runs": summaries}, indent=2))
            elif not summaries:
                whose = "" if owner is None else f" of {owner}"
                hint = "" if owner is None else " (--all-users lists everyone's)"
                click.echo(f"no runs{whose} in {store.path}{hint}")
            else:
                render.print_to(console(), render.runs_table(summaries))
            return
        summary = run_summary(store, get_run(store, run))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        render.print_to(console(), render.run_status(summary))


def _watch(run: str, db: Path | None) -> None:
    from executor.cli.follow import exit_code_for, watch
    from executor.report import render
    from executor.store.queries import get_run

    store, _ = open_store(db)
    with store:
        run_id = get_run(store, run)["id"]
        try:
            state = watch(store, run_id, render.run_status, console())
        except KeyboardInterrupt:
            click.echo(f"stopped watching; run {run_id} goes on", err=True)
            sys.exit(EXIT_CANCELLED)
    sys.exit(exit_code_for(state))


@cli.command()
@click.argument("run")
@click.option("--lines", default=10, show_default=True, help="Lines of stderr per failed job.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a self-contained HTML report (tables and plots) to this file.",
)
@json_option
@click.option(
    "--tsv",
    "as_tsv",
    is_flag=True,
    help="Print one tab-separated row per attempt, under a header (a trace file).",
)
@db_option
def report(
    run: str, lines: int, html_path: Path | None, as_json: bool, as_tsv: bool, db: Path | None
) -> None:
    """Per-label table of RUN (one column per state, plus expected), then each failed job
    with its exit code and the last lines of its stderr, and the blocked jobs per
    failed ancestor.

    With --tsv, prints one row per attempt instead, like Nextflow's trace file: job,
    attempt, label, state, failure_class, exit_code, signal, submitted, start, end
    (seconds since the epoch), runtime (seconds), peak_rss_mb, cpu_seconds,
    memory_mb (requested), pool, host, block_id, batch_job_id, stdout, stderr,
    error_type (the exception a function job raised, or what kept a job from starting).

    With --html FILE, writes one HTML file that opens offline: the per-label table,
    failures grouped by cause, a timeline of jobs per pilot, running jobs and live
    pilots over time, and runtime and peak-memory distributions per label. Every run
    also writes one to its run directory (report.html) when it ends.

    \b
    Examples:
      pilot report 20261122-101500-ab12 --lines 20
      pilot report 20261122-101500-ab12 --html report.html
      pilot report 20261122-101500-ab12 --tsv > trace.tsv
    """
    from executor.report import render
    from executor.report.data import build_report

    store, _ = open_store(db)
    if as_tsv:
        _print_trace(store, run)
        return
    if html_path is not None:
        from executor.report.html import write_report
        from executor.store.queries import get_run

        with store, store.snapshot():
            run_id = get_run(store, run)["id"]
            try:
                written = write_report(store, run_id, html_path)
            except OSError as exc:
                raise BadInput(f"cannot write {html_path}: {exc.strerror}") from exc
        click.echo(f"wrote {written}")
        return
    with store, store.snapshot():
        data = build_report(store, run, tail_lines=lines)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        render.print_to(console(), render.report(data))


def _print_trace(store, run: str) -> None:
    from executor.report.jobs import TRACE_COLUMNS, to_tsv, trace
    from executor.store.queries import get_run

    with store, store.snapshot():
        rows = trace(store, get_run(store, run)["id"])
    click.echo(to_tsv(TRACE_COLUMNS, rows), nl=False)
