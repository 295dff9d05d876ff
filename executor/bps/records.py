"""What ties a bps submission to its pilot run: small JSON files on both sides.

- In bps's submit directory: ``pilot_run.json`` (the run id and the database it is
  recorded in) and ``pilot_run``, a link to the pilot run directory (logs, workflow
  copy, driver log).
- In the pilot run directory: ``bps.json`` (the submit directory, bps's run name and
  which jobs are bps's init and final jobs), the mark of a run bps submitted.

Every bps command takes a run id or a submit directory: :func:`locate_run` finds the
run's database either way. A bare run id is looked up where pilot looks
(``PILOT_DB``, or ``PILOT_HOME``'s ``monitoring.db``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.errors import RunNotFound
from executor.store import Store, locate

SUBMIT_RECORD = "pilot_run.json"
SUBMIT_LINK = "pilot_run"
RUN_RECORD = "bps.json"


@dataclass(frozen=True)
class Located:
    """Where a run given to a bps command is recorded."""

    run_id: str | None  # None: every run of the database (a report of all runs)
    db: Path
    submit_path: Path | None = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` whole or not at all (a reader never sees half a file)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(partial, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def link_submit_dir(
    submit_path: Path, *, run_id: str, db: Path, run_dir: Path, bps_name: str
) -> None:
    """Record the run in bps's submit directory: its id, its database, a link to its files."""
    submit_path.mkdir(parents=True, exist_ok=True)
    write_json(
        submit_path / SUBMIT_RECORD,
        {"run_id": run_id, "db": str(db), "run_dir": str(run_dir), "bps_run_name": bps_name},
    )
    link = submit_path / SUBMIT_LINK
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(run_dir, target_is_directory=True)


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(run_dir / RUN_RECORD, record)


def run_record(run: dict[str, Any]) -> dict[str, Any] | None:
    """The bps facts of a pilot run (``None``: bps did not submit it)."""
    return read_json(Path(run["run_dir"]) / RUN_RECORD)


def default_db() -> Path:
    return locate().db


def locate_run(wms_id: str | os.PathLike | None) -> Located:
    """The run and database that ``wms_id`` (a run id or a bps submit directory) names."""
    if wms_id is None or str(wms_id) == "":
        return Located(run_id=None, db=default_db())
    path = Path(str(wms_id)).expanduser()
    if path.is_dir():
        record = read_json(path / SUBMIT_RECORD)
        if record is None:
            raise RunNotFound(
                f"{path} is a directory without {SUBMIT_RECORD}: not a bps submit directory "
                "of a pilot run; give the run id that `bps submit` printed"
            )
        return Located(run_id=record["run_id"], db=Path(record["db"]), submit_path=path.resolve())
    return Located(run_id=str(wms_id), db=default_db())


def open_existing(db: Path) -> Store | None:
    """The database, if it exists (reading commands never create one)."""
    return Store(db) if db.is_file() else None
