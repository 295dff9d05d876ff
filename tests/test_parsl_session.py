"""Starting Parsl for a run: the worker port chosen ahead of the interchange."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from executor.driver import parsl_session
from executor.policy.pools import PoolConfig
from executor.sites.local import LocalSite


def test_a_worker_port_taken_after_it_was_chosen_starts_parsl_with_its_own_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port chosen ahead is free when chosen; another process (a concurrent run)
    may bind it before the interchange does. The run still starts."""
    from parsl.executors.high_throughput.zmq_pipes import CommandClient

    # Parsl waits 120 s for an interchange that could not bind; 10 s will do here.
    run = CommandClient.run

    def sooner(self, message, max_retries=3, timeout_s=None):  # noqa: ANN001
        return run(self, message, max_retries, None if timeout_s is None else min(timeout_s, 10))

    monkeypatch.setattr(CommandClient, "run", sooner)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(parsl_session, "free_port", lambda port_range: port)
        site = LocalSite(name="ports", pools=(PoolConfig(name="default", workers=1),))
        session = parsl_session.ParslSession(site, tmp_path / "run", shutdown_seconds=10)
        with session:
            [executor] = session.executors.values()
            assert executor.worker_port != port
            future = session.apps["default"]([])  # an empty bundle: the pool answers
            assert future.result(timeout=120) == []


def test_a_site_that_cannot_start_says_why_after_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from executor.errors import SiteError

    def broken(executor, backend: str) -> None:
        executor.interchange_launch_cmd = [str(tmp_path / "no-interchange")]

    monkeypatch.setattr(parsl_session, "launch_lean", broken)
    site = LocalSite(name="broken", pools=(PoolConfig(name="default", workers=1),))
    session = parsl_session.ParslSession(site, tmp_path / "run", shutdown_seconds=10)
    with pytest.raises(SiteError, match="'broken' could not start its pilots: .*no-interchange"):
        session.start()
    assert session.dfk is None
