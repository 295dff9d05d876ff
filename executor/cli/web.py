"""The group-facing commands: the web dashboard and removing old runs."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from executor.cli import (
    BadInput,
    cli,
    db_option,
    json_option,
    open_store,
    run_filter,
)


@cli.command()
@click.option("--port", default=8700, show_default=True, help="Port to listen on (0: any free).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host other than loopback: anyone who can reach it sees every run.",
)
@click.option(
    "--refresh", default=2.0, show_default=True, help="Seconds between updates of a live run."
)
@db_option
def serve(port: int, host: str, allow_remote: bool, refresh: float, db: Path | None) -> None:
    """Serve a read-only web dashboard of every run in the database.

    Lists all runs (every user's) and, per run, live progress per label, pilots,
    failures with log tails, and the plots of `pilot report --html`, refreshing while
    the run is going. It listens on 127.0.0.1 only unless --host and --allow-remote
    say otherwise. Ctrl-C stops it.

    \b
    Examples:
      pilot serve
      PILOT_DB=/group/pilot/monitoring.db pilot serve --port 8080
    """
    from executor.report.server import Dashboard, is_loopback
    from executor.store import locate

    if not is_loopback(host):
        if not allow_remote:
            raise BadInput(
                f"--host {host} would show every run in the database to anyone who can "
                "reach this machine; add --allow-remote if that is what you want"
            )
        click.echo(
            f"warning: serving on {host}, not loopback: anyone who can reach this address "
            "can read every run, job name and log tail in the database (no login)",
            err=True,
        )
    dashboard = Dashboard(locate(db).db, host=host, port=port, refresh=refresh)
    with dashboard:
        click.echo(f"serving {dashboard.db} at {dashboard.url} (Ctrl-C stops)")
        sys.stdout.flush()
        try:
            dashboard.wait()
        except KeyboardInterrupt:
            pass


# `--older-than` takes days, hours or weeks only: `1m` could be a minute or a month, and
# a typo of that kind must not delete a month of runs.
_GC_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhw])\s*$", re.IGNORECASE)
_GC_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def gc_age(text: str) -> float:
    """``--older-than`` in seconds; only ``12h``, ``30d``, ``2w`` forms are accepted."""
    match = _GC_AGE.match(text)
    if not match:
        raise BadInput(
            f"--older-than {text!r}: give hours, days or weeks with their unit, e.g. 12h, "
            "30d or 2w (minutes and months are not accepted: `1m` could be either)"
        )
    return float(match.group(1)) * _GC_UNITS[match.group(2).lower()]


@cli.command()
@click.option(
    "--older-than", required=True, help="Remove runs that ended this long ago: 12h, 30d, 2w."
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--yes", is_flag=True, help="Remove without asking (for scripts).")
@click.option("--all-users", is_flag=True, help="Include everyone's runs, not only yours.")
@click.option("--user", "user", default=None, help="Only the runs of user NAME.")
@json_option
@db_option
def gc(
    older_than: str,
    dry_run: bool,
    yes: bool,
    all_users: bool,
    user: str | None,
    as_json: bool,
    db: Path | None,
) -> None:
    """Remove old runs from the database, and their run directories.

    A run is removed when it ended (or its driver was lost) longer ago than
    --older-than; a run whose driver is alive is never removed. What would be
    removed is listed first, and removed only once you confirm (or with --yes).

    \b
    Examples:
      pilot gc --older-than 30d --dry-run
      pilot gc --older-than 90d --all-users
      pilot gc --older-than 2w --yes --json
    """
    import dataclasses

    from executor.report.render import age
    from executor.store.retention import collect

    seconds = gc_age(older_than)
    owner, _ = run_filter(all_users, user, None)
    store, _ = open_store(db)
    with store:
        if not dry_run and not yes:
            planned = collect(store, seconds, owner=owner, dry_run=True)
            if not planned:
                click.echo("nothing to remove")
                return
            for removal in planned:
                click.echo(
                    f"will remove {removal.run_id} ({removal.owner}, {removal.state}, "
                    f"last active {age(removal.last_activity)}) and {removal.run_dir}"
                )
            if as_json or not sys.stdin.isatty():
                raise BadInput(f"{len(planned)} run(s) would be removed: add --yes to remove them")
            click.confirm(f"Remove these {len(planned)} run(s)?", abort=True)
        removals = collect(store, seconds, owner=owner, dry_run=dry_run)
    if as_json:
        click.echo(
            json.dumps(
                {"dry_run": dry_run, "runs": [dataclasses.asdict(r) for r in removals]}, indent=2
            )
        )
        return
    verb = "would remove" if dry_run else "removed"
    for removal in removals:
        where = f" and {removal.run_dir}" if removal.dir_removed else ""
        click.echo(
            f"{verb} {removal.run_id} ({removal.owner}, {removal.state}, "
            f"last active {age(removal.last_activity)}){where}"
        )
        if removal.problem:
            click.echo(f"  warning: {removal.problem}", err=True)
    click.echo(f"{verb} {len(removals)} run(s)")
