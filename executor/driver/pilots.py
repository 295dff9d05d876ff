"""Pilots (Parsl blocks) as the store sees them, and when a pool's pilots count as broken.

:class:`PilotTracker` turns what Parsl knows about each executor's blocks (block id,
batch job id, ``JobStatus``, connected managers) into rows of the ``pilots`` table:
state, submitted/start/end times, node and cores. The driver calls :meth:`poll` from
its loop; polls are rate-limited and each writes only the rows that changed, in one
short transaction of its own.

States are Parsl's ``JobState`` names in lower case (``pending``, ``running``,
``timeout``, ``cancelled``, ``completed``, ``failed``, ``missing``, ``scaled_in``):
a pilot that reaches its walltime is ``timeout``, which is how pilots normally end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from executor.model.states import ENDED_PILOT_STATES
from executor.store.database import Store
from executor.store.pilots import record_pilots

logger = logging.getLogger(__name__)

# How often, at most, the tracker asks the interchange about managers and writes.
POLL_SECONDS = 2.0


@dataclass
class Pilot:
    """What the tracker knows of one block."""

    pool: str
    block_id: str
    job_id: str | None = None
    state: str = "pending"
    submitted: float | None = None
    start: float | None = None
    end: float | None = None
    node: str | None = None
    cores: int | None = None
    workers: int | None = None
    message: str | None = None

    def row(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id, "pool": self.pool, "block_id": self.block_id,
            "job_id": self.job_id, "state": self.state, "submitted": self.submitted,
            "start": self.start, "end": self.end, "node": self.node, "cores": self.cores,
            "workers": self.workers, "message": self.message,
        }  # fmt: skip


class PilotTracker:
    """Records the pilots of one run's executors in the store.

    Parameters
    ----------
    store, run_id
        Where to write.
    executors
        Parsl executors with blocks (``BlockProviderExecutor``), labelled by pool.
    interval
        Seconds between polls that do any work.
    """

    def __init__(
        self, store: Store, run_id: str, executors: Iterable[Any], interval: float = POLL_SECONDS
    ):
        self.store = store
        self.run_id = run_id
        self.executors = [e for e in executors if getattr(e, "provider", None) is not None]
        self.interval = interval
        self.pilots: dict[tuple[str, str], Pilot] = {}
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._last = -float("inf")

    def poll(self, *, final: bool = False) -> None:
        """Record new blocks and state changes; at most once per ``interval`` unless ``final``.

        ``final`` is the last poll after Parsl stopped: it does not ask the (stopped)
        interchange anything.
        """
        now = time.monotonic()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        for executor in self.executors:
            try:
                self._observe(executor, final=final)
            except Exception:  # the boundary with Parsl: a poll must never stop the driver
                logger.exception("could not read the pilots of pool %s", executor.label)
        self._write()

    # -- reading Parsl ---------------------------------------------------------------
    def _observe(self, executor: Any, *, final: bool) -> None:
        now = time.time()
        pool = executor.label
        job_ids = dict(executor.blocks_to_job_id)
        statuses = dict(executor.status_facade)
        resources = getattr(executor.provider, "resources", {}) or {}
        managers = [] if final else managers_of(executor)
        for block_id in set(job_ids) | set(statuses):
            pilot = self.pilots.get((pool, block_id))
            if pilot is None:
                # Until its workers connect: what the pool asks of each pilot.
                planned = getattr(executor, "workers_per_node", 0)
                cores = _cores(executor, planned)
                pilot = Pilot(pool, block_id, submitted=now, cores=cores, workers=_whole(planned))
                self.pilots[pool, block_id] = pilot
            pilot.job_id = job_ids.get(block_id, pilot.job_id)
            status = statuses.get(block_id)
            state = status.state.name.lower() if status is not None else pilot.state
            provider = resources.get(pilot.job_id, {}).get("status") if pilot.job_id else None
            provider_state = provider.state.name.lower() if provider is not None else None
            # Parsl calls every ended block whose workers went away "missing"; the
            # provider still knows whether it timed out, was cancelled or completed.
            if provider_state in ENDED_PILOT_STATES and state in ("missing", "running", "pending"):
                state = provider_state
            pilot.node = resources.get(pilot.job_id, {}).get("node") or pilot.node
            if status is not None and status.message and state in ("failed", "missing"):
                pilot.message = status.message[:500]
            self._move(pilot, state, now)
        for manager in managers:
            pilot = self.pilots.get((pool, str(manager.get("block_id"))))
            if pilot is None:
                continue
            if pilot.start is None:
                pilot.start = now
            if pilot.state == "pending":
                pilot.state = "running"
            pilot.cores = _cores(executor, manager.get("worker_count")) or pilot.cores
            pilot.workers = _whole(manager.get("worker_count")) or pilot.workers

    @staticmethod
    def _move(pilot: Pilot, state: str, now: float) -> None:
        if pilot.state in ENDED_PILOT_STATES:
            return  # a block never comes back; keep its first ending
        pilot.state = state
        if state == "running" and pilot.start is None:
            pilot.start = now
        if state in ENDED_PILOT_STATES and pilot.end is None:
            pilot.end = now

    # -- writing ---------------------------------------------------------------------
    def _write(self) -> None:
        changed = []
        for key, pilot in self.pilots.items():
            row = pilot.row(self.run_id)
            if self._written.get(key) != row:
                changed.append((key, row))
        if not changed:
            return
        try:
            record_pilots(self.store, self.run_id, [row for _, row in changed])
        except Exception:  # StoreError: try again at the next poll, never stop the run
            logger.exception("could not record pilots")
            return
        for key, row in changed:
            self._written[key] = row


def _whole(workers: Any) -> int | None:
    try:
        return int(workers) or None
    except (TypeError, ValueError, OverflowError):  # e.g. workers_per_node is inf
        return None


def _cores(executor: Any, workers: Any) -> int | None:
    try:
        return int(workers * (getattr(executor, "cores_per_worker", 1) or 1)) or None
    except (TypeError, ValueError, OverflowError):  # e.g. workers_per_node is inf
        return None


def managers_of(executor: Any) -> list[dict[str, Any]]:
    """The interchange's view of connected workers; nothing if it is not running."""
    process = getattr(executor, "interchange_proc", None)
    if process is None or process.poll() is not None:
        return []
    try:
        return list(executor.connected_managers())
    except Exception:
        logger.debug("could not list managers of %s", executor.label, exc_info=True)
        return []
