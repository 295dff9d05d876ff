"""Bundles handed to Parsl: sent, remembered until they return, sent again for code.

Each bundle is one Parsl task of a pool's executor. Its future, when done, is put on
the driver's queue with the bundle's id; until then the bundle is remembered with all
a resend needs (its pool, its jobs and their specs), because a node without the
shipped code answers ``code_missing`` and the same bundle goes again with the chunks
it lacks (:mod:`executor.driver.delivery`).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from executor.driver.delivery import CodeDelivery
from executor.shipping.runtime import bootstrap_call
from executor.worker.spec import JobSpec
from executor.worker.wire import PackedList


@dataclass(frozen=True)
class Bundle:
    pool: str
    members: list[tuple[str, int]]  # (job, attempt), in the order they run
    specs: list[JobSpec]
    sent: float = 0.0  # when it was first handed to Parsl (seconds since the epoch)
    via: str = ""  # the executor that runs it: its pool's, or start_locally's


class BundlesInFlight:
    """The bundles Parsl holds, per pool.

    Parameters
    ----------
    pools
        The names of the site's pools.
    done
        Where each finished future goes, as ``(bundle id, future)``.
    delivery, runtime_package
        How shipped code and the worker runtime travel (:func:`plan_delivery`).
    """

    def __init__(
        self,
        pools: list[str],
        done: queue.SimpleQueue,
        delivery: CodeDelivery | None,
        runtime_package: str | None,
    ):
        self._done = done
        self._delivery = delivery
        self._runtime_package = runtime_package
        self._apps: Mapping[str, Any] = {}
        self._bundles: dict[int, Bundle] = {}
        self._resends: dict[int, int] = {}  # bundle id -> times sent again for missing code
        self._next = 0
        self.load = dict.fromkeys(pools, 0)  # bundles each pool holds
        self.load_via: dict[str, int] = {}  # of those, bundles another executor runs

    def connect(self, apps: Mapping[str, Any]) -> None:
        """Use these Parsl apps, one per pool (once Parsl has started)."""
        self._apps = apps

    def __bool__(self) -> bool:
        return bool(self._bundles)

    def send(
        self, pool: str, members: list[tuple[str, int]], specs: list[JobSpec], via: str = ""
    ) -> None:
        """Hand a new bundle of ``pool`` to its executor, or to executor ``via``."""
        bundle_id, self._next = self._next, self._next + 1
        via = via or pool
        self._bundles[bundle_id] = Bundle(pool, members, specs, time.time(), via)
        self.load[pool] += 1
        if via != pool:
            self.load_via[via] = self.load_via.get(via, 0) + 1
        code = self._delivery.payload(pool) if self._delivery else None
        self._submit(bundle_id, via, specs, code)

    def adopt(
        self, pool: str, members: list[tuple[str, int]], specs: list[JobSpec], future: Any
    ) -> None:
        """Take over a bundle a previous driver of the run sent (a restart reattached to
        its task): from now on it is in flight like any other."""
        bundle_id, self._next = self._next, self._next + 1
        self._bundles[bundle_id] = Bundle(pool, members, specs, time.time(), pool)
        self.load[pool] += 1
        future.add_done_callback(lambda f, b=bundle_id: self._done.put((b, f)))

    def members_sent(self) -> Iterator[tuple[str, list[tuple[str, int]], float]]:
        """Each bundle in flight: its pool, its ``(job, attempt)`` members, when it was sent."""
        for bundle in list(self._bundles.values()):
            yield bundle.pool, bundle.members, bundle.sent

    def resend_for_code(self, bundle_id: int, missing: dict[str, list[int]]) -> bool:
        """Send a bundle again with the code its node lacks; ``False`` once that is futile."""
        assert self._delivery is not None
        rounds = self._resends.get(bundle_id, 0) + 1
        if rounds > self._delivery.rounds_allowed:
            return False
        self._resends[bundle_id] = rounds
        bundle = self._bundles[bundle_id]
        self._submit(bundle_id, bundle.via, bundle.specs, self._delivery.for_missing(missing))
        return True

    def get(self, bundle_id: int) -> Bundle | None:
        """The bundle, unless it was given up on (a cancel) or finished."""
        return self._bundles.get(bundle_id)

    def finish(self, bundle_id: int) -> None:
        """Forget a bundle that returned for good."""
        bundle = self._bundles.pop(bundle_id)
        self._resends.pop(bundle_id, None)
        self.load[bundle.pool] -= 1
        if bundle.via != bundle.pool:
            self.load_via[bundle.via] -= 1

    def forget_all(self) -> None:
        """Give up on every bundle (a cancel whose workers did not all report)."""
        self._bundles.clear()
        self._resends.clear()
        self.load = dict.fromkeys(self.load, 0)
        self.load_via.clear()

    def _submit(self, bundle_id: int, pool: str, specs: list[JobSpec], code: list | None) -> None:
        app = self._apps[pool]
        specs = PackedList(specs)  # pickled by C, not by dill's pure-Python pickler
        if self._runtime_package is not None:
            future = app(*bootstrap_call(specs, code or [], self._runtime_package))
        elif code:
            future = app(specs, code)
        else:
            future = app(specs)
        future.add_done_callback(lambda f, b=bundle_id: self._done.put((b, f)))
