"""Parsl's ``SlurmProvider`` with commands that time out, retry, and say what went wrong.

Imported only when a Slurm site builds its executors (it imports Parsl).
"""

from __future__ import annotations

import logging
from typing import Any

from parsl.providers import SlurmProvider

from executor.errors import SiteError
from executor.sites.commands import run_command

logger = logging.getLogger(__name__)


class PilotSlurmProvider(SlurmProvider):
    """A ``SlurmProvider`` whose ``sbatch``/``squeue``/``scancel`` never hang the driver.

    Parameters
    ----------
    state_table
        Slurm's compact job-state codes (``squeue %t``) to Parsl ``JobState``.
    poll_interval
        Seconds between status queries (Parsl's default is 60).
    attempts
        Tries per command before giving up; timeouts and busy-controller errors are
        retried with exponential backoff.
    **options
        Passed to ``SlurmProvider``.
    """

    def __init__(
        self, *, state_table: dict[str, Any], poll_interval: float, attempts: int, **options: Any
    ):
        self._attempts = attempts
        self._poll_interval = poll_interval
        super().__init__(**options)
        # sacct needs slurmdbd, which many clusters (and the test cluster) do not run;
        # squeue is always there. Parsl's squeue table lacks several state codes.
        # %N (the nodes) is ignored by Parsl's parser and recorded by execute_wait.
        self._cmd = "squeue --noheader --states=all --format='%i %t %N' --job '{0}'"
        self._translate_table = state_table

    def execute_wait(self, cmd: str, timeout: Any = None) -> tuple[int, str, str]:
        """Run a Slurm command with a deadline, retries and backoff.

        A submission that finally fails raises :class:`SiteError` (Parsl records the
        block as failed with this message); a failed query or cancel returns its exit
        status, which Parsl treats as "no news" and logs.
        """
        if cmd.startswith("sacct"):
            # Parsl's probe for accounting at start-up; squeue is used either way.
            return 1, "", "sacct is not used"
        result = run_command(
            cmd, timeout=float(timeout or self.cmd_timeout), attempts=self._attempts
        )
        if result.returncode != 0 and cmd.startswith("sbatch"):
            hint = (
                "the Slurm controller did not answer; it may be busy, try again later"
                if result.transient
                else "check the site file (partition, account, qos) with `pilot ping SITE`"
            )
            raise SiteError(f"{result.describe()}; {hint}", transient=result.transient)
        if cmd.startswith("squeue") and "invalid job id" in result.stderr.lower():
            # Every queried job is gone from the controller's memory: say "none listed", so
            # Parsl marks them ended instead of keeping them running forever.
            return 0, "", result.stderr
        if result.returncode == 0 and cmd.startswith("squeue"):
            self._note_nodes(result.stdout)
        return result.returncode, result.stdout, result.stderr

    def _note_nodes(self, stdout: str) -> None:
        """Keep each running pilot's node list with Parsl's record of the job."""
        for line in stdout.splitlines():
            job_id, _, nodes = (line.split() + ["", ""])[:3]
            if nodes and job_id in self.resources:
                self.resources[job_id]["node"] = nodes

    @property
    def status_polling_interval(self) -> int:
        return max(1, round(self._poll_interval))
