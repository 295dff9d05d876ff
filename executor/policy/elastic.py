"""Elastic scaling of one pool: how many pilots to submit, which to drain or release.

Pure: :func:`decide` is a function of plain data (:class:`ScalingInput`, ``now``
passed in); the driver gathers the data, applies the :class:`Decision` and logs its
``reason``. One call costs O(pilots + buckets), whatever the number of jobs: the
work comes aggregated (:class:`~executor.policy.lookahead.WorkView`, built by
:func:`~executor.policy.lookahead.forecast`).

The algorithm
-------------
*Queue wait.* ``qw`` is the measured wait of this site's recent pilots
(:func:`~executor.policy.lookahead.queue_wait_estimate`), or ``queue_wait_default``
before any started. A pilot submitted now is expected up at ``arrival = now + qw``.

*Walltime.* HTEx cannot send a task to a chosen block, so a pilot near its walltime
cannot be kept from long jobs; it is *drained* instead (the driver sends it nothing
more and releases it once idle). The cut-off is the ``drain_quantile`` (default: the
median) of the ready jobs' expected runtimes: a running pilot whose remaining walltime
is shorter is drained, since more than half the jobs it could be handed would be
killed at its end. The shortest runtime would keep a pilot that kills nearly every job
whenever one quick label is ready; the longest would drain a pilot that could still
run most of the queue because one long job is in it. An idle pilot past the cut-off is
released at once. Nothing is drained while no job is ready (nothing can reach it).

*Capacity.* Running pilots take work until their walltime end less the cut-off,
queued ones from ``submitted + qw`` (or now, when late), draining ones only finish
what they run. Draining pilots never count as capacity, so their replacement is
asked for ``qw`` ahead, like that of a pilot whose walltime ends before ``arrival``.

*Wanted capacity.* :func:`~executor.policy.lookahead.project` plays the work
forward from now to ``arrival`` on that capacity (running jobs, ready jobs shortest
first, at most one worker per job, soon buckets joining when they become ready) and
gives the jobs ``n(t)`` and worker-seconds ``s(t)`` present at each step. Workers
wanted at ``t``: ``min(n(t), s(t) / min_work)`` (at least one while any job is
there), where ``min_work`` (default ``idle_timeout``) is the work a new worker must
have to be worth its start: a pilot given less idles longer, before its release,
than it works. So a long tail of a few jobs wants a few workers, not a pilot per
idle worker, and a wide level of quick jobs wants as many workers as its total work
keeps busy.

*Submit.* ``ceil(wanted(arrival) / workers)`` pilots are wanted when a pilot
submitted now would arrive; those that will still serve then (queued, and running
ones whose walltime lasts) are subtracted. A wide level expected within ``qw`` thus
gets its pilots before it is ready, and a pilot is not submitted when the capacity
there finishes the remaining work before it would start (``wanted(arrival)`` is
then covered). While any work remains, ``min_blocks`` pilots are kept up.

*Backlog.* Queued pilots never exceed ``max_queued`` (HyperQueue's and glideinWMS's
small backlog) nor the pilots the work at ``arrival`` needs beyond the running ones
(``min_blocks`` aside); pilots at once (queued, running and draining) never exceed
``max_blocks``. The bound costs throughput: pilots starting at most ``max_queued``
per queue wait, and each living one walltime, a pool holds at most about
``max_queued × walltime / qw`` of them, and reaches ``n`` after ``n / max_queued``
queue waits; choose ``max_queued`` from ``max_blocks × qw / walltime`` upwards.

*Cancel.* Queued pilots beyond the most wanted from now to ``arrival`` (and
``min_blocks``) are cancelled, the newest first: a wide level that the first pilots
to start have finished leaves the late ones nothing to do (glideinWMS removes idle
glideins the same way). Never in a decision that submits.

*Release.* A draining pilot with no busy worker is released. A running pilot idle
for ``idle_timeout`` is released, the soonest to end first, while more pilots run
than ``min_blocks`` and than the most wanted anywhere from now to ``arrival``: a
pilot needed within the queue wait is kept, since its replacement would take ``qw``.
A pilot idle for only ``IDLE_GRACE`` seconds goes too when the graph wants fewer
pilots than run anywhere from now to ``idle_timeout`` ahead: it would idle until its
timeout and go then, so waiting only wastes it (Parsl, which sees only the tasks it
holds, must wait ``max_idletime``; a serial tail releases its idle pilots at once).
No idle pilot is released in a decision that submits one. A busy pilot is never
released.

*Failures.* After ``max_submit_failures`` (10) submissions or ``max_start_failures``
(3) starts that failed in a row, nothing is submitted and ``paused`` says why
(HyperQueue's thresholds); the driver resets a count on a success. Draining and
release go on.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from executor.errors import ConfigError
from executor.policy.lookahead import (
    Capacity,
    ReadyWork,
    RunningWork,
    Soon,
    WorkView,
    forecast,
    project,
    queue_wait_estimate,
)

__all__ = [
    "Decision",
    "PilotPhase",
    "PilotView",
    "PoolLimits",
    "ReadyWork",
    "RunningWork",
    "ScalingInput",
    "Soon",
    "WorkView",
    "decide",
    "forecast",
    "queue_wait_estimate",
]


class PilotPhase(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DRAINING = "draining"


@dataclass(frozen=True)
class PilotView:
    """One pilot (Parsl block) of the pool, as the driver sees it.

    ``idle_since`` is ``None`` while ``busy > 0``; ``ends`` is the walltime end
    (``started + walltime``), ``None`` without a walltime or before the start.
    """

    block_id: str
    phase: PilotPhase
    workers: int
    busy: int
    submitted: float
    started: float | None = None
    idle_since: float | None = None
    ends: float | None = None


@dataclass(frozen=True)
class PoolLimits:
    """A pool's limits and knobs (seconds throughout).

    Parameters
    ----------
    min_blocks, max_blocks
        Pilots kept up while work remains, and pilots at once (queued, running, draining).
    workers
        Worker slots per pilot.
    walltime
        A pilot's walltime, or ``None``.
    idle_timeout
        How long a running pilot may idle before it is released.
    max_queued
        Queued pilots at most (the backlog).
    queue_wait_default
        The queue wait assumed before any pilot of the site has started.
    min_work
        Worker-seconds of work a new worker must have to be worth submitting;
        ``None``: ``idle_timeout``.
    drain_quantile
        Which quantile of the ready jobs' runtimes a pilot's remaining walltime must
        cover not to be drained.
    max_submit_failures, max_start_failures
        Consecutive failures that pause submission.
    """

    min_blocks: int
    max_blocks: int
    workers: int
    walltime: float | None
    idle_timeout: float
    max_queued: int
    queue_wait_default: float
    min_work: float | None = None
    drain_quantile: float = 0.5
    max_submit_failures: int = 10
    max_start_failures: int = 3

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers: {self.workers!r} must be >= 1")
        if not 0 <= self.min_blocks <= self.max_blocks:
            raise ConfigError(
                f"min_blocks ({self.min_blocks}) must be between 0 and max_blocks "
                f"({self.max_blocks})"
            )
        if self.max_queued < 1:
            raise ConfigError(f"max_queued: {self.max_queued!r} must be >= 1")
        if self.walltime is not None and self.walltime <= 0:
            raise ConfigError(f"walltime: {self.walltime!r} must be > 0")
        if not 0 < self.drain_quantile <= 1:
            raise ConfigError(f"drain_quantile: {self.drain_quantile!r} must be in (0, 1]")
        for name in ("idle_timeout", "queue_wait_default"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)!r} must be >= 0")

    @property
    def work_per_worker(self) -> float:
        return self.idle_timeout if self.min_work is None else self.min_work


@dataclass(frozen=True)
class ScalingInput:
    """Everything :func:`decide` looks at; ``queue_wait`` is ``None`` before any pilot
    of the site started; failure counts are consecutive (a success resets them)."""

    now: float
    work: WorkView
    pilots: tuple[PilotView, ...]
    limits: PoolLimits
    queue_wait: float | None = None
    submit_failures: int = 0
    start_failures: int = 0


@dataclass(frozen=True)
class Decision:
    """What the driver does for the pool now.

    ``submit`` new pilots; ``release`` these idle pilots; ``drain`` these (hold them
    from new tasks; they come back in ``release`` once idle); ``paused``: why nothing is
    submitted any more, for the user; ``reason``: one line for driver.log; ``cancel``
    these queued pilots, no longer needed (withdraw them from the batch queue).
    """

    submit: int
    release: tuple[str, ...]
    drain: tuple[str, ...]
    paused: str | None
    reason: str
    cancel: tuple[str, ...] = ()


def _paused(state: ScalingInput) -> str | None:
    limits, why = state.limits, []
    if state.submit_failures >= limits.max_submit_failures:
        why.append(f"{state.submit_failures} pilot submissions in a row failed")
    if state.start_failures >= limits.max_start_failures:
        why.append(f"{state.start_failures} pilots in a row failed to start")
    if not why:
        return None
    return " and ".join(why) + "; not submitting more pilots (the pilot log says why)"


#: Seconds a pilot must have idled before it may go ahead of ``idle_timeout``: a
#: worker between two bundles reports idle for a moment. Short, because every second
#: of it is allocated and idle, once per pilot the graph no longer needs; a bundle on
#: its way as the pilot is released does not die with it (the driver holds the pilot
#: first, then cancels it only if still idle: ``release_idle_blocks``).
IDLE_GRACE = 1.0


def _wanted(jobs: float, seconds: float, min_work: float) -> float:
    """Workers worth having for ``jobs`` jobs of ``seconds`` worker-seconds in all."""
    if jobs <= 1e-9:
        return 0.0
    if min_work <= 0:
        return jobs
    return max(1.0, min(jobs, math.floor(seconds / min_work)))


def decide(state: ScalingInput) -> Decision:
    """The pool's scaling decision now; see the module's docstring for the rules."""
    now, limits, work = state.now, state.limits, state.work
    qw = state.queue_wait if state.queue_wait is not None else limits.queue_wait_default
    qw = max(0.0, qw)
    arrival = now + qw
    cutoff = work.ready.quantile(limits.drain_quantile)
    margin = cutoff or 0.0

    drain: list[str] = []
    release: list[str] = []
    for pilot in state.pilots:
        if pilot.phase is PilotPhase.DRAINING:
            if pilot.busy == 0:
                release.append(pilot.block_id)
        elif (
            pilot.phase is PilotPhase.RUNNING and cutoff is not None
            and pilot.ends is not None and pilot.ends - now < cutoff
        ):  # fmt: skip
            (drain if pilot.busy else release).append(pilot.block_id)
    leaving = set(drain) | set(release)
    serving = [
        p for p in state.pilots if p.phase is not PilotPhase.DRAINING and p.block_id not in leaving
    ]
    running = [p for p in serving if p.phase is PilotPhase.RUNNING]
    queued = [p for p in serving if p.phase is PilotPhase.QUEUED]

    capacity = []
    for p in state.pilots:
        if p.phase is PilotPhase.DRAINING or p.block_id in drain:
            end = p.ends if p.ends is not None else math.inf
            capacity.append(Capacity(now, end, p.busy, running_only=True))
        elif p.phase is PilotPhase.RUNNING and p.block_id not in leaving:
            end = p.ends - margin if p.ends is not None else math.inf
            capacity.append(Capacity(now, end, p.workers))
        elif p.phase is PilotPhase.QUEUED:
            start = max(now, p.submitted + qw)
            end = start + limits.walltime - margin if limits.walltime is not None else math.inf
            capacity.append(Capacity(start, end, p.workers))
    min_work = limits.work_per_worker

    def wanted_until(until: float) -> list[float]:
        projection = project(now, until, work, capacity)
        pairs = zip(projection.jobs, projection.seconds, strict=True)
        return [_wanted(n, s, min_work) for n, s in pairs]

    wanted = wanted_until(arrival)
    want_arrival, want_window = wanted[-1], max(wanted)
    # Played forward at least idle_timeout ahead: a pilot the graph has no work for
    # within that would idle until its timeout anyway, so it goes now (see Release).
    ahead = now + limits.idle_timeout
    want_ahead = max(want_window, max(wanted_until(ahead)) if ahead > arrival else 0.0)

    # Pilots that will still take work when a pilot submitted now arrives.
    lasting = sum(1 for p in serving if p.ends is None or p.ends - arrival >= margin)
    need = math.ceil(want_arrival / limits.workers - 1e-9)
    submit = max(0, need - lasting)
    notes = []
    if not work.empty and limits.min_blocks > len(serving) + submit:
        submit = limits.min_blocks - len(serving)
        notes.append(f"min_blocks {limits.min_blocks}")
    active = sum(1 for p in state.pilots if p.block_id not in release)
    caps = [
        (limits.max_queued - len(queued), f"max_queued {limits.max_queued}"),
        (limits.max_blocks - active, f"max_blocks {limits.max_blocks}"),
    ]
    for cap, why in caps:
        if submit > max(0, cap):
            submit = max(0, cap)
            notes.append(f"capped by {why}")
    paused = _paused(state)
    if paused:
        submit = 0

    cancel: list[str] = []
    if submit == 0:
        keep = max(limits.min_blocks, math.ceil(want_window / limits.workers - 1e-9))
        # Queued pilots beyond what the work wants by their arrival: the newest first,
        # being the furthest from a start.
        surplus = min(len(queued), len(serving) - keep)
        if surplus > 0:
            newest = sorted(queued, key=lambda p: p.submitted, reverse=True)
            cancel = [p.block_id for p in newest[:surplus]]
        idle = sorted(
            (p for p in running if p.busy == 0 and p.idle_since is not None
             and now - p.idle_since >= min(limits.idle_timeout, IDLE_GRACE)),
            key=lambda p: (p.ends if p.ends is not None else math.inf, p.idle_since),
        )  # fmt: skip
        keep_ahead = max(keep, math.ceil(want_ahead / limits.workers - 1e-9))
        chosen = idle[: max(0, len(running) - keep_ahead)]  # no work for them ahead
        timed_out = [p for p in idle if now - p.idle_since >= limits.idle_timeout]  # type: ignore[operator]
        quota = max(0, len(running) - keep) - len(chosen)
        chosen += [p for p in timed_out if p not in chosen][: max(0, quota)]
        release.extend(p.block_id for p in chosen)

    reason = (
        f"qw {qw:.0f}s; ready {work.ready.count} ({work.ready.seconds:.0f} s), running "
        f"{work.running.count}, soon {sum(s.count for s in work.soon)}; want "
        f"{want_arrival:.0f} workers ({need} pilots) at +{qw:.0f}s, {lasting} serving then, "
        f"{len(queued)} queued; submit {submit}"
        + (f" ({', '.join(notes)})" if notes else "")
        + (f"; drain {len(drain)} (walltime < {cutoff:.0f}s)" if drain else "")
        + (f"; release {len(release)}" if release else "")
        + (f"; cancel {len(cancel)} queued" if cancel else "")
        + ("; paused" if paused else "")
    )
    return Decision(submit, tuple(release), tuple(drain), paused, reason, tuple(cancel))
