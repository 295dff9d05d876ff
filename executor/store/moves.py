"""Job-state writes, checked against the legal moves of :mod:`executor.model.states`.

A move is an ``UPDATE`` that matches a job only while its stored state is one of the
target's legal predecessors (:func:`~executor.model.states.legal_sources`), so the
check is part of the update: SQLite reads the row's state to update the row anyway,
and nothing is read back unless a move is refused. Bulk moves (a restart's reset, a
cancel) move exactly the jobs that may legally reach their target and leave the rest;
moves of named jobs (the driver's) must all apply, or the whole transaction fails with
a :class:`~executor.errors.StoreError` that names the job and its illegal move.

The two other writers of ``jobs.state`` take the table's two documented widenings:
recovery from the outcome log (:func:`executor.store.recorder.recover_outcomes`, moves
a dead driver never recorded) and a revised workflow
(:func:`executor.store.revisions.revise_jobs`, ``REDEFINED_FROM``).

States are passed as their string values here: the driver's recorder queues tens of
thousands of moves per flush, and hashing an :class:`~enum.Enum` member calls Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from sqlite3 import Connection

from executor.errors import StoreError
from executor.model.states import JobState, can_move, legal_sources

# The legal moves as (old, new) state values.
_LEGAL = frozenset(
    (old.value, new.value) for old in JobState for new in JobState if can_move(old, new)
)

# Job name -> (the first state queued for it, which must be legal from its stored state;
# the state it ends in; its attempt count, None to keep the stored one), as values.
Moves = Mapping[str, tuple[str, str, int | None]]


def legal(old: str, new: str) -> bool:
    """Whether a job may move from the state valued ``old`` to the one valued ``new``."""
    return (old, new) in _LEGAL


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _listed(states: Sequence[str]) -> str:
    # Written into the SQL, not bound: binding them again on every row of a 20,000-job
    # flush costs a tenth of its time. They are JobState values, never user input.
    assert all(state.isidentifier() for state in states)
    return ", ".join(f"'{state}'" for state in states)


def _illegal_move(run_id: str, job: str, old: str, new: str) -> StoreError:
    """The error for a refused move: names the job, the move and the legal ones."""
    sources = legal_sources(JobState(new))
    allowed = f"only from {', '.join(sources)}" if sources else "from no state"
    return StoreError(
        f"illegal move of job {job!r} in run {run_id}: {old} -> {new} (a job becomes "
        f"{new} {allowed}; see executor/model/states.py); nothing of this write was recorded"
    )


def apply_moves(conn: Connection, run_id: str, moves: Moves, now: float) -> None:
    """Record each job's queued moves, refusing them all if one first move is illegal.

    Parameters
    ----------
    conn
        A connection inside the caller's write transaction.
    run_id
        The run whose jobs move.
    moves
        As :data:`Moves`; the moves queued between a job's first and last state were
        checked as they were queued (:func:`legal`).
    now
        The jobs' ``updated`` time.

    Raises
    ------
    StoreError
        When a job is not in the run, or its stored state may not move to its first
        queued state; the caller's transaction must then be rolled back (``Store.write``
        does), so none of its writes is recorded.
    """
    groups: dict[str, list[tuple]] = {}
    for name, (first, last, attempts) in moves.items():
        groups.setdefault(first, []).append((last, attempts, now, run_id, name))
    # Only a refusal rolls back to here: to read the states the refused moves met.
    conn.execute("SAVEPOINT moves")
    for first, rows in groups.items():
        sources = _listed(legal_sources(JobState(first)))
        moved = conn.executemany(
            "UPDATE jobs SET state = ?, attempts = coalesce(?, attempts), updated = ? "
            f"WHERE run_id = ? AND name = ? AND state IN ({sources})",
            rows,
        ).rowcount
        if moved != len(rows):
            conn.execute("ROLLBACK TO moves")
            raise _first_refused(conn, run_id, first, [row[4] for row in rows])
    conn.execute("RELEASE moves")


def _first_refused(conn: Connection, run_id: str, new: str, names: list[str]) -> StoreError:
    for name in names:
        row = conn.execute(
            "SELECT state FROM jobs WHERE run_id = ? AND name = ?", (run_id, name)
        ).fetchone()
        if row is None:
            return StoreError(
                f"no job {name!r} in run {run_id}: cannot record it as {new}; "
                "nothing of this write was recorded"
            )
        if not legal(row[0], new):
            return _illegal_move(run_id, name, row[0], new)
    # Unreachable while one transaction holds the write lock; say so if it ever is not.
    return StoreError(f"moves of run {run_id} to {new} did not all apply, and none was refused")


def move_all(conn: Connection, run_id: str, target: JobState, now: float) -> int:
    """Move every job of the run that may legally reach ``target``; return how many moved.

    Jobs already in ``target``, and jobs that may not move there, keep their state.
    """
    sources = legal_sources(target)
    return conn.execute(
        f"UPDATE jobs SET state = ?, updated = ? WHERE run_id = ? AND state IN ({_marks(sources)})",
        (target.value, now, run_id, *sources),
    ).rowcount
