"""The packer places every job exactly once, respects the target, and keeps long jobs alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from executor.policy.packing import PackingPolicy, RuntimeEstimates, plan_bundles

labels = st.sampled_from(["a", "b", "c", "d"])
estimates_strategy = st.dictionaries(labels, st.floats(0.0001, 60), max_size=4)


@given(
    jobs=st.lists(labels, max_size=300),
    estimates=estimates_strategy,
    target=st.floats(0.5, 30),
    max_jobs=st.integers(1, 50),
    free=st.integers(1, 16),
)
def test_every_job_is_placed_once_and_bundles_respect_the_target(
    jobs, estimates, target, max_jobs, free
):
    named = [(f"job-{i}", label) for i, label in enumerate(jobs)]
    policy = PackingPolicy(target_seconds=target, max_jobs=max_jobs)
    bundles = plan_bundles(named, estimates, policy, free)

    placed = [name for bundle in bundles for name in bundle]
    assert sorted(placed) == sorted(name for name, _ in named)  # each exactly once
    label_of = dict(named)
    for bundle in bundles:
        assert 1 <= len(bundle) <= max_jobs
        runtimes = [estimates.get(label_of[name]) for name in bundle]
        if len(bundle) > 1:
            # Known, short jobs only; the target is reached only by the last one.
            assert all(r is not None and r < target / 2 for r in runtimes)
            assert sum(runtimes[:-1]) < target
        if any(r is None or r >= target / 2 for r in runtimes):
            assert len(bundle) == 1  # unknown and long jobs run alone


@given(jobs=st.integers(1, 400), free=st.integers(1, 32))
def test_free_workers_all_get_work(jobs, free):
    named = [(f"job-{i}", "tiny") for i in range(jobs)]
    bundles = plan_bundles(named, {"tiny": 0.001}, PackingPolicy(target_seconds=10), free)
    assert len(bundles) >= min(jobs, free)


def test_short_jobs_fill_bundles_up_to_the_target():
    named = [(f"job-{i}", "short") for i in range(100)]
    bundles = plan_bundles(named, {"short": 1.0}, PackingPolicy(target_seconds=10), 2)
    assert [len(b) for b in bundles] == [10] * 10


def test_packing_off_and_estimates():
    named = [("a", "x"), ("b", "x")]
    assert plan_bundles(named, {"x": 0.1}, PackingPolicy(target_seconds=0), 1) == [["a"], ["b"]]
    estimates = RuntimeEstimates({"x": 2.0})
    estimates.add("x", 4.0)
    estimates.add("y", 1.0)
    assert estimates.as_mapping() == {"x": 3.0, "y": 1.0}


@given(
    jobs=st.lists(st.one_of(st.none(), st.sampled_from(["v1", "v2", "v3"])), max_size=200),
    size=st.integers(1, 20),
)
def test_static_clustering_groups_equal_keys_up_to_the_maximum(jobs, size):
    from executor.policy.packing import plan_static

    named = [(f"job-{i}", key) for i, key in enumerate(jobs)]
    bundles = plan_static(named, size)
    key_of = dict(named)
    assert sorted(n for b in bundles for n in b) == sorted(n for n, _ in named)
    for bundle in bundles:
        keys = {key_of[n] for n in bundle}
        assert len(keys) == 1 and 1 <= len(bundle) <= size
        if None in keys:
            assert len(bundle) == 1
    # Only the last bundle of a key may be short of the maximum.
    for key in {"v1", "v2", "v3"}:
        sizes = [len(b) for b in bundles if key_of[b[0]] == key]
        assert all(n == size for n in sizes[:-1])
