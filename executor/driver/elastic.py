"""Elastic pilots: the driver's side of :mod:`executor.policy.elastic`.

Every couple of seconds, per pool, :class:`ElasticScaler` gathers what the policy
looks at (each pilot's phase, workers, busy workers and walltime end from Parsl's
blocks and the interchange's managers; the queue wait of the site's pilots; failures
in a row; the pool's work now and soon, forecast from the graph), asks
:func:`~executor.policy.elastic.decide`, and applies the decision:

- **submit**: ``scale_out_facade(n)``, with terminal signals blocked (a Ctrl-C in the
  user's terminal reaches the driver, which cancels cleanly, not the pilots);
- **drain**: the block is held (Parsl's ``_hold_block``: the interchange sends its
  workers nothing more) and released once idle;
- **release**: held first, then, only if the interchange shows none of its workers
  holding a task, cancelled by its batch job id and marked ``SCALED_IN`` (what
  Parsl's ``scale_in_facade`` does). Parsl's own ``scale_in(n)`` picks blocks itself
  and, without an idle filter, kills busy ones: pilot never calls it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from executor.driver.parsl_session import terminal_signals_blocked
from executor.driver.pilots import PilotTracker, managers_of
from executor.model.states import ENDED_PILOT_STATES
from executor.model.units import parse_duration
from executor.policy.elastic import (
    Decision,
    PilotPhase,
    PilotView,
    PoolLimits,
    ScalingInput,
    WorkView,
    decide,
    queue_wait_estimate,
)
from executor.policy.lookahead import RECENT_PILOTS
from executor.sites.base import SiteConfig

logger = logging.getLogger(__name__)

#: Seconds between decisions (each asks every interchange for its managers).
DECIDE_SECONDS = 2.0
#: Work (worker-seconds) that makes one more worker worth starting.
MIN_WORK_SECONDS = 60.0


class ElasticScaler:
    """Submits, drains and releases the pilots of a run's pools.

    Parameters
    ----------
    site
        The site (pools, walltime, ``idle_timeout``, ``max_queued``, ``queue_wait``).
    executors
        Each pool's Parsl executor, by pool name.
    tracker
        The run's pilots as the store sees them (submit and start times, states).
    clock
        The wall clock (a test may pass its own).
    """

    def __init__(
        self,
        site: SiteConfig,
        executors: Mapping[str, Any],
        tracker: PilotTracker | None,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.site = site
        self.executors = executors
        self.tracker = tracker
        self.clock = clock
        self.limits = {pool.name: pool_limits(site, pool) for pool in site.pools}
        self._draining: dict[str, set[str]] = {pool.name: set() for pool in site.pools}
        self._paused: dict[str, str | None] = dict.fromkeys(self.limits)
        # The pilots the user asked to start with (``init_blocks``: Parsl numbers a
        # pool's blocks from 0) are not cancelled while queued; idle, they are
        # released after ``idle_timeout`` like any other.
        self._initial = {p.name: {str(i) for i in range(p.init_blocks)} for p in site.pools}
        self._last = -float("inf")

    def step(self, work: Callable[..., Mapping[str, WorkView]], demand: Mapping[str, int]) -> None:
        """Decide and act for every pool, at most every :data:`DECIDE_SECONDS`, or at once
        when a pool has ``demand`` (bundles held and waiting) and no pilot for it.

        ``work(fresh=...)`` gives each pool's work (a fresh forecast when asked).
        """
        unserved = any(
            demand.get(pool, 0) > 0 and not self._active(pool)
            for pool in self.limits
            if getattr(self.executors[pool], "provider", None) is not None
        )
        now = time.monotonic()
        if not unserved and now - self._last < DECIDE_SECONDS:
            return
        self._last = now
        views = work(fresh=unserved)
        for pool in self.site.pools:
            executor = self.executors[pool.name]
            if getattr(executor, "provider", None) is None:  # no blocks (Globus Compute)
                continue
            try:
                self._step_pool(pool.name, executor, views.get(pool.name, WorkView()))
            except Exception:  # the boundary with Parsl: scaling must never stop the run
                logger.exception("could not scale pool %s", pool.name)

    def _active(self, pool: str) -> bool:
        """Whether the pool has a pilot that has not ended (queued or running)."""
        return any(not s.terminal for s in self.executors[pool].status_facade.values())

    def _step_pool(self, pool: str, executor: Any, work: WorkView) -> None:
        now = self.clock()
        managers = managers_of(executor)
        pilots = self._pilot_views(pool, executor, managers, now)
        waits, queued_for = self._queue_waits(pool, now)
        submit_failures, start_failures = self._failures_in_a_row(pool)
        decision = decide(
            ScalingInput(
                now=now,
                work=work,
                pilots=pilots,
                limits=self.limits[pool],
                queue_wait=queue_wait_estimate(waits, queued_for),
                submit_failures=submit_failures,
                start_failures=start_failures,
            )
        )
        self._apply(pool, executor, decision)

    # -- what the policy sees ------------------------------------------------------
    def _pilot_views(
        self, pool: str, executor: Any, managers: list[dict[str, Any]], now: float
    ) -> tuple[PilotView, ...]:
        by_block: dict[str, list[dict[str, Any]]] = {}
        for manager in managers:
            by_block.setdefault(str(manager.get("block_id")), []).append(manager)
        walltime = self.limits[pool].walltime
        known = self.tracker.pilots if self.tracker is not None else {}
        views = []
        for block_id, status in dict(executor.status_facade).items():
            if status.terminal:
                self._draining[pool].discard(block_id)
                continue
            connected = by_block.get(block_id, [])
            pilot = known.get((pool, block_id))
            submitted = pilot.submitted if pilot and pilot.submitted else now
            started = pilot.start if pilot else None
            workers = sum(int(m.get("worker_count") or 0) for m in connected)
            workers = workers or self.site.workers(self.site.pool(pool))
            busy = min(workers, sum(int(m.get("tasks") or 0) for m in connected))
            if block_id in self._draining[pool]:
                phase = PilotPhase.DRAINING
            elif connected:
                phase = PilotPhase.RUNNING
                started = started or now
            else:
                phase = PilotPhase.QUEUED
            idle = min((float(m.get("idle_duration") or 0.0) for m in connected), default=0.0)
            views.append(
                PilotView(
                    block_id=block_id, phase=phase, workers=workers, busy=busy,
                    submitted=submitted, started=started if connected else None,
                    idle_since=(now - idle) if connected and busy == 0 else None,
                    ends=(started + walltime) if connected and started and walltime else None,
                )
            )  # fmt: skip
        return tuple(views)

    def _pool_pilots(self, pool: str) -> list[Any]:
        if self.tracker is None:
            return []
        pilots = [p for (name, _), p in self.tracker.pilots.items() if name == pool]
        return sorted(pilots, key=lambda p: (p.submitted or 0.0, int_or_zero(p.block_id)))

    def _queue_waits(self, pool: str, now: float) -> tuple[list[float], list[float]]:
        """Submit-to-start seconds of the pool's started pilots, in submission order, and
        how long each pilot still queued, submitted since the oldest of the last
        :data:`RECENT_PILOTS` started ones, has waited so far (the same sample)."""
        pilots = [p for p in self._pool_pilots(pool) if p.submitted is not None]
        started = [p for p in pilots if p.start is not None][-RECENT_PILOTS:]
        since = started[0].submitted if started else -float("inf")
        waits = [max(0.0, p.start - p.submitted) for p in started]
        queued = [
            max(0.0, now - p.submitted)
            for p in pilots
            if p.start is None and p.state not in ENDED_PILOT_STATES and p.submitted >= since
        ]
        return waits, queued

    def _failures_in_a_row(self, pool: str) -> tuple[int, int]:
        """Pilots that could not be submitted, and that ended without ever starting, in a
        row among the latest (a pilot that submitted, or started, ends the row)."""
        submit = start = 0
        counting_submit = counting_start = True
        for pilot in reversed(self._pool_pilots(pool)):
            never_submitted = pilot.job_id is None and pilot.state == "failed"
            if counting_submit:
                if never_submitted:
                    submit += 1
                elif pilot.job_id is not None:
                    counting_submit = False
            if counting_start and not never_submitted:
                if pilot.start is None and pilot.state in ENDED_PILOT_STATES:
                    if pilot.state != "scaled_in":  # released while queued: not a failure
                        start += 1
                elif pilot.start is not None:
                    counting_start = False
        return submit, start

    # -- acting --------------------------------------------------------------------
    def _apply(self, pool: str, executor: Any, decision: Decision) -> None:
        if decision.paused != self._paused[pool]:
            self._paused[pool] = decision.paused
            if decision.paused:
                logger.warning("pool %s: %s", pool, decision.paused)
        if decision.submit or decision.drain or decision.release or decision.cancel:
            logger.info(
                "pool %s: submit %d, drain %s, release %s, cancel queued %s: %s", pool,
                decision.submit, list(decision.drain), list(decision.release),
                list(decision.cancel), decision.reason,
            )  # fmt: skip
        cancel = [b for b in decision.cancel if b not in self._initial[pool]]
        if cancel:  # queued pilots the work no longer needs: nothing runs there
            end_blocks(executor, cancel)
        if decision.submit:
            with terminal_signals_blocked():
                executor.scale_out_facade(decision.submit)
        for block_id in decision.drain:
            hold_block(executor, block_id)
            self._draining[pool].add(block_id)
        if decision.release:
            released = release_idle_blocks(executor, decision.release)
            for block_id in decision.release:
                if block_id not in released:  # a task reached it meanwhile: finish it
                    self._draining[pool].add(block_id)
                else:
                    self._draining[pool].discard(block_id)

    @property
    def paused(self) -> dict[str, str]:
        """Why each pool whose submissions are paused is paused."""
        return {pool: why for pool, why in self._paused.items() if why}


def pool_limits(site: SiteConfig, pool: Any) -> PoolLimits:
    """The policy's limits for ``pool`` of ``site``."""
    walltime = getattr(site, "walltime", None)
    seconds = parse_duration(walltime) if walltime else None
    drain = getattr(site, "drain", None)
    if seconds and drain:
        # Parsl's workers stop taking tasks `drain` before the walltime (drain_period).
        seconds -= min(parse_duration(drain), seconds / 2)
    return PoolLimits(
        min_blocks=pool.min_blocks,
        max_blocks=pool.max_blocks,
        workers=site.workers(pool),
        walltime=seconds,
        idle_timeout=site.idle_timeout,
        max_queued=site.max_queued,
        queue_wait_default=site.queue_wait,
        # A worker is worth starting for a minute of work: a pilot given less idles
        # longer than it works before its release, and one given more shortens the run.
        min_work=min(site.idle_timeout, MIN_WORK_SECONDS),
    )


def int_or_zero(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


# -- the boundary with Parsl's block control -------------------------------------------
def hold_block(executor: Any, block_id: str) -> None:
    """Send the block's workers nothing more (Parsl's ``_hold_block``)."""
    executor._hold_block(block_id)


def release_idle_blocks(executor: Any, block_ids: Iterable[str]) -> set[str]:
    """Hold, then cancel, each of ``block_ids`` whose workers hold no task; return those
    released. A block that a task reached before its hold stays held (draining)."""
    block_ids = [str(b) for b in block_ids]
    for block_id in block_ids:
        hold_block(executor, block_id)
    # Asked after the holds: from now on no task can reach these blocks.
    busy = {str(m.get("block_id")) for m in managers_of(executor) if int(m.get("tasks") or 0) > 0}
    idle = [b for b in block_ids if b not in busy]
    end_blocks(executor, idle)
    return set(idle)


def end_blocks(executor: Any, block_ids: Iterable[str]) -> None:
    """Cancel the blocks' batch jobs and mark them ``SCALED_IN``, as Parsl's
    ``scale_in_facade`` does (so its status poller does not call them failed)."""
    from parsl.jobs.states import JobState, JobStatus

    block_ids = [str(b) for b in block_ids]
    job_ids = [executor.blocks_to_job_id[b] for b in block_ids if b in executor.blocks_to_job_id]
    if job_ids:
        executor.provider.cancel(job_ids)
    ended = {}
    for block_id in block_ids:
        status = JobStatus(JobState.SCALED_IN)
        executor._status[block_id] = status
        executor._simulated_status[block_id] = status
        ended[block_id] = status
    if ended:
        executor.send_monitoring_info(ended)
