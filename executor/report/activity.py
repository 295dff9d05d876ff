"""What happened over a run's life, as plain data for the plots and the dashboard.

Attempts, pilots, how busy the allocation was over time, runtime and peak-memory
distributions per label, and failures grouped by cause. Everything here reads the store
only and tolerates older or newer schemas: pilots come from a ``pilots`` table when one
exists and has rows for the run, else they are derived from the attempts' Parsl block
ids; the memory distribution is empty when attempts record no ``peak_rss_mb``.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from executor.report.failures import tail
from executor.report.retries import recovered_by
from executor.store import Store

# Beyond this many attempts the timeline shows the first ones only, so that a report
# of a 100,000-job run stays a few megabytes and renders in a browser.
TIMELINE_LIMIT = 20_000
# The occupancy series are reduced to about this many points (keeping each bin's peak).
OCCUPANCY_POINTS = 1_000


# Block ids restart at 0 in every pool: a pilot is known by its pool and block id.
_PILOT_KEY = "CASE WHEN a.pool IS NULL THEN a.block_id ELSE a.pool || '/' || a.block_id END"


def timeline_attempts(
    store: Store, run_id: str, *, limit: int = TIMELINE_LIMIT, now: float | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Started attempts in start order (at most ``limit``) and how many there are in all.

    An attempt still running ends ``now`` as far as the plots are concerned.
    """
    now = time.time() if now is None else now
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


def assign_lanes(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each attempt a lane ``(pilot, slot)`` so that no two in one lane overlap.

    Attempts must be in start order. A pilot runs several jobs at once; each slot is
    one row of the Gantt chart, reused as soon as its previous job ended.
    """
    free: dict[str, list[tuple[float, int]]] = defaultdict(list)  # pilot -> heap of (end, slot)
    used: dict[str, int] = defaultdict(int)
    out = []
    for row in attempts:
        pilot = str(row["block_id"]) if row["block_id"] is not None else "?"
        heap = free[pilot]
        if heap and heap[0][0] <= row["start"]:
            _, slot = heapq.heappop(heap)
        else:
            slot = used[pilot]
            used[pilot] += 1
        heapq.heappush(heap, (row["end"], slot))
        out.append({**row, "pilot": pilot, "slot": slot})
    return out


def pilot_spans(
    store: Store, run_id: str, *, now: float | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The run's pilots with start and end, and where they came from.

    Returns
    -------
    pilots, source
        ``source`` is ``"pilots"`` when the store records pilots, ``"attempts"`` when
        each pilot spans the first start to the last end of the attempts it ran.
    """
    now = time.time() if now is None else now
    rows = store.query(
        "SELECT pool || '/' || block_id AS block_id, start, coalesce(end, ?) AS end "
        "FROM pilots WHERE run_id = ? AND start IS NOT NULL ORDER BY start",
        [now, run_id],
    )
    if rows:
        return rows, "pilots"
    rows = store.query(
        f"SELECT {_PILOT_KEY} AS block_id, min(a.start) AS start, "
        "max(coalesce(a.end, ?)) AS end FROM attempts a "
        "WHERE a.run_id = ? AND a.start IS NOT NULL AND a.block_id IS NOT NULL "
        f"GROUP BY {_PILOT_KEY} ORDER BY min(a.start)",
        [now, run_id],
    )
    return rows, "attempts"


def _sweep(spans: list[tuple[float, float]]) -> list[tuple[float, int]]:
    """The step function "how many spans are open" at each start or end."""
    changes = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    points: list[tuple[float, int]] = []
    level = 0
    for when, delta in changes:
        level += delta
        if points and points[-1][0] == when:
            points[-1] = (when, level)
        else:
            points.append((when, level))
    return points


def _reduce(points: list[tuple[float, int]], bins: int) -> list[tuple[float, int]]:
    """At most ``bins`` points, each the highest level in its time bin (peaks survive)."""
    if len(points) <= bins:
        return points
    first, last = points[0][0], points[-1][0]
    width = (last - first) / bins or 1.0
    best: dict[int, tuple[float, int]] = {}
    for when, level in points:
        index = min(int((when - first) / width), bins - 1)
        if index not in best or level > best[index][1]:
            best[index] = (first + index * width, level)
    reduced = [best[i] for i in sorted(best)]
    reduced.append((last, points[-1][1]))
    return reduced


def occupancy(
    store: Store, run_id: str, *, now: float | None = None, points: int = OCCUPANCY_POINTS
) -> dict[str, Any]:
    """Running jobs and live pilots over time: how busy the allocation was."""
    now = time.time() if now is None else now
    jobs = store.query(
        "SELECT start, coalesce(end, ?) AS end FROM attempts "
        "WHERE run_id = ? AND start IS NOT NULL",
        [now, run_id],
    )
    pilots, source = pilot_spans(store, run_id, now=now)
    return {
        "running": _reduce(_sweep([(r["start"], r["end"]) for r in jobs]), points),
        "pilots": _reduce(_sweep([(p["start"], p["end"]) for p in pilots]), points),
        "pilot_source": source,
    }


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values = sorted(values)
    if len(values) == 1:
        q1 = median = q3 = values[0]
    else:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "n": len(values), "min": values[0], "q1": q1, "median": median, "q3": q3,
        "max": values[-1], "mean": statistics.fmean(values),
    }  # fmt: skip


def distributions(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Per label: runtime (seconds) and peak memory (MB) of succeeded attempts.

    Returns five-number summaries rather than every value, so that a plot of a
    100,000-job run carries a few numbers per label. ``memory`` is ``None`` for a
    label (or every label) whose attempts record no peak memory.
    """
    runtimes: dict[str, list[float]] = defaultdict(list)
    peaks: dict[str, list[float]] = defaultdict(list)
    for row in store.query(
        "SELECT j.label, a.end - a.start AS runtime, a.peak_rss_mb AS peak FROM attempts a "
        "JOIN jobs j ON j.run_id = a.run_id AND j.name = a.job "
        "WHERE a.run_id = ? AND a.state = 'succeeded' AND a.start IS NOT NULL "
        "AND a.end IS NOT NULL ORDER BY j.position",
        [run_id],
    ):
        runtimes[row["label"]].append(row["runtime"])
        if row["peak"] is not None:
            peaks[row["label"]].append(row["peak"])
    return {
        label: {"runtime": _stats(values), "memory": _stats(peaks.get(label, []))}
        for label, values in runtimes.items()
    }


def _cause(row: dict[str, Any]) -> str:
    if row["failure_class"] == "exit_code" or (row["failure_class"] is None and row["exit_code"]):
        return f"exit code {row['exit_code']}"
    if row["failure_class"] == "signal" and row["signal"]:
        return f"killed by signal {row['signal']}"
    return row["failure_class"] or "failed"


def safe_log(path: str | None, run_dir: str | None) -> str | None:
    """``path`` if it is a log inside the run's ``logs/`` directory, else ``None``.

    Log paths come from a database that a whole group writes; the dashboard must not
    become a way to read any other file the viewing user can read.
    """
    if not path or not run_dir:
        return None
    resolved = Path(path).resolve()
    logs = (Path(run_dir) / "logs").resolve()
    if logs in resolved.parents and resolved.suffix in (".out", ".err"):
        return str(resolved)
    return None


def failure_groups(
    store: Store,
    run_id: str,
    *,
    tail_lines: int = 10,
    examples: int = 5,
    retried: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Jobs that failed for good, grouped by cause (largest group first).

    Each group has its cause, label(s), count, a few job names and the stderr tail of
    its first job: one failure mode read once, not a thousand times. With ``retried``
    (the ``jobs`` of :func:`~executor.report.retries.retry_summary`), each group also
    has ``recovered`` and a few ``recovered_jobs``: jobs that failed that way and then
    succeeded. A cause only recovered from is a group with ``count`` 0 whose example is
    its first failed attempt.
    """
    rows = store.query(
        "SELECT j.name, j.label, j.attempts, a.exit_code, a.signal, a.failure_class, "
        "a.message, a.stderr, r.run_dir FROM jobs j JOIN runs r ON r.id = j.run_id "
        "LEFT JOIN attempts a ON a.run_id = j.run_id AND a.job = j.name AND a.attempt = j.attempts "
        "WHERE j.run_id = ? AND j.state = 'failed' ORDER BY j.position",
        [run_id],
    )
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def group_of(key: tuple[str, str], example: dict[str, Any]) -> dict[str, Any]:
        group = groups.get(key)
        if group is None:
            stderr = safe_log(example["stderr"], example["run_dir"])
            group = groups[key] = {
                "cause": key[0], "label": key[1], "count": 0, "jobs": [],
                "message": example["message"], "example": example["name"], "stderr": stderr,
                "stderr_tail": tail(stderr, tail_lines), "recovered": 0, "recovered_jobs": [],
            }  # fmt: skip
        return group

    for row in rows:
        group = group_of((_cause(row), row["label"]), row)
        group["count"] += 1
        if len(group["jobs"]) < examples:
            group["jobs"].append(row["name"])
    recovered = recovered_by(retried or [], lambda a: (_cause(a), a["label"]))
    run_dir = (
        store.query("SELECT run_dir FROM runs WHERE id = ?", [run_id])[0]["run_dir"]
        if recovered
        else None
    )
    for key, attempts in recovered.items():
        group = group_of(key, {**attempts[0], "name": attempts[0]["job"], "run_dir": run_dir})
        group["recovered"] += len(attempts)
        group["recovered_jobs"].extend(a["job"] for a in attempts[:examples])
    return sorted(groups.values(), key=lambda g: (-g["count"], -g["recovered"]))
