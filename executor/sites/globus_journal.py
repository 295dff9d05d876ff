"""The journal of a run's Globus Compute tasks: what was sent, and what came back.

Each pool's executor appends a ``sent`` line per task (its id, endpoint, task group
and the bundle's ``(job, attempt)`` members) once the service has named it, and a
``done`` line when its result arrives. The service keeps running a task whose
driver died, so a new driver of the run reads here which tasks to reattach to
(``reload_tasks`` of their task group) instead of running their jobs again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Beside Parsl's numbered run directories (runs/<id>/parsl/), so each restart finds it.
JOURNAL = "globus-tasks.jsonl"


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """The tasks the journal says were sent and never came back, by task id."""
    sent: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return sent
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if record.get("event") == "sent":
            sent[record["task_id"]] = record
        elif record.get("event") == "done":
            sent.pop(record.get("task_id"), None)
    return sent


def unfinished_by_group(path: Path, pool: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The pool's tasks still out, per ``(endpoint id, task group id)``.

    A bundle sent again (its first endpoint left the rotation) has two ``sent`` lines
    and the same members: only its latest send counts, as for the driver that sent it.
    """
    latest: dict[tuple, dict[str, Any]] = {}
    for record in read_journal(path).values():
        if record.get("pool") != pool or not record.get("task_group_id"):
            continue
        members = tuple(tuple(member) for member in record["members"])
        if members not in latest or record.get("time", 0) >= latest[members].get("time", 0):
            latest[members] = record
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in latest.values():
        groups.setdefault((record["endpoint_id"], record["task_group_id"]), []).append(record)
    return groups
