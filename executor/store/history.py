"""A run's history as the reports read it: its attempts, its pilots and its failures.

The read-only questions behind ``pilot report`` (text, ``--json``, HTML) and the
dashboard, each one query that returns plain rows; shaping them into tables, groups and
plots is :mod:`executor.report`'s business. The dashboard asks several of these every
few seconds while a run goes, so each reads one run through the primary keys or an
index (``tests/test_history.py`` checks their query plans on a large database).

Times are seconds since the epoch; an attempt still running ends ``now``, which the
caller passes in, so that every question asked for one page agrees on it.
"""

from __future__ import annotations

from typing import Any

from executor.store.database import Store

# Block ids restart at 0 in every pool: a pilot is known by its pool and block id
# (attempts recorded before pools existed have none).
_PILOT_KEY = "CASE WHEN a.pool IS NULL THEN a.block_id ELSE a.pool || '/' || a.block_id END"


def started_attempts(
    store: Store, run_id: str, *, now: float, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """The first ``limit`` attempts that started, in start order, and how many started.

    Each row has the attempt's ``job``, ``attempt``, ``state``, ``start``, ``end``, its
    pilot's ``block_id`` (pool and block), ``host``, ``failure_class`` and the job's
    ``label``. Both read the ``attempts_run_start`` index.
    """
    total = store.query(
        "SELECT count(*) AS n FROM attempts WHERE run_id = ? AND start IS NOT NULL", [run_id]
    )[0]["n"]
    rows = store.query(
        "SELECT a.job, a.attempt, a.state, a.start, coalesce(a.end, ?) AS end, "
        f"{_PILOT_KEY} AS block_id, a.host, a.failure_class, j.label FROM attempts a "
        "JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ? AND a.start IS NOT NULL ORDER BY a.start LIMIT ?",
        [now, run_id, limit],
    )
    return rows, total


def attempt_spans(store: Store, run_id: str, *, now: float) -> list[dict[str, Any]]:
    """``start`` and ``end`` of every attempt that started, in no particular order."""
    return store.query(
        "SELECT start, coalesce(end, ?) AS end FROM attempts "
        "WHERE run_id = ? AND start IS NOT NULL",
        [now, run_id],
    )


def recorded_pilots(store: Store, run_id: str, *, now: float) -> list[dict[str, Any]]:
    """The pilots the driver recorded that started: ``block_id`` (``pool/block``),
    ``start`` and ``end``, oldest first. Empty for runs from before pilots were recorded.
    """
    return store.query(
        "SELECT pool || '/' || block_id AS block_id, start, coalesce(end, ?) AS end "
        "FROM pilots WHERE run_id = ? AND start IS NOT NULL ORDER BY start",
        [now, run_id],
    )


def pilots_from_attempts(store: Store, run_id: str, *, now: float) -> list[dict[str, Any]]:
    """Each pilot that attempts name, as those attempts tell it, in order of first start.

    Per pilot: ``block_id`` (``pool/block``, or the block alone for attempts without a
    pool), ``start`` and ``end`` (first start and last end of its attempts; ``None``
    while none started), ``attempts`` (all it was given), ``running`` (how many run now)
    and a ``host`` it ran on. One pass over the run's attempts serves both the pilots of
    runs that recorded none and the attempt counts of those that did.
    """
    return store.query(
        f"SELECT {_PILOT_KEY} AS block_id, min(a.start) AS start, "
        "max(CASE WHEN a.start IS NOT NULL THEN coalesce(a.end, ?) END) AS end, "
        "count(*) AS attempts, sum(a.state = 'running') AS running, max(a.host) AS host "
        "FROM attempts a WHERE a.run_id = ? AND a.block_id IS NOT NULL "
        f"GROUP BY {_PILOT_KEY} ORDER BY min(a.start)",
        [now, run_id],
    )


def finished_attempts(
    store: Store, run_id: str, *, state: str | None = None
) -> list[dict[str, Any]]:
    """Attempts that started and ended (only those in ``state``, if given), in workflow order.

    Each row has the job's ``label``, the attempt's ``state``, ``runtime`` (seconds) and
    ``peak_rss_mb`` (``None`` where it was not measured).
    """
    where = "" if state is None else " AND a.state = ?"
    return store.query(
        "SELECT j.label, a.state, a.end - a.start AS runtime, a.peak_rss_mb FROM attempts a "
        "JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        f"WHERE a.run_id = ? AND a.start IS NOT NULL AND a.end IS NOT NULL{where} "
        "ORDER BY j.position, a.attempt",
        [run_id] if state is None else [run_id, state],
    )


def label_totals(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Per label, in workflow order: jobs ``succeeded`` and ``failed``, and ``attempts``
    (every attempt of its jobs)."""
    return store.query(
        "SELECT label, sum(state = 'succeeded') AS succeeded, sum(state = 'failed') AS failed, "
        "sum(attempts) AS attempts FROM jobs WHERE run_id = ? "
        "GROUP BY label ORDER BY min(position)",
        [run_id],
    )


def failed_attempts(store: Store, run_id: str, *, excluding: str) -> list[dict[str, Any]]:
    """Every failed attempt, in workflow order then attempt order, except those whose
    failure class is ``excluding`` (an attempt stopped by a cancel is no failure).

    Each row has every column of the attempt (``job``, ``attempt``, ``failure_class``,
    ``exit_code``, ``signal``, ``message``, ``memory_mb``, ``peak_rss_mb``, ``pool``,
    ``host``, ``start``, ``end``, ``stderr``, ...) and its job's ``label``, final
    ``job_state``, ``job_attempts`` and ``command``.
    """
    return store.query(
        "SELECT a.*, j.label, j.state AS job_state, j.attempts AS job_attempts, j.command "
        "FROM attempts a JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ? AND a.state = 'failed' AND coalesce(a.failure_class, '') != ? "
        "ORDER BY j.position, a.attempt",
        [run_id, excluding],
    )
