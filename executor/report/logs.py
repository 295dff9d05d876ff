"""The last lines of a job's log, read only from inside its run's ``logs/`` directory.

Log paths come from a database that a whole group writes: a report or the dashboard
must not become a way to read any other file the viewing user can read.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path


def safe_log(path: str | None, run_dir: str | None) -> str | None:
    """``path`` if it is a log inside the run's ``logs/`` directory, else ``None``."""
    if not path or not run_dir:
        return None
    resolved = Path(path).resolve()
    logs = (Path(run_dir) / "logs").resolve()
    if logs in resolved.parents and resolved.suffix in (".out", ".err"):
        return str(resolved)
    return None


def tail(path: str | None, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (empty if it is missing)."""
    if not path or lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            last = deque(handle, maxlen=lines)
    except OSError:
        return []
    return [line.decode("utf-8", "replace").rstrip("\n") for line in last]


def log_tail(path: str | None, run_dir: str | None, lines: int) -> list[str]:
    """The last ``lines`` lines of a job's log, or none if it lies outside ``run_dir``."""
    return tail(safe_log(path, run_dir), lines)
