"""A run switched to a revised workflow (``pilot restart --workflow``), in one transaction.

The jobs the revision redefines start over at pending from any state, succeeded
included: the one move out of succeeded that :mod:`executor.model.states` allows
(``REDEFINED_FROM``), and only for the jobs the caller names to rerun. Every other
job keeps its state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from executor.model.states import REDEFINED_FROM, JobState
from executor.store.database import Store


@dataclass(frozen=True)
class Revision:
    """What a revised workflow changes in its run's rows.

    Parameters
    ----------
    jobs
        Every job of the revised workflow in its order: name, label and command.
    added, removed, rerun
        Jobs new in the revision; jobs it no longer has; jobs that must run again
        (changed and added ones, and their descendants).
    workflow_hash, workflow_source, workflow_copy
        The sha256 of the revised copy's text, the file it was read from, and the copy.
    """

    jobs: Sequence[tuple[str, str, str]]
    added: Set[str]
    removed: Set[str]
    rerun: Set[str]
    workflow_hash: str
    workflow_source: str
    workflow_copy: str


def revise_jobs(store: Store, run: Mapping[str, Any], revision: Revision) -> None:
    """Switch ``run`` to ``revision``: its jobs, their resets and its workflow copy at once.

    Removed jobs are deleted, added ones inserted as pending, every job's position,
    label and command rewritten, the jobs to rerun moved to pending, the run row pointed
    at the revised copy, and a run event written, all in one transaction.
    """
    run_id = run["id"]
    now = time.time()
    marks = ", ".join("?" * len(REDEFINED_FROM))
    described = [(position, label, command, run_id, name)
                 for position, (name, label, command) in enumerate(revision.jobs)]  # fmt: skip
    detail = (
        f"workflow revised from {revision.workflow_source}: {len(revision.rerun)} to rerun, "
        f"{len(revision.added)} added, {len(revision.removed)} removed"
    )

    def write(conn) -> None:
        conn.executemany(
            "DELETE FROM jobs WHERE run_id = ? AND name = ?",
            [(run_id, name) for name in revision.removed],
        )
        conn.executemany(
            "INSERT INTO jobs (run_id, name, position, label, state, command) "
            "VALUES (?, ?, 0, '', ?, '')",
            [(run_id, name, JobState.PENDING.value) for name in revision.added],
        )
        conn.executemany(
            "UPDATE jobs SET position = ?, label = ?, command = ? WHERE run_id = ? AND name = ?",
            described,
        )
        # A job pending already stays as it is.
        conn.executemany(
            f"UPDATE jobs SET state = ?, updated = ? WHERE run_id = ? AND name = ? "
            f"AND state IN ({marks})",
            [(JobState.PENDING.value, now, run_id, name, *REDEFINED_FROM)
             for name in revision.rerun],
        )  # fmt: skip
        conn.execute(
            "UPDATE runs SET n_jobs = ?, workflow_hash = ?, workflow_source = ?, "
            "workflow_copy = ? WHERE id = ?",
            (len(revision.jobs), revision.workflow_hash, revision.workflow_source,
             revision.workflow_copy, run_id),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO events (run_id, time, job, state, detail) VALUES (?, ?, NULL, ?, ?)",
            (run_id, now, run["state"], detail),
        )

    store.write(write)
