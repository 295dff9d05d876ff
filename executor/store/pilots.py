"""A run's pilots (Parsl blocks) in the ``pilots`` table: one row per pool and block.

States are Parsl's ``JobState`` names in lower case; a pilot in one of
:data:`~executor.model.states.ENDED_PILOT_STATES` never runs again. The driver's
:class:`~executor.driver.pilots.PilotTracker` writes the rows as Parsl reports them;
a restart or cancel after a dead driver reads which pilots may still hold nodes, and
records them cancelled once it has cancelled them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from executor.model.states import ENDED_PILOT_STATES
from executor.store.database import Store

_UPSERT = (
    "INSERT INTO pilots (run_id, pool, block_id, job_id, state, submitted, start, end, node, "
    "cores, workers, message) VALUES (:run_id, :pool, :block_id, :job_id, :state, :submitted, "
    ":start, :end, :node, :cores, :workers, :message) "
    "ON CONFLICT (run_id, pool, block_id) DO UPDATE SET "
    "job_id = excluded.job_id, state = excluded.state, "
    "start = coalesce(excluded.start, pilots.start), end = excluded.end, "
    "node = coalesce(excluded.node, pilots.node), cores = excluded.cores, "
    "workers = coalesce(excluded.workers, pilots.workers), message = excluded.message"
)

# Where the backend does not say (or the pilot ended between polls), a pilot's node is
# where its jobs ran, and it started no later than its first job.
_FILL_FROM_ATTEMPTS = (
    "UPDATE pilots SET "
    "node = coalesce(node, (SELECT group_concat(DISTINCT a.host) FROM attempts a "
    "WHERE a.run_id = pilots.run_id AND a.pool = pilots.pool AND a.block_id = pilots.block_id)), "
    "start = coalesce(start, (SELECT min(a.start) FROM attempts a "
    "WHERE a.run_id = pilots.run_id AND a.pool = pilots.pool AND a.block_id = pilots.block_id)) "
    "WHERE run_id = ? AND (node IS NULL OR start IS NULL)"
)


def record_pilots(store: Store, run_id: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert or update pilot rows, then fill in nodes and starts from their attempts.

    Each row has every column of the ``pilots`` table. A start or node already
    recorded is kept when a row has none; the rest of the row replaces what was there.
    """
    rows = list(rows)

    def write(conn) -> None:
        conn.executemany(_UPSERT, rows)
        conn.execute(_FILL_FROM_ATTEMPTS, (run_id,))

    store.write(write)


def live_pilot_job_ids(store: Store, run_id: str) -> list[str]:
    """The batch job ids of the run's pilots that have not ended, as last recorded."""
    tables = {row["name"] for row in store.query("SELECT name FROM sqlite_master")}
    if "pilots" not in tables:  # a read-only store of a database from before pilots
        return []
    ended = sorted(ENDED_PILOT_STATES)
    rows = store.query(
        "SELECT job_id FROM pilots WHERE run_id = ? AND job_id IS NOT NULL "
        f"AND state NOT IN ({', '.join('?' * len(ended))})",
        [run_id, *ended],
    )
    return [row["job_id"] for row in rows]


def mark_pilots_cancelled(store: Store, run_id: str, job_ids: Sequence[str]) -> None:
    """Record the run's pilots in batch jobs ``job_ids`` as cancelled, ending now."""
    if not job_ids:
        return
    now = time.time()
    store.write(
        lambda conn: conn.execute(
            "UPDATE pilots SET state = 'cancelled', end = ? WHERE run_id = ? AND job_id IN "
            f"({', '.join('?' * len(job_ids))})",
            (now, run_id, *job_ids),
        )
    )


# Per pilot: allocated core-seconds (its cores from its start to its end, or now) and busy
# core-seconds (each attempt it ran, from start to end, clipped to the pilot's life,
# times the cores of one worker slot).
_USAGE = """
SELECT p.pool, p.block_id, p.job_id, p.state, p.start, p.end, p.cores, p.workers,
    CASE WHEN p.start IS NULL THEN 0.0
         ELSE max(0.0, coalesce(p.end, :now) - p.start) * coalesce(p.cores, 1) END
        AS allocated_core_seconds,
    coalesce((SELECT sum(max(0.0, min(coalesce(a.end, :now), coalesce(p.end, :now))
                              - max(a.start, coalesce(p.start, a.start))))
              FROM attempts a WHERE a.run_id = p.run_id AND a.pool = p.pool
              AND a.block_id = p.block_id AND a.start IS NOT NULL), 0.0)
        * coalesce(p.cores * 1.0 / nullif(p.workers, 0), 1.0) AS busy_core_seconds
FROM pilots p WHERE p.run_id = :run ORDER BY p.submitted, p.pool, p.block_id
"""


def pilot_usage(store: Store, run_id: str, now: float) -> list[dict[str, Any]]:
    """Each pilot of the run with its ``allocated_core_seconds`` and ``busy_core_seconds``
    (also ``pool``, ``block_id``, ``job_id``, ``state``, ``start``, ``end``, ``cores``,
    ``workers``); a pilot still up counts until ``now``."""
    return store.query(_USAGE, {"run": run_id, "now": now})
