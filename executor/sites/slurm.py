"""The ``slurm`` backend: each pilot is one ``sbatch`` job (a Parsl HTEx block).

Only Slurm's differences live here: the option model, the provider, the size of a
node, Slurm's job-state codes, and ``pilot ping``. Control flow is in
:mod:`executor.sites.base`.
"""

from __future__ import annotations

import math
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from executor.errors import ConfigError, SiteError
from executor.model.units import DurationText, Megabytes, Seconds, WholeSeconds, parse_duration
from executor.policy.pools import PoolConfig
from executor.sites.base import SecondsOrZero, SiteConfig
from executor.sites.commands import run_command, submit_batch_job

# squeue's compact job-state codes -> Parsl JobState names. A pilot that reaches its
# walltime is TIMEOUT, not FAILED: that is how pilots normally end.
# https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
STATE_TABLE = {
    "PD": "PENDING", "CF": "PENDING", "RQ": "PENDING", "RF": "PENDING", "RH": "PENDING",
    "R": "RUNNING", "CG": "RUNNING", "SO": "RUNNING", "SI": "RUNNING", "RS": "RUNNING",
    "ST": "HELD", "S": "HELD", "RD": "HELD",
    "CD": "COMPLETED",
    "CA": "CANCELLED", "RV": "CANCELLED",
    "TO": "TIMEOUT", "DL": "TIMEOUT", "PR": "TIMEOUT",
    "F": "FAILED", "NF": "FAILED", "BF": "FAILED", "OOM": "FAILED", "SE": "FAILED",
}  # fmt: skip


def slurm_time(seconds: float) -> str:
    """Seconds as Slurm's ``HH:MM:SS``, rounded up to whole minutes (``sbatch --time``'s unit)."""
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


@dataclass(frozen=True, kw_only=True)
class SlurmSite(SiteConfig):
    """Pilots are Slurm batch jobs submitted with ``sbatch`` (Parsl's ``SlurmProvider``).

    Parameters
    ----------
    partition, account, qos, constraint
        ``#SBATCH`` options; unset ones are left to the cluster's defaults.
    exclusive
        Ask for whole nodes (``--exclusive``). ``false`` really adds nothing.
    nodes_per_block
        Nodes per pilot; workers start on each through ``srun`` when more than one.
    cores_per_node
        Cores a pilot asks for on each node; sizes ``workers: auto``. Default: what
        the pools' workers need.
    memory_per_node
        Memory a pilot asks for on each node (``--mem``). Default: the pool's memory
        per worker times its workers.
    walltime
        A pilot's time limit (``2:00:00``, ``90m``, ``1-00:00:00``), rounded up to minutes.
    drain
        How long before its walltime a pilot stops taking new jobs, so that few jobs
        die with it (at most half the walltime).
    scheduler_options
        Extra ``#SBATCH`` lines, verbatim.
    poll_interval
        Seconds between ``squeue`` queries for the pilots' states.
    cmd_timeout, cmd_attempts
        Seconds each Slurm command may take, and tries (with backoff) before giving up.
    heartbeat_threshold
        Seconds without a heartbeat after which a pilot is lost and its jobs retried.
    driver_walltime
        Time limit of the batch job that holds the driver (``--driver-on``): one core
        for as long as the run may take.
    """

    backend: ClassVar[str] = "slurm"

    # Types are checked at load (executor.model.fields); examples show in its messages.
    partition: str | None = field(default=None, metadata={"example": "milano"})
    account: str | None = field(default=None, metadata={"example": "rubin:developers"})
    qos: str | None = field(default=None, metadata={"example": "normal"})
    constraint: str | None = field(default=None, metadata={"example": "cpu"})
    exclusive: bool = False
    nodes_per_block: int = 1
    cores_per_node: int | None = field(default=None, metadata={"example": "32"})
    memory_per_node: Megabytes | None = None
    walltime: DurationText = "01:00:00"
    drain: DurationText = "5m"
    scheduler_options: str = field(default="", metadata={"example": '"#SBATCH --mail-type=NONE"'})
    poll_interval: Seconds = 15.0
    cmd_timeout: Seconds = 30.0
    cmd_attempts: int = 4
    heartbeat_threshold: WholeSeconds = 60
    driver_walltime: DurationText = "7-00:00:00"
    # Until the first pilot starts: a batch queue rarely starts a job at once.
    queue_wait: SecondsOrZero = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()  # checks the types and units of these fields too
        where = self.source or f"site {self.name!r}"
        for key in ("nodes_per_block", "cmd_attempts", "cores_per_node"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{where}: {key}: {value!r} must be a whole number >= 1")

    # -- what the base asks of a backend ---------------------------------------------
    def default_pools(self) -> tuple[PoolConfig, ...]:
        return (PoolConfig(name="default", cores=1, memory=2000, max_blocks=4),)

    def node_cores(self) -> int:
        return self.cores_per_node or 1

    def executor_options(self, pool: PoolConfig) -> dict[str, Any]:
        from executor.sites.block_errors import BlockErrorHandler

        seconds = parse_duration(self.walltime)
        margin = min(parse_duration(self.drain), seconds / 2)
        return {
            # Pilots that reach their walltime are normal here, not a broken site.
            "block_error_handler": BlockErrorHandler(),
            "heartbeat_threshold": self.heartbeat_threshold,
            # Counted from the worker pool's start, which is the job's start within a second.
            "drain_period": max(1, int(seconds - margin)),
        }

    def make_provider(self, pool: PoolConfig) -> Any:
        from parsl.jobs.states import JobState
        from parsl.launchers import SingleNodeLauncher, SrunLauncher

        from executor.sites.slurm_provider import PilotSlurmProvider

        workers = self.workers(pool)
        memory = self.memory_per_node or (pool.memory * workers if pool.memory else None)
        options = self.scheduler_options.rstrip("\n")
        if memory:
            # Parsl's mem_per_node is whole gigabytes; pools are sized in megabytes.
            options += f"\n#SBATCH --mem={memory}M"
        return PilotSlurmProvider(
            state_table={code: JobState[name] for code, name in STATE_TABLE.items()},
            poll_interval=float(self.poll_interval),
            attempts=self.cmd_attempts,
            partition=self.partition,
            account=self.account,
            qos=self.qos,
            constraint=self.constraint,
            exclusive=self.exclusive,
            nodes_per_block=self.nodes_per_block,
            cores_per_node=self.cores_per_node or workers * pool.cores,
            walltime=slurm_time(parse_duration(self.walltime)),
            scheduler_options=options.strip("\n"),
            worker_init=self.worker_init,
            cmd_timeout=max(1, int(self.cmd_timeout)),
            # The driver starts blocks itself; Parsl's strategy never scales.
            init_blocks=0,
            min_blocks=0,
            max_blocks=pool.max_blocks,
            launcher=SrunLauncher() if self.nodes_per_block > 1 else SingleNodeLauncher(),
        )

    def cancel_orphaned_pilots(self, job_ids: list[str]) -> None:
        """``scancel`` pilots (or a driver job) that a dead driver left in the queue."""
        result = run_command(
            "scancel " + " ".join(shlex.quote(str(job)) for job in job_ids),
            timeout=self.cmd_timeout, attempts=self.cmd_attempts,
        )  # fmt: skip
        if result.returncode != 0:
            raise SiteError(
                f"site {self.name!r}: scancel {' '.join(job_ids)} failed: {result.describe()}",
                transient=result.transient,
            )

    def submit_driver(self, command: list[str], run_dir: Path) -> str:
        """Submit ``command`` (a detached driver) as a one-core batch job; return its job id.

        Its output goes to the run's ``driver.log``; ``worker_init`` prepares its
        environment, as it does for pilots.
        """
        directives = [
            f"--job-name=pilot-driver-{run_dir.name}", "--nodes=1", "--ntasks=1",
            "--cpus-per-task=1", f"--time={slurm_time(parse_duration(self.driver_walltime))}",
            f"--output={run_dir / 'driver.log'}", "--open-mode=append",
        ]  # fmt: skip
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                directives.append(f"--{key}={getattr(self, key)}")
        script = run_dir / "driver.sbatch"
        script.write_text(
            "#!/bin/bash\n"
            + "".join(f"#SBATCH {directive}\n" for directive in directives)
            + f"{self.worker_init}\nexec {shlex.join(command)}\n"
        )
        # Never two drivers for one run: a timed-out sbatch is looked up before a retry.
        submission = submit_batch_job(
            shlex.quote(str(script)), name=f"pilot-driver-{run_dir.name}",
            timeout=self.cmd_timeout, attempts=self.cmd_attempts,
        )  # fmt: skip
        if submission.job_id is None:
            raise SiteError(
                f"site {self.name!r}: could not submit the driver job: "
                f"{submission.result.describe()}",
                transient=submission.result.transient,
            )
        return submission.job_id

    # -- pilot ping ------------------------------------------------------------------
    def ping(self) -> list[str]:
        """Check that pilots can be submitted, without submitting one.

        Returns what was checked, one line each; raises :class:`SiteError` with the
        fix when a check fails.
        """
        done = []
        for command in ("sbatch", "squeue"):
            result = run_command(
                f"{command} --version", timeout=self.cmd_timeout, attempts=self.cmd_attempts
            )
            if result.returncode != 0:
                raise SiteError(
                    f"site {self.name!r}: `{command}` does not answer: {result.describe()}; "
                    "run pilot on a machine that can submit Slurm jobs (a login node)",
                    transient=result.transient,
                )
            done.append(f"{command}: {result.stdout.strip()}")
        queue = run_command(
            "squeue --noheader --me --format=%i", timeout=self.cmd_timeout,
            attempts=self.cmd_attempts,
        )  # fmt: skip
        if queue.returncode != 0:
            raise SiteError(
                f"site {self.name!r}: the Slurm controller does not answer: {queue.describe()}",
                transient=queue.transient,
            )
        done.append("controller: answers")
        if self.partition:
            done.append(self._check_partition())
        done.append(self._test_submit())
        return done

    def _check_partition(self) -> str:
        result = run_command(
            f"sinfo --noheader --format=%R --partition={shlex.quote(str(self.partition))}",
            timeout=self.cmd_timeout, attempts=self.cmd_attempts,
        )  # fmt: skip
        names = set(result.stdout.split())
        if result.returncode == 0 and str(self.partition) in names:
            return f"partition {self.partition!r}: exists"
        listed = run_command("sinfo --noheader --format=%R", timeout=self.cmd_timeout)
        known = ", ".join(sorted(set(listed.stdout.split()))) or "none visible"
        raise SiteError(
            f"site {self.name!r}: partition {self.partition!r} does not exist on this cluster "
            f"(partitions: {known}); fix `partition:` in {self.source or 'the site file'}"
        )

    def _test_submit(self) -> str:
        """``sbatch --test-only`` with this site's options: accepted account, qos, limits."""
        pool = self.pools[0]
        provider_options = [
            f"--{key}={shlex.quote(str(value))}"
            for key, value in (
                ("partition", self.partition), ("account", self.account),
                ("qos", self.qos), ("constraint", self.constraint),
            )
            if value
        ]  # fmt: skip
        provider_options += [
            f"--nodes={self.nodes_per_block}",
            f"--time={slurm_time(parse_duration(self.walltime))}",
            f"--cpus-per-task={self.cores_per_node or self.workers(pool) * pool.cores}",
        ]
        if self.exclusive:
            provider_options.append("--exclusive")
        with tempfile.TemporaryDirectory() as scratch:
            script = Path(scratch) / "ping.sh"
            script.write_text("#!/bin/bash\n" + self.scheduler_options + "\ntrue\n")
            result = run_command(
                f"sbatch --test-only {' '.join(provider_options)} {script}",
                timeout=self.cmd_timeout, attempts=self.cmd_attempts,
            )  # fmt: skip
        if result.returncode != 0:
            raise SiteError(
                f"site {self.name!r}: Slurm refuses this site's pilot request "
                f"({' '.join(provider_options)}): {result.describe()}; fix the site file "
                f"{self.source or ''} (partition, account, qos, walltime)".rstrip(),
                transient=result.transient,
            )
        return "test submission (sbatch --test-only): accepted"
