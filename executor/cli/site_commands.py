"""Commands about sites: list the site files, check that a site is usable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from executor.cli import (
    cli,
    console,
    json_option,
)


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@json_option
def sites(directory: Path | None, as_json: bool) -> None:
    """List the sites `--site` accepts: files in ./site_configs/, ~/.config/pilot/sites/,
    the ones shipped with pilot, or DIRECTORY, with their backend. The first file of a
    name wins.

    \b
    Examples:
      pilot sites
      pilot sites /sdf/group/rubin/pilot-sites --json
    """
    from executor.errors import ConfigError
    from executor.sites import get_site, site_files

    rows: list[dict[str, Any]] = []
    for name, path in site_files(directory):
        try:
            site = get_site(str(path) if path else name)
            backend, problem = site.backend, None
        except ConfigError as exc:
            backend, problem = "?", str(exc)
        rows.append({"site": name, "backend": backend, "file": str(path) if path else None,
                     "problem": problem})  # fmt: skip
    if as_json:
        click.echo(json.dumps({"sites": rows}, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("site", "backend", "file"):
        table.add_column(column)
    for row in rows:
        where = row["file"] or "(built in)"
        if row["problem"]:
            where += f"  INVALID: {row['problem']}"
        table.add_row(Text(row["site"]), Text(row["backend"]), Text(where))
    console().print(table)


@cli.command()
@click.argument("site")
def ping(site: str) -> None:
    """Check that SITE can run pilots, without submitting one.

    For Slurm: `sbatch` and `squeue` answer, the partition exists, and the account,
    qos and limits are accepted (`sbatch --test-only`). Exit code 0 when usable, 1
    when not (with what to fix), 2 when the site file itself is wrong.

    \b
    Examples:
      pilot ping slurm-local
      pilot ping ~/.config/pilot/sites/usdf-slurm.yaml
    """
    from executor.errors import SiteError
    from executor.sites import get_site

    site_config = get_site(site)
    try:
        checks = site_config.ping()
    except SiteError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in checks:
        click.echo(f"ok  {line}")
    click.echo(f"site {site_config.name!r} ({site_config.backend}) is usable")
