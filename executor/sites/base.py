"""What every site has, and the control flow every backend shares.

A site file (``~/.config/pilot/sites/<name>.yaml``) names a ``backend``, its options, and its
``pools``. The base class validates everything when the file is loaded (not at the
first scale-up) and builds one Parsl HighThroughputExecutor per pool; a backend
module supplies only its differences: the provider, and the size of its nodes.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from executor.errors import ConfigError
from executor.model.fields import check_fields
from executor.model.units import MemoryText, Unit, parse_duration, parse_memory
from executor.policy.pools import PoolConfig, pools_from_mapping
from executor.sites.lifeline import interchange_command


def _packing_seconds(value: object) -> float:
    """A duration, or 0: no packing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 0 for no packing") from None


def _seconds_or_zero(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    return parse_duration(value)


#: The label of the executor ``start_locally`` adds (not a pool name a site may use).
START_LOCALLY = "start-locally"

#: A duration that may be 0 (``queue_wait``: none assumed; ``idle_timeout``: at once).
SecondsOrZero = Annotated[
    float, Unit(_seconds_or_zero, "a duration (seconds, or text such as 30s, 5m), or 0", "1m")
]

#: ``packing_target``: a duration, where 0 turns packing off.
PackingSeconds = Annotated[
    float,
    Unit(_packing_seconds, "a duration (seconds, or text such as 10s, 5m; 0: no packing)", "10s"),
]


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """Options every backend understands. YAML keys equal field names.

    Each field is checked against its annotation when the site is built (see
    :mod:`executor.model.fields`), so a backend's own fields are checked too; a field
    with an empty default may give an ``example`` in its metadata for messages.

    Parameters
    ----------
    name
        The site's name (the file's stem).
    pools
        Resource classes, each one Parsl executor; empty means the backend's default.
    address
        Where workers connect back to the driver. Loopback by default, so nothing
        listens on the network unless a site asks for it.
    worker_init
        Shell lines run before a pilot starts its workers.
    memory_tolerance
        A job may use this fraction more than its memory request before it is
        killed as ``out_of_memory`` (0.1 = 10%).
    packing_target, packing_max_jobs
        Short jobs are packed into bundles a worker runs back to back, each expected
        to take about ``packing_target`` (a duration: ``10s``, ``1m``; 0: no packing),
        at most ``packing_max_jobs`` jobs.
    monitoring_db
        The group's shared database for runs on this site (when neither ``--db``
        nor ``PILOT_DB`` is given).
    shared_filesystem
        Workers can read the run directory. If not, the workflow's shipped code
        travels with the bundles, to each node once (see :mod:`executor.driver.delivery`).
    max_payload
        The most one task may carry, e.g. ``10MB`` (Globus Compute's limit); larger
        shipped code is sent in chunks. Empty: no limit.
    ship_runtime
        Send pilot's own worker runtime with the bundles too, so workers need only
        Python and Parsl (or the endpoint software), not pilot.
    idle_timeout
        A pilot whose workers all idled this long is released, unless the work the
        graph has coming needs it within the queue wait (``executor.policy.elastic``).
    max_queued
        Pilots of a pool waiting in the batch queue at once, at most (the backlog).
    queue_wait
        The queue wait assumed until a pilot of this run has started (then measured).
    start_locally
        Workers started at once on the submitting host, which run a pool's jobs while
        it has no worker of its own yet (its pilots queue), then stop taking jobs and
        are released once idle. 0 (the default) starts none: a login node is shared,
        so turn it on only where short jobs may run there.
    """

    backend: ClassVar[str] = "base"

    name: str
    pools: tuple[PoolConfig, ...] = ()
    address: str = "127.0.0.1"
    worker_init: str = field(default="", metadata={"example": '"source setup.sh"'})
    memory_tolerance: float = 0.1
    packing_target: PackingSeconds = 10.0
    packing_max_jobs: int = 500
    monitoring_db: str | None = field(
        default=None, metadata={"example": "/sdf/group/rubin/pilot/monitoring.db"}
    )
    shared_filesystem: bool = True
    max_payload: MemoryText | None = field(default=None, metadata={"example": "10MB"})
    ship_runtime: bool = False
    idle_timeout: SecondsOrZero = 300.0
    max_queued: int = 2
    queue_wait: SecondsOrZero = 0.0
    start_locally: int = 0
    source: str | None = field(default=None, compare=False)

    def forecast_horizon(self) -> float:
        """Seconds ahead the scaling policy's forecast of the graph resolves finely."""
        return max(60.0, 2 * self.queue_wait, self.idle_timeout)

    def __post_init__(self) -> None:
        where = self.source or f"site {self.name!r}"
        check_fields(self, where)  # types and units of every field, a backend's too
        if not self.pools:
            object.__setattr__(self, "pools", self.default_pools())
        if self.start_locally < 0:
            raise ConfigError(
                f"{where}: start_locally: {self.start_locally!r} must be a whole number of "
                "workers >= 0 (0: none)"
            )
        if self.max_queued < 1:
            raise ConfigError(
                f"{where}: max_queued: {self.max_queued!r} must be a whole number >= 1"
            )
        names = [pool.name for pool in self.pools]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: pools: pool names must be unique")
        if START_LOCALLY in names:
            raise ConfigError(
                f"{where}: pools: {START_LOCALLY!r} is the name of start_locally's workers; "
                "rename the pool"
            )
        if not 0 <= self.memory_tolerance <= 10:
            raise ConfigError(
                f"{where}: memory_tolerance: {self.memory_tolerance:g} must be between 0 and 10 "
                "(a fraction: 0.1 lets a job use 10% more memory than it asked for)"
            )
        if self.packing_max_jobs < 1:
            raise ConfigError(
                f"{where}: packing_max_jobs: {self.packing_max_jobs!r} must be >= 1; "
                "write e.g. `packing_max_jobs: 500` (turn packing off with `packing_target: 0`)"
            )

    @classmethod
    def from_mapping(cls, name: str, data: dict[str, Any], source: str | None = None) -> SiteConfig:
        """Validate a site file's mapping; unknown keys name the closest valid key."""
        where = source or name
        fields = {f.name for f in dataclasses.fields(cls)} - {"name", "source"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "backend":
                continue
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"valid keys: {', '.join(sorted(fields))}"
                )
                raise ConfigError(f"{where}: unknown key {key!r} for a {cls.backend} site; {hint}")
            values[key] = value
        if "pools" in values:
            values["pools"] = pools_from_mapping(values["pools"], where)
        try:
            return cls(name=name, source=source, **values)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this site (saved with each run for restarts)."""
        data = dataclasses.asdict(self)
        data["backend"] = self.backend
        return data

    @staticmethod
    def of_run(run_dir: Path) -> SiteConfig:
        """The site a run started with (its ``site.json``)."""
        import json

        return SiteConfig.from_dict(json.loads((Path(run_dir) / "site.json").read_text()))

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SiteConfig:
        from executor.sites import backend_class

        data = dict(data)
        data["pools"] = tuple(PoolConfig(**pool) for pool in data.get("pools", ()))
        return backend_class(data.pop("backend"))(**data)

    @property
    def payload_limit(self) -> int | None:
        """``max_payload`` in bytes, or ``None``."""
        if self.max_payload is None:
            return None
        return parse_memory(self.max_payload) * 1_000_000

    # -- what a backend provides ---------------------------------------------------
    def default_pools(self) -> tuple[PoolConfig, ...]:
        """Pools used when the site file declares none."""
        return (PoolConfig(name="default"),)

    def node_cores(self) -> int:
        """Cores of one pilot's node (to size ``workers: auto``)."""
        return os.cpu_count() or 1

    def make_provider(self, pool: PoolConfig) -> Any:
        raise NotImplementedError

    def submit_driver(self, command: list[str], run_dir: Path) -> str:
        """Run a detached driver as a batch job of this site; return the job's id.

        Only batch backends can; the others say what to do instead.
        """
        raise ConfigError(
            f"site {self.name!r} ({self.backend}) cannot hold a driver; use --driver-on with a "
            "batch site such as slurm, or plain --detach to run the driver here"
        )

    def cancel_orphaned_pilots(self, job_ids: list[str]) -> None:
        """Cancel pilots a dead driver left in the queue (by batch job id).

        Local pilots need nothing here: their processes are found and stopped by the
        run directory in their command line. Batch backends cancel through their
        scheduler (``scancel`` for Slurm).
        """

    def executor_options(self, pool: PoolConfig) -> dict[str, Any]:
        """HighThroughputExecutor arguments a backend overrides (heartbeats, drain)."""
        return {}

    def ping(self) -> list[str]:
        """Check the site is usable before submitting; one line per check passed.

        Raises :class:`~executor.errors.SiteError` saying what to fix.
        """
        return [f"{self.backend} site: nothing to check"]

    # -- shared construction -------------------------------------------------------
    def pool(self, name: str) -> PoolConfig:
        return next(pool for pool in self.pools if pool.name == name)

    def workers(self, pool: PoolConfig) -> int:
        return pool.workers or max(1, self.node_cores() // pool.cores)

    def init_blocks_of(self, label: str) -> int:
        """Blocks executor ``label`` starts with (``start_locally``'s: its one block)."""
        if label == START_LOCALLY:
            return 1
        return self.pool(label).init_blocks

    def make_executors(self) -> list[Any]:
        """One Parsl HighThroughputExecutor per pool, labelled with the pool's name, and
        one labelled :data:`START_LOCALLY` on this host when ``start_locally`` asks."""
        from parsl.executors import HighThroughputExecutor

        _put_parsl_commands_on_path()
        return self._start_locally_executor() + [
            HighThroughputExecutor(
                label=pool.name,
                provider=self.make_provider(pool),
                interchange_launch_cmd=interchange_command(),
                address=self.address,
                max_workers_per_node=self.workers(pool),
                encrypted=True,
                **{
                    "cores_per_worker": pool.cores,
                    "heartbeat_period": 5,
                    "heartbeat_threshold": 30,
                    "poll_period": 5,
                    **self.executor_options(pool),
                },
            )
            for pool in self.pools
        ]

    def _start_locally_executor(self) -> list[Any]:
        if not self.start_locally:
            return []
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        return [
            HighThroughputExecutor(
                label=START_LOCALLY,
                # The site's worker_init prepares batch nodes; this host is the driver's.
                provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=1),
                interchange_launch_cmd=interchange_command(),
                address="127.0.0.1",
                max_workers_per_node=self.start_locally,
                encrypted=True,
                cores_per_worker=1,
                heartbeat_period=5,
                heartbeat_threshold=30,
                poll_period=5,
            )
        ]

    def cancel_note(self) -> str | None:
        """What a cancel cannot do on this site, to tell the user; ``None``: nothing.

        A site whose running jobs a cancel cannot stop (Globus Compute) says so here; the
        driver then records its jobs still out as cancelled at once, without waiting for
        them, and shows this note.
        """
        return None

    def attempts_left_running(self, run_dir: Path) -> set[tuple[str, int]]:
        """The ``(job, attempt)`` pairs a dead driver of the run left running on the site
        that a new driver can reattach to (its executors' ``reattach()``); none here:
        what pilots run dies with them."""
        return set()

    def clean_up_run(self, run_id: str) -> list[str]:
        """Remove what run ``run_id`` left on the site after its driver died; say what.

        Called once after a dead driver (``pilot restart``, ``pilot cancel``), whether or
        not it left live pilots: a Kubernetes site deletes every pod and Secret labelled
        with the run. Nothing to do here (pilots are cancelled by job id, above).
        """
        return []


def _put_parsl_commands_on_path() -> None:
    """Parsl starts ``interchange.py`` and ``process_worker_pool.py`` from PATH.

    They are installed beside this interpreter; a user who runs ``/venv/bin/pilot``
    without activating the virtualenv would otherwise get FileNotFoundError.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
