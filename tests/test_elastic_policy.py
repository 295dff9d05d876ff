"""The elastic scaling policy (:mod:`executor.policy.elastic`): properties and examples.

Properties over random pools, pilots and work (whatever the input):

- pilots at once never exceed ``max_blocks`` because of a submission;
- a busy pilot is never released; only idle running or draining pilots are;
- no pilot is drained twice, nor drained while queued, already draining or released;
- only queued pilots are cancelled, never below ``min_blocks`` nor while submitting;
- a paused decision submits nothing, and it pauses exactly at 10 submit / 3 start
  failures in a row;
- the backlog is bounded: queued pilots after a submission never exceed ``max_queued``
  nor the pilots the known work could keep busy (``min_blocks`` aside);
- nothing is submitted when no work remains, and then every pilot idle for
  ``idle_timeout`` is released (``min_blocks`` aside);
- a running pilot is released early only at its walltime, never below ``min_blocks``;
- a wide level due within the queue wait is scaled out for before it is ready.

Then one example per rule, and :func:`forecast`, :func:`project` and
:func:`queue_wait_estimate` on small cases.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.policy.elastic import (
    IDLE_GRACE,
    Decision,
    PilotPhase,
    PilotView,
    PoolLimits,
    ReadyWork,
    RunningWork,
    ScalingInput,
    Soon,
    WorkView,
    _wanted,
    decide,
    forecast,
    queue_wait_estimate,
)
from executor.policy.lookahead import Capacity, project

PROPERTY = settings(max_examples=300, deadline=None, database=None)
NOW = 100_000.0
Q, R, D = PilotPhase.QUEUED, PilotPhase.RUNNING, PilotPhase.DRAINING


@st.composite
def limits(draw) -> PoolLimits:
    max_blocks = draw(st.integers(1, 30))
    return PoolLimits(
        min_blocks=draw(st.integers(0, min(3, max_blocks))),
        max_blocks=max_blocks,
        workers=draw(st.integers(1, 8)),
        walltime=draw(st.sampled_from([None, 600.0, 3600.0])),
        idle_timeout=draw(st.sampled_from([0.0, 30.0, 120.0])),
        max_queued=draw(st.integers(1, 10)),
        queue_wait_default=draw(st.sampled_from([0.0, 60.0, 600.0])),
        min_work=draw(st.sampled_from([None, 0.0, 10.0])),
    )


@st.composite
def pilots(draw, pool: PoolLimits) -> tuple[PilotView, ...]:
    found = []
    for i in range(draw(st.integers(0, pool.max_blocks + 2))):
        phase = draw(st.sampled_from([Q, R, D]))
        busy = 0 if phase is Q else draw(st.integers(0, pool.workers))
        submitted = NOW - draw(st.floats(0, 5000))
        started = None if phase is Q else draw(st.floats(submitted, NOW))
        idle_since = None if busy or phase is Q else draw(st.floats(started or NOW, NOW))
        ends = None if started is None or pool.walltime is None else started + pool.walltime
        found.append(PilotView(f"b{i}", phase, pool.workers, busy, submitted, started,
                               idle_since, ends))  # fmt: skip
    return tuple(found)


runtimes = st.sampled_from([0.5, 5.0, 60.0, 300.0, 1800.0, 5000.0])


@st.composite
def works(draw) -> WorkView:
    ready = draw(st.dictionaries(runtimes, st.integers(1, 400), max_size=4))
    soon = sorted(draw(st.lists(st.tuples(st.floats(0, 3000), st.integers(1, 500), runtimes),
                                max_size=4)))  # fmt: skip
    running = draw(st.integers(0, 20))
    return WorkView(
        ready=ReadyWork(tuple(sorted(ready.items()))),
        soon=tuple(Soon(NOW + at, n, n * r) for at, n, r in soon),
        running=RunningWork(running, running * draw(runtimes)),
    )


@st.composite
def inputs(draw) -> ScalingInput:
    pool = draw(limits())
    return ScalingInput(
        now=NOW,
        work=draw(st.one_of(works(), st.just(WorkView()))),
        pilots=draw(pilots(pool)),
        limits=pool,
        queue_wait=draw(st.sampled_from([None, 0.0, 30.0, 900.0])),
        submit_failures=draw(st.one_of(st.just(0), st.integers(0, 12))),
        start_failures=draw(st.one_of(st.just(0), st.integers(0, 4))),
    )


def _by_id(state: ScalingInput) -> dict[str, PilotView]:
    return {p.block_id: p for p in state.pilots}


def _total_jobs(work: WorkView) -> int:
    return work.ready.count + work.running.count + sum(s.count for s in work.soon)


@PROPERTY
@given(inputs())
def test_never_above_max_blocks(state):
    decision = decide(state)
    staying = len(state.pilots) - len(decision.release)
    if decision.submit:
        assert staying + decision.submit <= state.limits.max_blocks


@PROPERTY
@given(inputs())
def test_only_idle_running_or_draining_pilots_are_released(state):
    decision = decide(state)
    pilots = _by_id(state)
    assert len(set(decision.release)) == len(decision.release)
    for block in decision.release:
        assert pilots[block].busy == 0
        assert pilots[block].phase in (R, D)


@PROPERTY
@given(inputs())
def test_drain_names_each_busy_running_pilot_once(state):
    decision = decide(state)
    pilots = _by_id(state)
    assert len(set(decision.drain)) == len(decision.drain)
    assert not set(decision.drain) & set(decision.release)
    for block in decision.drain:
        assert pilots[block].phase is R  # never queued, never one already draining
        assert pilots[block].busy > 0


@PROPERTY
@given(inputs())
def test_only_surplus_queued_pilots_are_cancelled(state):
    decision = decide(state)
    pilots = _by_id(state)
    assert len(set(decision.cancel)) == len(decision.cancel)
    assert all(pilots[block].phase is Q for block in decision.cancel)
    if decision.cancel:
        assert decision.submit == 0
        left = [p for p in state.pilots if p.phase is not D and p.block_id not in
                set(decision.cancel) | set(decision.release) | set(decision.drain)]  # fmt: skip
        assert len(left) >= state.limits.min_blocks


@PROPERTY
@given(inputs())
def test_paused_means_nothing_submitted(state):
    decision = decide(state)
    expected = state.submit_failures >= 10 or state.start_failures >= 3
    assert (decision.paused is not None) == expected
    if decision.paused:
        assert decision.submit == 0


@PROPERTY
@given(inputs())
def test_backlog_is_bounded(state):
    decision = decide(state)
    if decision.submit:
        queued = sum(1 for p in state.pilots if p.phase is Q)
        assert queued + decision.submit <= state.limits.max_queued
        work_needs = math.ceil(_total_jobs(state.work) / state.limits.workers)
        assert queued + decision.submit <= max(state.limits.min_blocks, work_needs)


@PROPERTY
@given(inputs())
def test_no_work_nothing_submitted_and_idle_pilots_released(state):
    state = ScalingInput(now=state.now, work=WorkView(), pilots=state.pilots,
                         limits=state.limits, queue_wait=state.queue_wait)  # fmt: skip
    decision = decide(state)
    assert decision.submit == 0
    # Nothing ahead for them: idle pilots go once past the grace, not only at the timeout.
    grace = min(IDLE_GRACE, state.limits.idle_timeout)
    expired = [p for p in state.pilots if p.phase is R and p.busy == 0
               and state.now - p.idle_since >= grace]  # fmt: skip
    running = sum(1 for p in state.pilots if p.phase is R)
    released = [b for b in decision.release if _by_id(state)[b].phase is R]
    assert len(released) == min(len(expired), max(0, running - state.limits.min_blocks))
    assert {p.block_id for p in state.pilots if p.phase is D and p.busy == 0} <= set(
        decision.release
    )


@PROPERTY
@given(inputs())
def test_running_pilots_released_only_when_idle_and_not_needed_or_at_walltime(state):
    decision = decide(state)
    pilots = _by_id(state)
    cutoff = state.work.ready.quantile(state.limits.drain_quantile)
    at_walltime = {
        b for b, p in pilots.items()
        if cutoff is not None and p.ends is not None and p.ends - state.now < cutoff
    }  # fmt: skip
    idle = [b for b in decision.release if pilots[b].phase is R and b not in at_walltime]
    limits = state.limits
    early = []
    for block in idle:
        waited = state.now - pilots[block].idle_since
        assert waited >= min(IDLE_GRACE, limits.idle_timeout)
        if waited < limits.idle_timeout:
            early.append(block)
    if idle:
        assert decision.submit == 0
    running = sum(1 for p in pilots.values() if p.phase is R and p.block_id not in at_walltime)
    assert running - len(idle) >= min(running, limits.min_blocks)
    if early:  # before its timeout only when the work there is now needs no more pilots
        work = state.work
        jobs = work.ready.count + work.running.count
        seconds = work.ready.seconds + work.running.seconds
        now_wanted = _wanted(jobs, seconds, limits.work_per_worker)
        assert running - len(idle) >= min(running, math.ceil(now_wanted / limits.workers - 1e-9))


@PROPERTY
@given(limits(), st.floats(0.0, 1.0), st.integers(1, 5), st.sampled_from([60.0, 600.0]))
def test_scales_out_ahead_of_a_wide_level(pool, when, width, qw):
    # Jobs long enough to be worth a pilot each, due before a pilot submitted now is up.
    runtime = 2 * (qw + pool.work_per_worker) + 10
    jobs = width * pool.max_blocks * pool.workers
    work = WorkView(soon=(Soon(NOW + when * qw, jobs, jobs * runtime),))
    decision = decide(ScalingInput(now=NOW, work=work, pilots=(), limits=pool, queue_wait=qw))
    assert decision.submit == min(pool.max_queued, pool.max_blocks)
    # The same level well beyond the queue wait calls for nothing yet (min_blocks aside).
    later = WorkView(soon=(Soon(NOW + 3 * qw + 100, jobs, jobs * runtime),))
    decision = decide(ScalingInput(now=NOW, work=later, pilots=(), limits=pool, queue_wait=qw))
    assert decision.submit == min(pool.min_blocks, pool.max_queued)


# Examples, one per rule.

POOL = PoolLimits(min_blocks=0, max_blocks=50, workers=4, walltime=3600.0, idle_timeout=60.0,
                  max_queued=8, queue_wait_default=300.0)  # fmt: skip


def running(block: str, busy: int = 0, *, idle_since: float | None = None, ends: float | None
            = NOW + 3000, workers: int = 4) -> PilotView:  # fmt: skip
    idle = (NOW - 1000 if idle_since is None else idle_since) if busy == 0 else None
    return PilotView(block, R, workers, busy, NOW - 2000, NOW - 1500, idle, ends)


def queued(block: str) -> PilotView:
    return PilotView(block, Q, 4, 0, NOW - 10, None, None, None)


def at(work: WorkView, *pilots: PilotView, pool: PoolLimits = POOL, **kwargs) -> Decision:
    return decide(ScalingInput(now=NOW, work=work, pilots=pilots, limits=pool, **kwargs))


def test_wide_level_gets_pilots_before_it_is_ready():
    level = WorkView(soon=(Soon(NOW + 200, 400, 400 * 900.0),), running=RunningWork(1, 200.0))
    decision = at(level, running("r0", busy=1))
    assert decision.submit == POOL.max_queued  # as many as the backlog allows
    assert "capped by max_queued" in decision.reason
    # Parsl's rule (ready jobs only) would submit nothing: no job is ready yet.
    far = WorkView(soon=(Soon(NOW + 2000, 400, 400 * 900.0),), running=RunningWork(1, 200.0))
    assert at(far, running("r0", busy=1)).submit == 0


def test_long_tail_keeps_one_pilot_and_releases_the_rest():
    tail = WorkView(ready=ReadyWork(((3000.0, 1),)))
    idle = [running(f"r{i}", ends=None) for i in range(6)]
    decision = at(tail, *idle)
    assert decision.submit == 0
    assert len(decision.release) == 5


def test_no_pilot_for_work_that_ends_before_it_would_start():
    # 40 ten-second jobs: the 8 free workers finish them long before a new pilot is up.
    short = WorkView(ready=ReadyWork(((10.0, 40),)))
    assert at(short, running("r0"), running("r1")).submit == 0
    # Without pilots, 6 workers get a minute of work each: 2 pilots, not one per job (10).
    assert at(short).submit == 2
    # Less than a minute of work in all still gets a pilot: work must progress.
    assert at(WorkView(ready=ReadyWork(((10.0, 1),)))).submit == 1


def test_quick_jobs_get_the_workers_their_total_work_keeps_busy():
    quick = WorkView(ready=ReadyWork(((1.0, 4000),)))  # 4000 worker-seconds
    # 4000 s / 60 s per worker = 66 workers = 17 pilots, not the 1000 of one per job.
    loose = PoolLimits(**{**POOL.__dict__, "max_queued": 1000, "max_blocks": 1000})
    assert at(quick, pool=loose, queue_wait=0.0).submit == 17


def test_pilot_near_walltime_is_drained_and_replaced_in_time():
    work = WorkView(ready=ReadyWork(((600.0, 20),)), running=RunningWork(4, 400.0))
    near = running("old", busy=4, ends=NOW + 300)  # 300 s left < 600 s median runtime
    decision = at(work, near)
    assert decision.drain == ("old",)
    # It no longer counts as capacity: the 20 ready jobs want 5 new pilots (the 4
    # running jobs end on it before they come).
    assert decision.submit == 5
    assert "drain 1" in decision.reason
    # Idle at that point, it is released at once, whatever the idle timeout.
    decision = at(work, running("old", idle_since=NOW, ends=NOW + 300))
    assert decision.release == ("old",) and decision.drain == ()


def test_replacement_is_submitted_a_queue_wait_ahead_of_a_walltime_end():
    work = WorkView(ready=ReadyWork(((60.0, 40),)), running=RunningWork(4, 100.0))
    soon_ending = running("a", busy=4, ends=NOW + 250)  # up until after the median runtime
    decision = at(work, soon_ending)
    assert decision.drain == ()
    # It ends before a new pilot is up (300 s): all 7 pilots the work wants then are new.
    assert decision.submit == 7
    assert "want 28 workers (7 pilots) at +300s, 0 serving then" in decision.reason
    lasting = at(work, running("a", busy=4, ends=NOW + 5000))
    assert lasting.submit == 5  # it works through the queue wait, and serves after it


def test_queued_pilots_the_work_no_longer_wants_are_cancelled_newest_first():
    # 3 jobs of 10 minutes: one pilot is plenty; two of the three queued ones go.
    work = WorkView(ready=ReadyWork(((600.0, 3),)))
    pilots = [PilotView(f"q{i}", Q, 4, 0, NOW - 100 + i, None, None, None) for i in range(3)]
    decision = at(work, *pilots)
    assert decision.cancel == ("q2", "q1")
    assert decision.submit == 0 and decision.release == ()
    assert "cancel 2 queued" in decision.reason
    # A wide level due before they start keeps them all.
    level = WorkView(soon=(Soon(NOW + 200, 400, 400 * 900.0),))
    assert at(level, *pilots).cancel == ()


def test_draining_pilot_released_once_idle():
    work = WorkView(ready=ReadyWork(((60.0, 3),)))
    busy = PilotView("d", D, 4, 2, NOW - 900, NOW - 800, None, NOW + 10)
    idle = PilotView("d", D, 4, 0, NOW - 900, NOW - 800, NOW - 1, NOW + 10)
    assert at(work, busy).release == ()
    assert at(work, idle).release == ("d",)


def test_idle_pilot_kept_while_work_is_due_within_the_queue_wait():
    due = WorkView(soon=(Soon(NOW + 100, 8, 8 * 600.0),))
    assert at(due, running("r0"), running("r1")).release == ()
    assert at(WorkView(), running("r0"), running("r1")).release == ("r0", "r1")
    # Idle 30 s of its 60: kept for work due within its timeout, else released now.
    recent = running("r0", idle_since=NOW - 30)
    assert at(WorkView(soon=(Soon(NOW + 20, 4, 4 * 600.0),)), recent).release == ()
    assert at(WorkView(), recent).release == ("r0",)
    # Within the grace: a worker between two bundles reports idle for a moment.
    just_idle = running("r0", idle_since=NOW - IDLE_GRACE / 2)
    assert at(WorkView(), just_idle).release == ()


def test_idle_release_keeps_min_blocks():
    pool = PoolLimits(**{**POOL.__dict__, "min_blocks": 2})
    decision = at(WorkView(), running("r0"), running("r1"), running("r2"), pool=pool)
    assert len(decision.release) == 1


def test_min_blocks_kept_up_while_work_remains():
    pool = PoolLimits(**{**POOL.__dict__, "min_blocks": 3})
    work = WorkView(running=RunningWork(1, 5.0))
    assert at(work, running("r0", busy=1), pool=pool).submit == 2
    assert at(WorkView(), pool=pool).submit == 0


def test_backlog_counts_queued_pilots():
    work = WorkView(ready=ReadyWork(((900.0, 400),)))
    assert at(work, *[queued(f"q{i}") for i in range(6)]).submit == 2
    assert at(work, *[queued(f"q{i}") for i in range(8)]).submit == 0


def test_measured_queue_wait_replaces_the_default():
    level = WorkView(soon=(Soon(NOW + 500, 40, 40 * 900.0),))
    assert at(level).submit == 0  # default 300 s: not yet
    assert at(level, queue_wait=600.0).submit == 8


@pytest.mark.parametrize(
    ("submits", "starts", "message"),
    [
        (10, 0, "10 pilot submissions in a row failed; not submitting more pilots"),
        (0, 3, "3 pilots in a row failed to start; not submitting more pilots"),
        (11, 5, "11 pilot submissions in a row failed and 5 pilots in a row failed to start"),
    ],
)
def test_failures_pause_submission_and_say_why(submits, starts, message):
    work = WorkView(ready=ReadyWork(((600.0, 100),)))
    decision = at(work, submit_failures=submits, start_failures=starts)
    assert decision.submit == 0
    assert decision.paused is not None and message in decision.paused
    assert "paused" in decision.reason
    assert at(work, submit_failures=9, start_failures=2).paused is None
    assert at(work, submit_failures=9, start_failures=2).submit > 0


def test_limits_are_checked():
    from executor.errors import ConfigError

    with pytest.raises(ConfigError, match="min_blocks"):
        PoolLimits(**{**POOL.__dict__, "min_blocks": 60})
    with pytest.raises(ConfigError, match="drain_quantile"):
        PoolLimits(**{**POOL.__dict__, "drain_quantile": 0.0})


# The helpers.


def test_forecast_buckets_jobs_by_expected_ready_time():
    #   a (running, ends +100) ── c (pending, 50 s) ── e (pending, 10 s)
    #   b (ready, 30 s)        ─┘                   d (pending, 20 s, after b)
    views = forecast(
        NOW,
        running=[("a", "small", NOW + 100)],
        ready=[("b", "small", 30.0)],
        pending=[
            ("c", "small", 50.0, ("a", "b")),
            ("d", "big", 20.0, ("b",)),
            ("e", "small", 10.0, ("c",)),
        ],  # fmt: skip
        horizon=300.0,
        buckets=30,
    )
    small, big = views["small"], views["big"]
    assert small.running == RunningWork(1, 100.0)
    assert small.ready.runtimes == ((30.0, 1),)
    assert small.soon == (Soon(NOW + 100, 1, 50.0), Soon(NOW + 150, 1, 10.0))
    assert big.soon == (Soon(NOW + 30, 1, 20.0),)
    assert big.ready.count == 0 and big.running.count == 0


def test_forecast_bins_coarsely_beyond_the_horizon():
    chain = [(f"j{i}", "p", 100.0, (f"j{i - 1}",) if i else ()) for i in range(1, 50)]
    level = [(f"w{i}", "p", 10.0, ("j49",)) for i in range(1000)]  # ready at +5000 s
    views = forecast(NOW, running=[], ready=[("j0", "p", 100.0)], pending=chain + level,
                     horizon=1000.0, buckets=10)  # fmt: skip
    soon = views["p"].soon
    # One per 100 s bin from +100 s, then [1000, 2000), [2000, 4000), [4000, 8000).
    assert [s.at - NOW for s in soon] == [100.0 * i for i in range(1, 11)] + [2000.0, 4000.0]
    assert soon[-1] == Soon(NOW + 4000, 1010, 1000 * 10.0 + 10 * 100.0)


def test_forecast_wants_parents_first():
    with pytest.raises(ValueError, match="'b': parent 'a'.*topological order"):
        forecast(NOW, running=[], ready=[], pending=[("b", "p", 1.0, ("a",)),
                                                     ("a", "p", 1.0, ())], horizon=10)  # fmt: skip


def test_forecast_keeps_ready_histograms_small():
    ready = [(f"j{i}", "p", float(i)) for i in range(1, 1001)]
    view = forecast(NOW, running=[], ready=ready, pending=[], horizon=10)["p"]
    assert len(view.ready.runtimes) <= 32
    assert view.ready.count == 1000
    assert view.ready.seconds == pytest.approx(sum(range(1, 1001)))


def test_project_gives_a_long_job_one_worker():
    work = WorkView(ready=ReadyWork(((1.0, 1000), (3600.0, 1))))
    projection = project(NOW, NOW + 300, work, [Capacity(NOW, math.inf, 100)])
    assert projection.jobs[0] == 1001
    assert projection.jobs[-1] == pytest.approx(1.0)
    assert projection.seconds[-1] == pytest.approx(3300.0, rel=0.02)


def test_project_runs_a_level_that_fits_as_one_wave():
    work = WorkView(ready=ReadyWork(((100.0, 50),)))
    projection = project(NOW, NOW + 160, work, [Capacity(NOW, math.inf, 100)])
    assert projection.jobs[-1] == 0  # all 50 ran side by side and ended at +100 s
    late = project(NOW, NOW + 160, work, [Capacity(NOW + 100, math.inf, 100)])
    assert late.jobs[-1] == 50  # a queued pilot up at +100 s has not finished them


def test_project_takes_in_work_that_becomes_ready_on_the_way():
    work = WorkView(soon=(Soon(NOW + 50, 10, 10 * 100.0),))
    projection = project(NOW, NOW + 300, work, [Capacity(NOW, math.inf, 10)])
    assert projection.jobs[0] == 0
    assert max(projection.jobs) == 10
    assert projection.jobs[-1] == 0  # ready at +50 s, done by +170 s


def test_queue_wait_estimate_is_the_median_of_recent_pilots():
    assert queue_wait_estimate([]) is None
    assert queue_wait_estimate([30.0, 40.0, 5000.0]) == 40.0
    assert queue_wait_estimate([9999.0] * 30 + [10.0] * 20) == 10.0  # only the last 20


def test_queue_wait_estimate_counts_pilots_still_queued_as_at_least_their_wait():
    # A burst: the first 10 of 30 started within a minute, 20 have waited 400 s so far.
    assert queue_wait_estimate([50.0] * 10) == 50.0
    assert queue_wait_estimate([50.0] * 10, [400.0] * 20) == 400.0  # at least that
    # Pilots queued for a moment say nothing: the median of those that started stands.
    assert queue_wait_estimate([40.0, 50.0, 60.0], [1.0] * 50) == 50.0
    # Two of five still queued beyond the rest: the median is the third start.
    assert queue_wait_estimate([10.0, 20.0, 30.0], [100.0, 100.0]) == 30.0


def test_idle_pilot_goes_before_its_timeout_only_when_no_work_is_due_within_it():
    # Queue wait 0: the pilot is kept for work due within idle_timeout (60 s), not only
    # within the queue wait, and goes at once when the next work is due later.
    recent = running("r0", idle_since=NOW - 10)
    due_soon = WorkView(soon=(Soon(NOW + 45, 4, 4 * 600.0),))
    due_late = WorkView(soon=(Soon(NOW + 500, 4, 4 * 600.0),))
    assert at(due_soon, recent, queue_wait=0.0).release == ()
    assert at(due_late, recent, queue_wait=0.0).release == ("r0",)
