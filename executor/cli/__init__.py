"""The ``pilot`` command: a thin click layer that parses, calls the library, and renders.

Library errors become exit code 2 with a one-paragraph message in one place
(:class:`PilotGroup`), except a site that fails under a running run (exit 1); job
outcomes map to exit codes 0 (all succeeded), 1 (some failed) and 130 (cancelled).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from executor._version import __version__
from executor.errors import PilotError, RunFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


class BadInput(click.ClickException):
    exit_code = EXIT_USAGE


class RunFailedExit(click.ClickException):
    exit_code = EXIT_FAILED


class PilotGroup(click.Group):
    """Converts library errors to clean messages: exit code 2 for bad input, 1 for a run
    whose site failed under it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunFailed as exc:
            raise RunFailedExit(
                f"{exc}\nsee `pilot report {exc.run_id}`; once the site works again, "
                f"`pilot restart {exc.run_id}` continues the run"
            ) from exc
        except PilotError as exc:  # a GraphError's text lists its problems
            raise BadInput(str(exc)) from exc


db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Monitoring database to use (its runs go next to it). "
    "Default: $PILOT_DB, else $PILOT_HOME/monitoring.db (~/.local/share/pilot).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
time_scale_option = click.option(
    "--time-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="WfFormat only: divide recorded runtimes by this.",
)

ship_option = click.option(
    "--ship",
    "ship",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    metavar="PATH",
    help="Ship this directory or file to the workers too (like the workflow's `code:`); "
    "repeatable.",
)


def describe_shipment(shipment) -> str:
    """One line: how many files, how big, and the tarball's hash."""
    from executor.model.units import format_bytes

    return (
        f"{len(shipment.files)} files, {format_bytes(shipment.content_bytes)} "
        f"({format_bytes(shipment.size)} packed), sha256 {shipment.sha256[:16]}"
    )


def console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def open_store(db: Path | None, site_db: str | None = None, *, create: bool = False):
    """The store and locations a command uses.

    Only ``create=True`` (``pilot submit``) may create the database: every other command
    reads runs that must already exist, so ``--db typo.db`` fails naming the file instead
    of leaving an empty database behind.
    """
    from executor.store import Store, locate

    locations = locate(db, site_db=site_db)
    if not create and not locations.db.is_file():
        raise BadInput(
            f"no monitoring database at {locations.db}; check --db or PILOT_DB (a database "
            "is created by the first `pilot submit` that uses it)"
        )
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


def run_filter(
    all_users: bool, user: str | None, since: str | None
) -> tuple[str | None, float | None]:
    """The owner (None: everyone) and the earliest creation time the options ask for."""
    import getpass

    from executor.model.units import parse_duration

    if all_users and user:
        raise BadInput("--all-users and --user NAME contradict each other; give one")
    owner = None if all_users else (user or getpass.getuser())
    cutoff = None
    if since is not None:
        try:
            cutoff = time.time() - parse_duration(since)
        except ValueError as exc:
            raise BadInput(f"--since: {exc}") from exc
    return owner, cutoff


# The commands live in one module per theme; importing them registers them on `cli`.
from executor.cli import inspecting, jobs, running, site_commands, web  # noqa: E402, F401


def main() -> None:
    cli(prog_name="pilot")
