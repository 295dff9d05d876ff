"""Where pilot keeps its database and run directories.

``PILOT_HOME`` (default ``~/.local/share/pilot``) holds ``monitoring.db``,
``runs/<run-id>/`` and ``assets/`` (what the runs' reports share, beside ``runs/``).
``PILOT_DB`` moves the database alone (a shared database);
``--db PATH`` on the command line moves both: the runs go next to that database.
A site file's ``monitoring_db:`` names a group's shared database for the runs on that
site; ``PILOT_DB`` and ``--db`` take precedence over it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Beside ``runs/``: reports reach it as ``../../assets/`` from ``runs/<id>/``.
ASSETS = "assets"


@dataclass(frozen=True)
class Locations:
    db: Path
    runs: Path

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    @property
    def assets(self) -> Path:
        """Files the runs' reports share (plotly.js), next to ``runs/``."""
        return self.runs.parent / ASSETS


def assets_of(run_dir: Path) -> Path:
    """The shared assets directory of the home that holds ``run_dir`` (``runs/<id>``).

    Reports load from it by a relative path, so it sits at a fixed place beside
    ``runs/``: the pair can be moved or copied together.
    """
    return run_dir.parent.parent / ASSETS


def locate(
    db: str | os.PathLike | None = None, *, site_db: str | os.PathLike | None = None
) -> Locations:
    """Resolve the database path and the runs directory.

    Parameters
    ----------
    db
        ``--db``: the database, with the runs next to it.
    site_db
        A site file's ``monitoring_db``: used when neither ``--db`` nor ``PILOT_DB``
        is set; the runs stay in ``PILOT_HOME``.
    """
    if db is not None:
        path = Path(db).expanduser().resolve()
        return Locations(db=path, runs=path.parent / "runs")
    home = Path(os.environ.get("PILOT_HOME") or Path.home() / ".local" / "share" / "pilot")
    home = home.expanduser().resolve()
    shared = os.environ.get("PILOT_DB") or (str(site_db) if site_db else None)
    db_path = Path(shared).expanduser().resolve() if shared else home / "monitoring.db"
    return Locations(db=db_path, runs=home / "runs")
