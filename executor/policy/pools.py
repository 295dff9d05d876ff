"""Pools (resource classes) and how jobs are matched to them. Pure; no I/O.

A site declares one or more pools; each becomes one HighThroughputExecutor whose
workers all have the same cores and memory (Parsl's HTEx takes no per-task resource
request, so one executor per job shape). A job goes to the smallest pool that fits
its ``cores`` and ``memory``; on an out-of-memory failure its next attempt may ask
for more memory and move to a larger pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from executor.errors import ConfigError
from executor.model.units import Megabytes, format_memory

POOL_KEYS = ("cores", "memory", "workers", "init_blocks", "min_blocks", "max_blocks")


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """One resource class of a site.

    Parameters
    ----------
    name
        The pool's name; also the Parsl executor label.
    cores
        Cores per worker: the most a job in this pool may ask for.
    memory
        Megabytes per worker: the most a job in this pool may ask for, and the limit
        enforced on jobs that do not say. ``None``: no limit.
    workers
        Worker slots per pilot (block); ``None``: as many as the pilot's cores allow.
    init_blocks, min_blocks, max_blocks
        Pilots at start, at least, and at most.
    """

    name: str
    cores: int = 1
    memory: Megabytes | None = None
    workers: int | None = field(
        default=None, metadata={"expected": "a whole number or auto", "example": "auto"}
    )
    init_blocks: int = 1
    min_blocks: int = 0
    max_blocks: int = 1

    def __post_init__(self) -> None:
        # Imported here: executor.sites imports this module.
        from executor.model.fields import check_fields

        where = f"pool {self.name!r}"
        check_fields(self, where)  # types, and memory sizes to megabytes
        if self.cores < 1:
            raise ConfigError(f"{where}: cores: {self.cores!r} must be a whole number >= 1")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"{where}: workers: {self.workers!r} must be >= 1 or 'auto'")
        if self.max_blocks < 1:
            raise ConfigError(f"{where}: max_blocks: {self.max_blocks!r} must be >= 1")
        if not 0 <= self.min_blocks <= self.max_blocks:
            raise ConfigError(f"{where}: min_blocks must be between 0 and max_blocks")
        if not 0 <= self.init_blocks <= self.max_blocks:
            raise ConfigError(
                f"{where}: init_blocks: {self.init_blocks!r} must be between 0 and max_blocks "
                f"({self.max_blocks})"
            )

    def fits(self, cores: int, memory: int | None) -> bool:
        return cores <= self.cores and (
            memory is None or self.memory is None or memory <= self.memory
        )

    def describe(self) -> str:
        return f"{self.name} ({self.cores} core(s), {format_memory(self.memory)} per worker)"


def pools_from_mapping(data: Any, source: str) -> tuple[PoolConfig, ...]:
    """Read ``pools:`` from a site file: ``{name: {cores: 1, memory: 4GB, ...}}``."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{source}: pools: must map pool names to settings, e.g. "
                          "{small: {cores: 1, memory: 4GB}}")  # fmt: skip
    pools = []
    for name, settings in data.items():
        if settings is not None and not isinstance(settings, Mapping):
            raise ConfigError(
                f"{source}: pool {name!r}: expected a mapping of settings, got {settings!r}; "
                f"write e.g. `pools: {{{name}: {{cores: 1, memory: 4GB}}}}`"
            )
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(POOL_KEYS))
        if unknown:
            raise ConfigError(
                f"{source}: pool {name!r}: unknown key {unknown[0]!r}; valid keys: "
                + ", ".join(POOL_KEYS)
            )
        if settings.get("workers") == "auto":
            settings["workers"] = None
        try:
            pools.append(PoolConfig(name=str(name), **settings))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return tuple(pools)


def _size(pool: PoolConfig) -> tuple[float, int]:
    return (math.inf if pool.memory is None else pool.memory, pool.cores)


def select_pool(pools: Iterable[PoolConfig], cores: int, memory: int | None) -> PoolConfig | None:
    """The smallest pool (by memory, then cores) that fits, or ``None``."""
    fitting = [pool for pool in pools if pool.fits(cores, memory)]
    return min(fitting, key=_size) if fitting else None


def largest_pool(pools: Sequence[PoolConfig]) -> PoolConfig:
    return max(pools, key=_size)


def misfit_message(job: str, cores: int, memory: int | None, pools: Sequence[PoolConfig]) -> str:
    biggest = largest_pool(pools)
    wants = f"{cores} core(s)" + (f" and {format_memory(memory)}" if memory else "")
    return (
        f"job {job!r} asks for {wants}, which fits no pool of this site; the largest is "
        f"{biggest.describe()}. Lower the job's request or add a bigger pool to the site file"
    )


def escalated_memory(
    memory: int | None, multiplier: float, out_of_memory_failures: int, memory_max: int | None
) -> int | None:
    """Memory for the next attempt after ``out_of_memory_failures`` OOM kills (HTCondor-style).

    ``memory × multiplier^n``, capped by ``memory_max``; never less than ``memory``.
    """
    if memory is None:
        return None
    wanted = memory * multiplier**out_of_memory_failures
    if memory_max is not None:
        wanted = min(wanted, max(memory_max, memory))
    return max(memory, int(math.ceil(wanted)))


def assign_pools(jobs: Iterable[Any], pools: Sequence[PoolConfig]) -> dict[str, str]:
    """Map each job (anything with name/cores/memory) to its pool's name.

    Raises
    ------
    GraphError
        Listing every job that fits no pool, with the largest pool and how to fix it.
    """
    from executor.errors import GraphError

    mapping: dict[str, str] = {}
    problems = []
    for job in jobs:
        pool = select_pool(pools, job.cores, job.memory)
        if pool is None:
            problems.append(misfit_message(job.name, job.cores, job.memory, pools))
        else:
            mapping[job.name] = pool.name
    if problems:
        raise GraphError(f"{len(problems)} job(s) fit no pool", problems)
    return mapping
