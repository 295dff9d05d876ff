"""Adaptive packing: ready jobs of one pool grouped into bundles a worker runs back to back.

Pure policy. Most jobs in this field are short, and per-task overhead (a Parsl task,
a result message, a worker round trip) then dominates; a bundle pays it once for
many jobs. A bundle is filled until its jobs' expected runtimes reach the target
(a site knob, e.g. 10 s). Expected runtimes come from what was measured for each
label (in this run, and earlier runs of the same workflow). A job whose label has
no measurement yet, or whose runtime is long, runs alone: unknown labels start
with bundles of one that grow as soon as timings arrive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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
