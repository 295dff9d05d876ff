"""What happened over a run's life, as plain data for the plots, reports and dashboard.

Attempts, pilots, how busy the allocation was over time, and runtime and peak memory
per label. Everything here shapes what :mod:`executor.store.history` reads and
tolerates older schemas: pilots come from the ``pilots`` table when it has rows for the
run, else they are derived from the attempts' Parsl block ids; memory summaries are
empty when attempts record no ``peak_rss_mb``.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections import defaultdict
from typing import Any

from executor.store import Store, history

# Beyond this many attempts the timeline shows the first ones only, so that a report
# of a 100,000-job run stays a few megabytes and renders in a browser.
TIMELINE_LIMIT = 20_000
# The occupancy series are reduced to about this many points (keeping each bin's peak).
OCCUPANCY_POINTS = 1_000


def timeline_attempts(
    store: Store, run_id: str, *, limit: int = TIMELINE_LIMIT, now: float | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Started attempts in start order (at most ``limit``) and how many there are in all.

    An attempt still running ends ``now`` as far as the plots are concerned.
    """
    now = time.time() if now is None else now
    return history.started_attempts(store, run_id, now=now, limit=limit)


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
    recorded = history.recorded_pilots(store, run_id, now=now)
    if recorded:
        return recorded, "pilots"
    return _started(history.pilots_from_attempts(store, run_id, now=now)), "attempts"


def pilot_activity(
    store: Store, run_id: str, *, now: float | None = None
) -> tuple[list[dict[str, Any]], str]:
    """:func:`pilot_spans`, each pilot with ``attempts`` (all it was given), ``running``
    (how many run now) and a ``host`` it ran on."""
    now = time.time() if now is None else now
    derived = history.pilots_from_attempts(store, run_id, now=now)
    recorded = history.recorded_pilots(store, run_id, now=now)
    spans, source = (recorded, "pilots") if recorded else (_started(derived), "attempts")
    counts = {str(row["block_id"]): row for row in derived}
    out = []
    for span in spans:
        row = counts.get(str(span["block_id"]), {})
        out.append(
            {
                **span,
                "attempts": row.get("attempts", 0),
                "running": row.get("running") or 0,
                "host": row.get("host"),
            }
        )
    return out, source


def _started(derived: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pilots of :func:`~executor.store.history.pilots_from_attempts` that started."""
    return [
        {"block_id": row["block_id"], "start": row["start"], "end": row["end"]}
        for row in derived
        if row["start"] is not None
    ]


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
    jobs = history.attempt_spans(store, run_id, now=now)
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


def _samples(rows: list[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per label, in the rows' order: runtimes, and the peak memory of those that have one."""
    runtimes: dict[str, list[float]] = defaultdict(list)
    peaks: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        runtimes[row["label"]].append(row["runtime"])
        if row["peak_rss_mb"] is not None:
            peaks[row["label"]].append(row["peak_rss_mb"])
    return runtimes, peaks


def distributions(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Per label: runtime (seconds) and peak memory (MB) of succeeded attempts.

    Returns five-number summaries rather than every value, so that a plot of a
    100,000-job run carries a few numbers per label. ``memory`` is ``None`` for a
    label (or every label) whose attempts record no peak memory.
    """
    runtimes, peaks = _samples(history.finished_attempts(store, run_id, state="succeeded"))
    return {
        label: {"runtime": _stats(values), "memory": _stats(peaks.get(label, []))}
        for label, values in runtimes.items()
    }


def label_usage(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Per label: jobs succeeded/failed, attempts, and the runtime and peak memory
    (median, max) of every attempt that ended, failed ones included."""
    runtimes, peaks = _samples(history.finished_attempts(store, run_id))
    usage = {}
    for row in history.label_totals(store, run_id):
        runtime = _stats(runtimes.get(row["label"], []))
        memory = _stats(peaks.get(row["label"], []))
        usage[row["label"]] = {
            "succeeded": row["succeeded"], "failed": row["failed"], "attempts": row["attempts"],
            "runtime": _median_max(runtime), "peak_memory_mb": _median_max(memory),
        }  # fmt: skip
    return usage


def _median_max(stats: dict[str, float] | None) -> dict[str, float | None]:
    if stats is None:
        return {"median": None, "max": None}
    return {"median": stats["median"], "max": stats["max"]}
