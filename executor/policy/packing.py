"""Adaptive packing: ready jobs of one pool grouped into bundles a worker runs back to back.

Pure policy. Most jobs in this field are short, and per-task overhead (a Parsl task,
a result message, a worker round trip) then dominates; a bundle pays it once for
many jobs. A bundle is filled until its jobs' expected runtimes reach the target
(a site knob, e.g. 10 s). Expected runtimes come from what was measured for each
label (in this run, and earlier runs of the same workflow). A job whose label has
no measurement yet, or whose runtime is long, runs alone: unknown labels start
with bundles of one that grow as soon as timings arrive.

Each round the driver hands :func:`plan_submission` the ready jobs, in priority order,
with their label and pool, and what each pool holds; it answers with the bundles to
hand each pool now and the jobs to put back. The driver applies the answer and
decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

#: A pool holds at most this many bundles per worker slot: its workers never wait for
#: the driver, and a 200,000-job graph never becomes 200,000 futures.
BUNDLES_PER_WORKER = 2
# Slot accounting adds fractions (1/n per job); this much over the room is rounding.
_ROUNDING = 1e-9


@dataclass(frozen=True, kw_only=True)
class PackingPolicy:
    """Site knobs for packing.

    Parameters
    ----------
    target_seconds
        Expected runtime of a bundle; 0 turns packing off (one job per task).
    max_jobs
        Most jobs in one bundle, so a result message stays small.
    """

    target_seconds: float = 10.0
    max_jobs: int = 500

    def long(self, estimate: float) -> bool:
        """A job expected to take half the target or more gains nothing from packing."""
        return estimate >= self.target_seconds / 2


def plan_bundles(
    jobs: Sequence[tuple[str, str]],
    estimates: Mapping[str, float],
    policy: PackingPolicy,
    free_workers: int,
) -> list[list[str]]:
    """Group ``jobs`` (name, label), in priority order, into bundles.

    Every job lands in exactly one bundle; bundles keep the jobs' order. A bundle's
    expected runtime reaches the target only with its last job, and no bundle
    takes so many jobs that a free worker would be left without one.
    """
    if not jobs:
        return []
    # Keep every free worker busy: never put more than this many jobs in one bundle.
    spread = max(1, len(jobs) // max(1, free_workers))
    cap = max(1, min(policy.max_jobs, spread))
    bundles: list[list[str]] = []
    current: list[str] = []
    expected = 0.0
    for name, label in jobs:
        estimate = estimates.get(label)
        if policy.target_seconds <= 0 or estimate is None or policy.long(estimate):
            bundles.append([name])
            continue
        current.append(name)
        expected += estimate
        if expected >= policy.target_seconds or len(current) >= cap:
            bundles.append(current)
            current, expected = [], 0.0
    if current:
        bundles.append(current)
    return bundles


def plan_static(jobs: Sequence[tuple[str, str | None]], max_size: int) -> list[list[str]]:
    """Static clustering: jobs (name, key) with the same key together, ``max_size`` at most.

    Jobs without a key run alone. Bundles come in the order of their first job.
    """
    groups: dict[str, list[str]] = {}
    bundles: list[list[str]] = []
    for name, key in jobs:
        if key is None:
            bundles.append([name])
            continue
        group = groups.setdefault(key, [])
        if not group:
            bundles.append(group)
        group.append(name)
        if len(group) >= max_size:
            groups[key] = []
    return bundles


# -- a round of submission: which ready jobs go to which pool now, in which bundles ----


def bundle_slots(workers: int, max_blocks: int) -> int:
    """Bundles a pool may hold at once, given its worker slots per pilot and its pilots."""
    return BUNDLES_PER_WORKER * workers * max_blocks


def free_room(slots: Mapping[str, int], in_flight: Mapping[str, int]) -> dict[str, int]:
    """Bundle slots each pool can take now; ``in_flight``: the bundles it holds."""
    return {pool: max(0, n - in_flight.get(pool, 0)) for pool, n in slots.items()}


def fair_share(ready: int, total_slots: int) -> int:
    """Most jobs one bundle may take: the ready jobs' part of one bundle slot (all pools').

    So a few ready jobs spread over all workers instead of queueing behind one.
    """
    return max(1, ready // max(1, total_slots))


def jobs_per_bundle(estimate: float | None, policy: PackingPolicy, share: int) -> int:
    """How many jobs of a label with this expected runtime one bundle holds.

    One when packing is off, the runtime is unknown or the jobs are long; never more
    than ``policy.max_jobs`` or the fair ``share``. A ready job uses ``1/n`` of a
    bundle slot when its label packs ``n`` to a bundle.
    """
    if policy.target_seconds <= 0 or estimate is None or policy.long(estimate):
        return 1
    fit = int(policy.target_seconds / max(estimate, 1e-4))
    return max(1, min(policy.max_jobs, share, fit))


class ReadyJob(NamedTuple):
    """A ready job as the packer sees it."""

    name: str
    label: str
    pool: str  # the pool its next attempt runs in
    key: str | None = None  # its static-clustering key (static clustering only)


@dataclass(frozen=True)
class Submission:
    """One round's decision.

    Attributes
    ----------
    bundles
        Per pool, the bundles to hand it now, in order; each bundle keeps its jobs' order.
    put_back
        The ready jobs that wait for a later round, in their ready order.
    waiting
        Per pool, the ready jobs turned down for lack of room (demand, for scaling).
    """

    bundles: dict[str, list[list[str]]]
    put_back: list[str]
    waiting: dict[str, int]


def plan_submission(
    ready: Sequence[tuple[str, str, str, str | None]],
    *,
    slots: Mapping[str, int],
    in_flight: Mapping[str, int],
    estimates: Mapping[str, float],
    policy: PackingPolicy,
    cluster_max: int | None = None,
    unseen: int = 0,
) -> Submission:
    """Decide which of the ``ready`` jobs go to their pools now.

    ``ready`` holds every ready job, in priority order, as :class:`ReadyJob` fields
    ``(name, label, pool, key)`` (a plain tuple will do: the driver builds thousands).
    Room is counted in bundle slots: a pool may hold ``slots[pool]`` bundles and holds
    ``in_flight[pool]``. Jobs take room in priority order, whatever their label; a job
    of a label packed ``n`` to a bundle (:func:`jobs_per_bundle`; ``cluster_max`` with
    static clustering) takes ``1/n`` of a slot, and one that does not fit is put back.
    The jobs that fit are grouped into bundles (:func:`plan_bundles`, each holding at
    most the :func:`fair_share`, or :func:`plan_static` with ``cluster_max``); bundles
    beyond the pool's free slots are put back too.

    Every ready job is either in exactly one bundle or put back, and no pool is
    handed more bundles than its free slots.

    With a single pool, the caller may pass only a prefix of the ready jobs, at least
    :func:`most_that_fit` of them, and the count of the others as ``unseen``: the plan is
    the same (they could not fit), and they count in the fair share and as waiting.
    """
    room = free_room(slots, in_flight)
    if unseen and len(room) != 1:
        raise ValueError("only a single pool's ready jobs may be passed in part")
    share = fair_share(len(ready) + unseen, sum(slots.values()))
    sizes: dict[str, int] = {}
    used = dict.fromkeys(room, 0.0)
    waiting = dict.fromkeys(room, unseen)
    fitting: dict[str, list[tuple[str, str, str | None]]] = {}
    turned_down: list[str] = []
    for name, label, pool, key in ready:
        size = sizes.get(label)
        if size is None:
            size = sizes[label] = (
                cluster_max
                if cluster_max is not None
                else jobs_per_bundle(estimates.get(label), policy, share)
            )
        if used[pool] + 1 / size <= room[pool] + _ROUNDING:
            used[pool] += 1 / size
            fitting.setdefault(pool, []).append((name, label, key))
        else:
            waiting[pool] += 1
            turned_down.append(name)
    capped = replace(policy, max_jobs=min(policy.max_jobs, share))
    bundles: dict[str, list[list[str]]] = {}
    beyond: set[str] = set()
    for pool, jobs in fitting.items():
        if cluster_max is not None:
            planned = plan_static([(name, key) for name, _, key in jobs], cluster_max)
        else:
            labelled = [(name, label) for name, label, _ in jobs]
            planned = plan_bundles(labelled, estimates, capped, max(1, room[pool]))
        bundles[pool] = planned[: room[pool]]
        beyond.update(name for bundle in planned[room[pool] :] for name in bundle)
    put_back = turned_down  # in ready order already, unless bundles were left over:
    if beyond:
        beyond.update(turned_down)
        put_back = [job[0] for job in ready if job[0] in beyond]
    return Submission(bundles, put_back, waiting)


def most_that_fit(
    slots: Mapping[str, int],
    in_flight: Mapping[str, int],
    policy: PackingPolicy,
    cluster_max: int | None = None,
) -> int:
    """The most ready jobs one round of :func:`plan_submission` can hand out: every free
    bundle slot filled with the largest bundle allowed."""
    largest = cluster_max if cluster_max is not None else policy.max_jobs
    return sum(free_room(slots, in_flight).values()) * max(1, largest)


class RuntimeEstimates:
    """Mean measured runtime per label, updated as results arrive."""

    def __init__(self, seed: Mapping[str, float] | None = None):
        self._total: dict[str, float] = {}
        self._count: dict[str, int] = {}
        for label, seconds in (seed or {}).items():
            self.add(label, seconds)

    def add(self, label: str, seconds: float) -> None:
        self._total[label] = self._total.get(label, 0.0) + max(0.0, seconds)
        self._count[label] = self._count.get(label, 0) + 1

    def as_mapping(self) -> dict[str, float]:
        return {label: self._total[label] / self._count[label] for label in self._total}
