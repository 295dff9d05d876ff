"""Pool selection, memory escalation, retry decisions and pilot scaling: pure policies."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor.errors import ConfigError, GraphError
from executor.model.graph import Job
from executor.policy.pools import (
    PoolConfig,
    assign_pools,
    escalated_memory,
    pools_from_mapping,
    select_pool,
)
from executor.policy.retrying import MAX_TRANSIENT_RETRIES, RetryState, decide

pool_strategy = st.builds(
    PoolConfig,
    name=st.uuids().map(str),
    cores=st.integers(1, 64),
    memory=st.one_of(st.none(), st.integers(100, 512_000)),
    max_blocks=st.integers(1, 10),
)


@given(pools=st.lists(pool_strategy, min_size=1, max_size=6),
       cores=st.integers(1, 64), memory=st.one_of(st.none(), st.integers(1, 600_000)))  # fmt: skip
def test_select_pool_picks_the_smallest_pool_that_fits(pools, cores, memory):
    chosen = select_pool(pools, cores, memory)
    fitting = [p for p in pools if p.fits(cores, memory)]
    if not fitting:
        assert chosen is None
        return
    assert chosen is not None and chosen.fits(cores, memory)
    size = lambda p: (math.inf if p.memory is None else p.memory, p.cores)  # noqa: E731
    assert size(chosen) == min(size(p) for p in fitting)


@given(memory=st.integers(1, 100_000), multiplier=st.floats(1, 8),
       failures=st.integers(0, 6), cap=st.one_of(st.none(), st.integers(1, 1_000_000)))  # fmt: skip
def test_escalated_memory_grows_and_respects_the_cap(memory, multiplier, failures, cap):
    first = escalated_memory(memory, multiplier, failures, cap)
    more = escalated_memory(memory, multiplier, failures + 1, cap)
    assert first is not None and more is not None
    assert memory <= first <= more
    if cap is not None:
        assert more <= max(cap, memory)


def test_escalation_follows_htcondor_arithmetic():
    assert escalated_memory(1000, 2, 1, None) == 2000
    assert escalated_memory(1000, 2, 3, 5000) == 5000
    assert escalated_memory(None, 2, 1, None) is None


def _job(**fields) -> Job:
    return Job(name="j", label="j", command="true", **fields)


SMALL = PoolConfig(name="small", memory=1000)
LARGE = PoolConfig(name="large", memory=4000)


def test_out_of_memory_retry_asks_for_more_memory_and_may_change_pool():
    job = _job(memory=1000, memory_multiplier=3, retries=2)
    oom = {"failure_class": "out_of_memory", "message": "too big"}
    decision = decide(job, oom, RetryState(), [SMALL, LARGE])
    assert decision.action == "retry"
    assert decision.state.memory == 3000 and decision.state.retries_used == 1
    assert select_pool([SMALL, LARGE], 1, decision.state.memory) == LARGE
    again = decide(job, oom, decision.state, [SMALL, LARGE])
    assert again.action == "fail"  # 9000 fits no pool
    assert "more than any pool" in again.detail


def test_transient_failures_do_not_use_retries_but_are_bounded():
    job = _job(retries=0)
    lost = {"failure_class": "pilot_lost", "message": "ManagerLost"}
    state = RetryState()
    for _ in range(MAX_TRANSIENT_RETRIES):
        decision = decide(job, lost, state, [SMALL])
        assert decision.action == "retry"
        state = decision.state
    assert state.retries_used == 0
    assert decide(job, lost, state, [SMALL]).action == "fail"


def test_retry_unless_exit_and_abort_on_exit():
    job = _job(retries=5, retry_unless_exit=(2,), abort_on_exit=9)
    assert (
        decide(job, {"failure_class": "exit_code", "exit_code": 2}, RetryState(), [SMALL]).action
        == "fail"
    )
    assert (
        decide(job, {"failure_class": "exit_code", "exit_code": 9}, RetryState(), [SMALL]).action
        == "abort"
    )
    assert (
        decide(job, {"failure_class": "exit_code", "exit_code": 1}, RetryState(), [SMALL]).action
        == "retry"
    )
    assert (
        decide(job, {"failure_class": "signal", "exit_code": None}, RetryState(), [SMALL]).action
        == "retry"
    )


def test_pools_from_a_site_file_and_their_errors():
    pools = pools_from_mapping(
        {"small": {"memory": "4GB"}, "big": {"cores": 8, "memory": "64GB"}}, "s.yaml"
    )
    assert [(p.name, p.cores, p.memory) for p in pools] == [("small", 1, 4000), ("big", 8, 64000)]
    with pytest.raises(ConfigError, match="unknown key 'memroy'"):
        pools_from_mapping({"small": {"memroy": "4GB"}}, "s.yaml")
    with pytest.raises(ConfigError, match="init_blocks"):
        pools_from_mapping({"small": {"init_blocks": 3, "max_blocks": 1}}, "s.yaml")


def test_assign_pools_names_every_job_that_fits_nowhere():
    jobs = [_job(memory=500), Job(name="whale", label="w", command="true", memory=10_000),
            Job(name="wide", label="w", command="true", cores=4)]  # fmt: skip
    with pytest.raises(GraphError) as caught:
        assign_pools(jobs, [SMALL, LARGE])
    assert len(caught.value.problems) == 2
    assert "whale" in caught.value.problems[0] and "large" in caught.value.problems[0]
    assert "wide" in caught.value.problems[1] and "4 core(s)" in caught.value.problems[1]
