"""A round of submission (:func:`plan_submission`): properties over random ready queues.

What each round must guarantee, whatever the labels, pools, estimates and knobs:

- every ready job is placed exactly once: in one bundle of its own pool, or put back;
- no pool is handed more bundles than its free slots, and the jobs handed to it take at
  most its free slots when a job of a label packed ``n`` to a bundle counts ``1/n``;
- bundles respect ``max_jobs`` and the fair share (below); with static clustering,
  ``cluster_max`` and one key per bundle; unknown, long and keyless jobs run alone;
- the fair share: no bundle takes more than ``max(1, ready // all pools' slots)`` jobs,
  the same cap for every label, so when fewer jobs are ready than twice the slots each
  job gets a bundle of its own and the jobs spread over all workers;
- room is never left unused while a job waits: a job is put back only when its pool
  got a bundle for each free slot, or its ``1/n`` does not fit beside the jobs placed;
- within one label (one key, with static clustering) and pool, the jobs placed are
  the first ones in priority order.

Room is not reserved per label: jobs take it in priority order (longest chain first,
then as written), so when room is short the labels ranked first get it
(:func:`test_room_goes_in_priority_order_whatever_the_label`).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from executor.policy.packing import (
    PackingPolicy,
    ReadyJob,
    Submission,
    bundle_slots,
    free_room,
    jobs_per_bundle,
    most_that_fit,
    plan_submission,
)

PROPERTY = settings(max_examples=400, deadline=None, database=None)
LABELS = ["a", "b", "c", "d"]
POOLS = ["small", "big", "gpu"]


@st.composite
def rounds(draw, static: bool | None = None):
    """One round's inputs: ready jobs in priority order, the pools, estimates and knobs."""
    pools = draw(st.lists(st.sampled_from(POOLS), min_size=1, max_size=3, unique=True))
    slots = {pool: draw(st.integers(0, 12), label=f"slots {pool}") for pool in pools}
    in_flight = {pool: draw(st.integers(0, slots[pool] + 2), label=f"in flight {pool}")
                 for pool in pools}  # fmt: skip
    jobs = draw(st.lists(st.tuples(
        st.sampled_from(LABELS), st.sampled_from(pools), st.sampled_from([None, "k1", "k2"]),
    ), max_size=250))  # fmt: skip
    ready = [ReadyJob(f"job-{i}", label, pool, key) for i, (label, pool, key) in enumerate(jobs)]
    estimates = draw(st.dictionaries(st.sampled_from(LABELS), st.one_of(
        st.floats(0.0, 60.0), st.sampled_from([0.0001, 0.01, 1.0, 2.5, 5.0]),
    ), max_size=4))  # fmt: skip
    policy = PackingPolicy(
        target_seconds=draw(st.sampled_from([0.0, 0.5, 1.0, 7.3, 10.0, 30.0])),
        max_jobs=draw(st.integers(1, 60)),
    )
    if static is None:
        static = draw(st.booleans())
    cluster_max = draw(st.integers(1, 8)) if static else None
    return ready, slots, in_flight, estimates, policy, cluster_max


def plan(ready, slots, in_flight, estimates, policy, cluster_max) -> Submission:
    return plan_submission(
        ready, slots=slots, in_flight=in_flight, estimates=estimates, policy=policy,
        cluster_max=cluster_max,
    )  # fmt: skip


def share_of(ready, slots) -> int:
    """The fair share, by its definition: the ready jobs per bundle slot of all pools."""
    return max(1, len(ready) // max(1, sum(slots.values())))


def per_bundle(label, estimates, policy, cluster_max, share) -> int:
    """``n``: how many jobs of ``label`` the driver counts to a bundle (a job costs 1/n)."""
    if cluster_max is not None:
        return cluster_max
    return jobs_per_bundle(estimates.get(label), policy, share)


@PROPERTY
@given(rounds())
def test_every_ready_job_is_placed_exactly_once_in_its_own_pool(inputs):
    ready, slots, *_ = inputs
    result = plan(*inputs)
    placed = [name for bundles in result.bundles.values() for b in bundles for name in b]
    assert Counter(placed + result.put_back) == Counter(job.name for job in ready)
    assert not set(placed) & set(result.put_back)
    pool_of = {job.name: job.pool for job in ready}
    position = {job.name: i for i, job in enumerate(ready)}
    for pool, bundles in result.bundles.items():
        for bundle in bundles:
            assert bundle and all(pool_of[name] == pool for name in bundle)
            assert [position[n] for n in bundle] == sorted(position[n] for n in bundle)
    assert [position[n] for n in result.put_back] == sorted(position[n] for n in result.put_back)
    assert set(result.waiting) == set(slots)


@PROPERTY
@given(rounds())
def test_no_pool_gets_more_than_its_free_slots(inputs):
    ready, slots, in_flight, estimates, policy, cluster_max = inputs
    result = plan(*inputs)
    share = share_of(ready, slots)
    label_of = {job.name: job.label for job in ready}
    for pool in slots:
        free = max(0, slots[pool] - in_flight[pool])
        bundles = result.bundles.get(pool, [])
        assert len(bundles) <= free  # in flight after the round: at most the pool's slots
        used = sum(
            1 / per_bundle(label_of[name], estimates, policy, cluster_max, share)
            for bundle in bundles
            for name in bundle
        )
        assert used <= free + 1e-9


@PROPERTY
@given(rounds(static=False))
def test_bundles_respect_max_jobs_the_fair_share_and_keep_unknown_or_long_jobs_alone(inputs):
    ready, slots, _, estimates, policy, _ = inputs
    result = plan(*inputs)
    share = share_of(ready, slots)
    label_of = {job.name: job.label for job in ready}
    for bundles in result.bundles.values():
        for bundle in bundles:
            assert 1 <= len(bundle) <= min(policy.max_jobs, share)
            if len(bundle) > 1:  # only jobs known to be short are packed
                assert policy.target_seconds > 0
                runtimes = [estimates.get(label_of[name]) for name in bundle]
                assert all(r is not None and not policy.long(r) for r in runtimes)


@PROPERTY
@given(rounds(static=True))
def test_static_bundles_hold_one_key_and_at_most_cluster_max(inputs):
    ready, *_, cluster_max = inputs
    result = plan(*inputs)
    key_of = {job.name: job.key for job in ready}
    for bundles in result.bundles.values():
        for bundle in bundles:
            assert 1 <= len(bundle) <= cluster_max
            keys = {key_of[name] for name in bundle}
            assert len(keys) == 1
            if keys == {None}:
                assert len(bundle) == 1  # a job without a key runs alone


@PROPERTY
@given(rounds(static=False))
def test_few_ready_jobs_each_get_a_bundle_of_their_own(inputs):
    ready, slots, *_ = inputs
    result = plan(*inputs)
    if len(ready) < 2 * sum(slots.values()):
        assert all(len(b) == 1 for bundles in result.bundles.values() for b in bundles)


@PROPERTY
@given(rounds())
def test_a_job_waits_only_when_its_pool_is_full(inputs):
    ready, slots, in_flight, estimates, policy, cluster_max = inputs
    result = plan(*inputs)
    share = share_of(ready, slots)
    jobs = {job.name: job for job in ready}
    for name in result.put_back:
        job = jobs[name]
        free = max(0, slots[job.pool] - in_flight[job.pool])
        bundles = result.bundles.get(job.pool, [])
        placed = [jobs[n] for bundle in bundles for n in bundle]
        used = sum(1 / per_bundle(j.label, estimates, policy, cluster_max, share) for j in placed)
        cost = 1 / per_bundle(job.label, estimates, policy, cluster_max, share)
        assert len(bundles) == free or used + cost > free + 1e-9, name
    for pool, waiting in result.waiting.items():
        assert waiting <= sum(1 for name in result.put_back if jobs[name].pool == pool)


@PROPERTY
@given(rounds())
def test_a_labels_jobs_are_placed_in_priority_order(inputs):
    ready, *_, cluster_max = inputs
    result = plan(*inputs)
    placed = {name for bundles in result.bundles.values() for b in bundles for name in b}
    # With static clustering the key groups jobs, so a key's jobs keep their order.
    group = (lambda job: job.label) if cluster_max is None else (lambda job: job.key)
    for kind in {(group(job), job.pool) for job in ready}:
        mine = [job.name in placed for job in ready if (group(job), job.pool) == kind]
        assert mine == sorted(mine, reverse=True)  # placed ones first, then those put back


def test_room_goes_in_priority_order_whatever_the_label():
    # Two pilots' worth of room, label a ranked first: a's jobs take it all, b waits.
    ready = [ReadyJob(f"a-{i}", "a", "p") for i in range(4)]
    ready += [ReadyJob(f"b-{i}", "b", "p") for i in range(4)]
    result = plan(ready, {"p": 2}, {"p": 0}, {}, PackingPolicy(), None)
    assert result.bundles == {"p": [["a-0"], ["a-1"]]}
    assert result.put_back == ["a-2", "a-3", "b-0", "b-1", "b-2", "b-3"]
    assert result.waiting == {"p": 6}


def test_known_short_jobs_are_packed_from_the_first_round():
    # 400 tiny jobs whose runtime is known (an earlier run), 8 slots: 8 bundles of 50.
    ready = [ReadyJob(f"t-{i}", "t", "p") for i in range(400)]
    result = plan(ready, {"p": 8}, {"p": 0}, {"t": 0.001}, PackingPolicy(), None)
    assert [len(b) for b in result.bundles["p"]] == [50] * 8
    assert result.put_back == []
    unknown = plan(ready, {"p": 8}, {"p": 0}, {}, PackingPolicy(), None)
    assert [len(b) for b in unknown.bundles["p"]] == [1] * 8


@given(
    estimate=st.one_of(st.none(), st.floats(0.0, 100.0)),
    target=st.floats(0.0, 60.0),
    max_jobs=st.integers(1, 600),
    share=st.integers(1, 1000),
)
def test_jobs_per_bundle_stays_within_the_knobs(estimate, target, max_jobs, share):
    policy = PackingPolicy(target_seconds=target, max_jobs=max_jobs)
    n = jobs_per_bundle(estimate, policy, share)
    assert 1 <= n <= max(1, min(max_jobs, share))
    if estimate is None or target <= 0 or policy.long(estimate):
        assert n == 1
    else:
        assert n == 1 or n * max(estimate, 1e-4) <= target * (1 + 1e-9)


def test_room_is_two_bundles_per_worker_slot():
    assert bundle_slots(workers=4, max_blocks=3) == 24
    assert free_room({"a": 8, "b": 2}, {"a": 3, "b": 5}) == {"a": 5, "b": 0}


@PROPERTY
@given(rounds(), st.integers(0, 300))
def test_one_pools_plan_is_the_same_from_a_prefix_that_holds_all_that_fit(case, extra):
    """The driver passes a single pool's first :func:`most_that_fit` ready jobs (or
    more) and counts the rest as unseen: the bundles, the order of what is put back and
    the demand are those of the plan over every ready job."""
    ready, slots, in_flight, estimates, policy, cluster_max = case
    pool = next(iter(slots))
    ready = [job._replace(pool=pool) for job in ready]
    slots, in_flight = {pool: slots[pool]}, {pool: in_flight[pool]}
    whole = plan(ready, slots, in_flight, estimates, policy, cluster_max)
    seen = min(len(ready), most_that_fit(slots, in_flight, policy, cluster_max) + extra)

    part = plan_submission(
        ready[:seen], slots=slots, in_flight=in_flight, estimates=estimates, policy=policy,
        cluster_max=cluster_max, unseen=len(ready) - seen,
    )  # fmt: skip

    assert part.bundles == whole.bundles
    assert part.put_back + [job.name for job in ready[seen:]] == whole.put_back
    assert part.waiting == whole.waiting
