"""What a pool's work will look like soon: the look-ahead half of :mod:`executor.policy.elastic`.

Pure; no I/O and no clock. Three parts:

- :func:`forecast` turns plain data about the graph (running jobs and their expected
  ends, ready jobs and their expected runtimes, pending jobs and their unfinished
  parents) into one :class:`WorkView` per pool: the ready jobs as a histogram of
  expected runtimes, the remaining work of running jobs, and the jobs that become
  ready later in time buckets (:class:`Soon`). One pass over the jobs, parents
  before children.
- :func:`project` plays a pool's work forward over the queue wait with the capacity the
  pool has or will have, as a fluid: how many jobs and worker-seconds are still there
  at each step. :mod:`~executor.policy.elastic` reads the wanted capacity off it.
- :func:`queue_wait_estimate`: the median of recent pilots' submit-to-start times.

Expected ready times are optimistic: a pending job is ready when the last of its
parents is expected to end, as if every ready job started now. With too little
capacity the level comes later, and the pilots it called for wait a little for it;
the next decision (a few seconds later) sees the backlog and stops asking.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ReadyWork",
    "RunningWork",
    "Soon",
    "WorkView",
    "forecast",
    "project",
    "queue_wait_estimate",
]

#: Distinct runtimes a ready histogram keeps; beyond that neighbours are merged
#: (estimates are per label, so a pool rarely has more).
RUNTIME_BINS = 32
#: Recent pilots whose queue wait :func:`queue_wait_estimate` takes the median of.
RECENT_PILOTS = 20


@dataclass(frozen=True)
class ReadyWork:
    """Ready jobs of a pool, by expected runtime.

    Parameters
    ----------
    runtimes
        ``(expected runtime in seconds, jobs)`` pairs sorted by runtime. Jobs without
        an estimate carry the driver's default guess.
    """

    runtimes: tuple[tuple[float, int], ...] = ()

    @property
    def count(self) -> int:
        return sum(n for _, n in self.runtimes)

    @property
    def seconds(self) -> float:
        """Total expected worker-seconds."""
        return sum(r * n for r, n in self.runtimes)

    def quantile(self, q: float) -> float | None:
        """The expected runtime below which a fraction ``q`` of the ready jobs fall."""
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for runtime, n in self.runtimes:
            seen += n
            if seen >= rank:
                return runtime
        return self.runtimes[-1][0]


@dataclass(frozen=True)
class RunningWork:
    """Jobs of a pool running now, and their expected remaining worker-seconds."""

    count: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Soon:
    """Jobs that become ready at about ``at`` (the earliest of them), with their work."""

    at: float
    count: int
    seconds: float


@dataclass(frozen=True)
class WorkView:
    """A pool's work, aggregated so a decision is O(pilots + buckets), not O(jobs).

    Parameters
    ----------
    ready
        Ready jobs by expected runtime (what walltime checks need).
    soon
        Jobs that become ready later, in buckets sorted by time.
    running
        Jobs running now (on pilots of this pool).
    """

    ready: ReadyWork = ReadyWork()
    soon: tuple[Soon, ...] = ()
    running: RunningWork = RunningWork()

    @property
    def empty(self) -> bool:
        """Nothing ready, running or to come: the pool's work is done."""
        return not (self.ready.runtimes or self.soon or self.running.count)


def _compress(histogram: dict[float, int]) -> tuple[tuple[float, int], ...]:
    """Sorted ``(runtime, count)`` pairs, neighbours merged (count-weighted mean) beyond
    :data:`RUNTIME_BINS` so a decision stays cheap whatever the estimates."""
    pairs = sorted(histogram.items())
    if len(pairs) <= RUNTIME_BINS:
        return tuple(pairs)
    merged = []
    per_bin = math.ceil(len(pairs) / RUNTIME_BINS)
    for i in range(0, len(pairs), per_bin):
        group = pairs[i : i + per_bin]
        n = sum(c for _, c in group)
        merged.append((sum(r * c for r, c in group) / n, n))
    return tuple(merged)


def forecast(
    now: float,
    *,
    running: Iterable[tuple[str, str, float]],
    ready: Iterable[tuple[str, str, float]],
    pending: Iterable[tuple[str, str, float, Sequence[str]]],
    horizon: float,
    buckets: int = 24,
) -> dict[str, WorkView]:
    """Each pool's work now and soon, from plain data about the graph; O(jobs + edges).

    Parameters
    ----------
    now
        The time of the decision (seconds, the driver's clock).
    running
        ``(job, pool, expected end)`` of each running job: its start plus its expected
        runtime. An end already past counts as now (the job ends any moment).
    ready
        ``(job, pool, expected runtime)`` of each ready job; it is expected to end at
        ``now + runtime``.
    pending
        ``(job, pool, expected runtime, unfinished parents)`` of each job not yet ready,
        every job after its pending parents (the graph's topological order does that).
        Its expected ready time is the latest expected end of its parents.
    horizon
        Seconds ahead the buckets resolve finely: ``buckets`` equal time bins cover
        it. Beyond it bins double in length (``[h, 2h)``, ``[2h, 4h)``, ...), so a
        wide level far ahead is not merged with a job just past the horizon. A bucket
        is dated by its earliest job, so make ``horizon`` at least the queue wait: a
        coarse bin then starts beyond what a decision acts on now.

    Returns
    -------
    dict
        Pool name to its :class:`WorkView`, for every pool that has a job here.

    Raises
    ------
    ValueError
        When a parent is neither running, ready nor pending before its child.
    """
    ends: dict[str, float] = {}
    running_by_pool: dict[str, list[float]] = {}  # pool -> [jobs, remaining seconds]
    ready_by_pool: dict[str, dict[float, int]] = {}  # pool -> {runtime: jobs}
    for name, pool, end in running:
        end = max(end, now)
        ends[name] = end
        totals = running_by_pool.setdefault(pool, [0, 0.0])
        totals[0] += 1
        totals[1] += end - now
    for name, pool, runtime in ready:
        ends[name] = now + runtime
        histogram = ready_by_pool.setdefault(pool, {})
        histogram[runtime] = histogram.get(runtime, 0) + 1
    fine = horizon > 0 and buckets > 0
    width = horizon / buckets if fine else 1.0
    # (pool, bin) -> [earliest ready time, jobs, worker-seconds]; one lookup per job.
    bins: dict[tuple[str, int], list] = {}
    for name, pool, runtime, parents in pending:
        at = now
        for parent in parents:
            try:
                end = ends[parent]
            except KeyError:
                raise ValueError(
                    f"job {name!r}: parent {parent!r} is neither running, ready nor pending "
                    "before it; pass pending jobs in topological order"
                ) from None
            if end > at:
                at = end
        ends[name] = at + runtime
        ahead = at - now
        if ahead < horizon:
            index = int(ahead / width) if fine else 0
        else:  # coarse bins beyond the horizon, doubling (at most 2^40 horizons ahead)
            index = buckets + min(40, int(math.log2(ahead / horizon)) if horizon > 0 else 0)
        bucket = bins.get((pool, index))
        if bucket is None:
            bins[pool, index] = [at, 1, runtime]
        else:
            if at < bucket[0]:
                bucket[0] = at
            bucket[1] += 1
            bucket[2] += runtime
    soon: dict[str, list[Soon]] = {}
    for (pool, _), (at, n, seconds) in sorted(bins.items()):
        soon.setdefault(pool, []).append(Soon(at, n, seconds))
    return {
        pool: WorkView(
            ready=ReadyWork(_compress(ready_by_pool.get(pool, {}))),
            soon=tuple(soon.get(pool, ())),
            running=RunningWork(*running_by_pool.get(pool, (0, 0.0))),
        )
        for pool in sorted(set(running_by_pool) | set(ready_by_pool) | set(soon))
    }


@dataclass(frozen=True)
class Capacity:
    """``slots`` workers that take work from ``start`` until ``end``; with
    ``running_only`` (a draining pilot) they only finish the jobs running now."""

    start: float
    end: float
    slots: int
    running_only: bool = False


@dataclass(frozen=True)
class Projection:
    """Jobs and worker-seconds present (ready or running) at each step of :func:`project`."""

    times: tuple[float, ...]
    jobs: tuple[float, ...]
    seconds: tuple[float, ...]


def project(
    now: float, until: float, work: WorkView, capacity: Sequence[Capacity], steps: int = 16
) -> Projection:
    """Play ``work`` forward from ``now`` to ``until`` on ``capacity``, as a fluid.

    At each of ``steps`` equal steps, soon buckets that have arrived join the work, and
    the slots then available are shared out: running jobs keep theirs (draining pilots'
    slots serve only them), then ready
    buckets take slots shortest runtime first, each at most one slot per job (so a
    single long job is one slot however many are free). A bucket with a slot for every
    job runs as one wave (each job's remaining time shrinks); one with fewer slots
    runs at its slots' pace, finishing jobs at its mean runtime. O(steps × buckets).

    Returns
    -------
    Projection
        The state at ``now`` and after each step, ending at ``until``.
    """
    # Each bucket is [per-job runtime key, jobs, seconds]; running work sorts first.
    present: list[list[float]] = []
    if work.running.count:
        present.append([-math.inf, float(work.running.count), work.running.seconds])
    for runtime, count in work.ready.runtimes:
        present.append([runtime, float(count), runtime * count])
    present.sort(key=lambda b: b[0])
    later = list(work.soon)
    arrived = 0

    def admit(t: float) -> None:
        nonlocal arrived
        while arrived < len(later) and later[arrived].at <= t:
            s = later[arrived]
            arrived += 1
            if s.count:
                bisect.insort(present, [s.seconds / s.count, float(s.count), s.seconds],
                              key=lambda b: b[0])  # fmt: skip

    admit(now)
    times, jobs, seconds = [now], [sum(b[1] for b in present)], [sum(b[2] for b in present)]
    span = max(0.0, until - now)
    steps = steps if span > 0 else 0
    dt = span / steps if steps else 0.0
    for k in range(steps):
        t = now + k * dt
        if k:
            admit(t)
        alive = [c for c in capacity if c.start <= t < c.end]
        free: float = sum(c.slots for c in alive)
        new_work: float = sum(c.slots for c in alive if not c.running_only)
        kept = []
        for bucket in present:
            key, n, s = bucket
            share = min(n, free)
            free -= share
            if key == -math.inf:  # running jobs first, on draining pilots' slots first
                free = min(free, new_work)
            if share >= n:  # one wave: every job has a slot
                if s / n > dt:
                    bucket[2] = s - n * dt
                    kept.append(bucket)
            elif share > 0:
                mean = s / n
                done = share * dt
                if done < s:
                    bucket[1] = n - done / mean
                    bucket[2] = s - done
                    kept.append(bucket)
            else:
                kept.append(bucket)
        present = kept
        times.append(t + dt)
        jobs.append(sum(b[1] for b in present))
        seconds.append(sum(b[2] for b in present))
    before = arrived
    admit(until)  # buckets due by the end are there when a pilot submitted now arrives
    if arrived != before:
        jobs[-1] = sum(b[1] for b in present)
        seconds[-1] = sum(b[2] for b in present)
    return Projection(tuple(times), tuple(jobs), tuple(seconds))


def queue_wait_estimate(
    observed_waits: Sequence[float], still_queued: Sequence[float] = ()
) -> float | None:
    """A robust queue wait: the median submit-to-start time of the last pilots.

    Parameters
    ----------
    observed_waits
        Seconds from submission to start of this site's started pilots, in the order
        they were *submitted* (in the order they started, the last of a burst are its
        slowest, and the estimate would swing with each burst). Only the last
        :data:`RECENT_PILOTS` count: a queue's wait drifts over a day, and the median
        ignores the odd pilot that sat behind a reservation.
    still_queued
        How long each pilot still queued *and submitted after the oldest of those
        last observed ones* has waited so far (so the sample is every pilot submitted
        since). Each is a wait known only to be at least that long (censored), so the
        median is the Kaplan-Meier one: the first starts of a burst of submissions are
        its quickest, and without the rest the estimate would drop just when the queue
        is slow. A pilot queued for a moment says nothing and changes nothing.

    Returns
    -------
    float or None
        ``None`` before any pilot has started. When more than half the pilots are
        still queued, the longest wait seen: the median is at least that.
    """
    recent = [(w, True) for w in observed_waits[-RECENT_PILOTS:] if w >= 0 and math.isfinite(w)]
    if not recent:
        return None
    if not still_queued:
        return statistics.median(w for w, _ in recent)
    # Kaplan-Meier: at each start, the pilots at risk are those not yet started nor
    # censored; the survival (still queued) falls by 1/at-risk; median where it is 1/2.
    # At a tie a start comes before a censoring (the censored pilot outlived it).
    sample = sorted(
        recent + [(w, False) for w in still_queued if w >= 0], key=lambda x: (x[0], not x[1])
    )
    at_risk, survival = len(sample), 1.0
    for wait, started in sample:
        if started:
            survival *= 1 - 1 / at_risk
            if survival <= 0.5:
                return wait
        at_risk -= 1
    return sample[-1][0]
