"""Parsl's ``SlurmProvider`` with commands that time out, retry, and say what went wrong.

Imported only when a Slurm site builds its executors (it imports Parsl).
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
import time
from dataclasses import replace
from typing import Any

from parsl.providers import SlurmProvider

from executor.errors import SiteError
from executor.sites.commands import (
    cancel_jobs,
    find_tagged_jobs,
    run_command,
    submit_batch_job,
)

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

    # Seconds to look for a pilot in squeue after sbatch did not answer, before
    # submitting it again; and how long such a submission is watched for a late duplicate.
    SETTLE_SECONDS = 5.0
    STRAY_WATCH_SECONDS = 600.0

    def __init__(
        self, *, state_table: dict[str, Any], poll_interval: float, attempts: int, **options: Any
    ):
        self._attempts = attempts
        self._poll_interval = poll_interval
        # tag -> (job name, the job kept or None, watched until): submissions after which
        # a late-accepted duplicate may still appear in the queue.
        self._unsure: dict[str, tuple[str | None, str | None, float]] = {}
        self._unsure_lock = threading.Lock()
        super().__init__(**options)
        # sacct needs slurmdbd, which many clusters (and the test cluster) do not run;
        # squeue is always there. Parsl's squeue table lacks several state codes.
        # %N (the nodes) is ignored by Parsl's parser and recorded by execute_wait.
        self._cmd = "squeue --noheader --states=all --format='%i %t %N' --job '{0}'"
        self._translate_table = state_table

    def execute_wait(self, cmd: str, timeout: Any = None) -> tuple[int, str, str]:
        """Run a Slurm command with a deadline, retries and backoff.

        A submission is never blindly repeated (see :meth:`_submit`); one that finally
        fails raises :class:`SiteError` (Parsl records the block as failed with this
        message). A failed query or cancel returns its exit status, which Parsl treats
        as "no news" and logs.
        """
        if cmd.startswith("sacct"):
            # Parsl's probe for accounting at start-up; squeue is used either way.
            return 1, "", "sacct is not used"
        if self._unsure:
            self._cancel_strays()
        if cmd.startswith("sbatch "):
            return self._submit(cmd[len("sbatch ") :], float(timeout or self.cmd_timeout))
        result = run_command(
            cmd, timeout=float(timeout or self.cmd_timeout), attempts=self._attempts
        )
        if cmd.startswith("squeue") and "invalid job id" in result.stderr.lower():
            # Every queried job is gone from the controller's memory: say "none listed", so
            # Parsl marks them ended instead of keeping them running forever.
            return 0, "", result.stderr
        if result.returncode == 0 and cmd.startswith("squeue"):
            self._note_nodes(result.stdout)
        return result.returncode, result.stdout, result.stderr

    def _submit(self, arguments: str, timeout: float) -> tuple[int, str, str]:
        """Submit one pilot; a job that ``sbatch`` did not report is adopted, not doubled.

        The submission is tagged ``--comment=pilot:<token>`` and looked up in ``squeue``
        by that tag and the block's job name after a timeout (see
        :func:`~executor.sites.commands.submit_batch_job`). The answer has the form
        Parsl parses: ``Submitted batch job <id>``.
        """
        name = _job_name(arguments)
        submission = submit_batch_job(
            arguments, name=name, timeout=timeout, attempts=self._attempts,
            settle=self.SETTLE_SECONDS,
        )  # fmt: skip
        if submission.uncertain:
            with self._unsure_lock:
                self._unsure[submission.tag] = (
                    name, submission.job_id, time.monotonic() + self.STRAY_WATCH_SECONDS
                )  # fmt: skip
        result = submission.result
        if submission.job_id is None:
            if result.returncode == 0:
                result = replace(result, returncode=1)
            hint = (
                "the Slurm controller did not answer; it may be busy, try again later"
                if result.transient
                else "check the site file (partition, account, qos) with `pilot ping SITE`"
            )
            raise SiteError(f"{result.describe()}; {hint}", transient=result.transient)
        return 0, f"Submitted batch job {submission.job_id}", result.stderr

    def _cancel_strays(self) -> None:
        """Cancel jobs that an unsure submission created late, besides the one Parsl knows.

        Runs before each later Slurm command, for a while after such a submission; a
        failed query is tried again next time.
        """
        now = time.monotonic()
        with self._unsure_lock:
            watched = list(self._unsure.items())
            for tag, (_, _, until) in watched:
                if now > until:
                    del self._unsure[tag]
        for tag, (name, keep, until) in watched:
            if now > until:
                continue
            found = find_tagged_jobs(tag, name=name, timeout=float(self.cmd_timeout))
            strays = [job for job in found or [] if job != keep]
            if strays:
                logger.warning(
                    "cancelling job(s) %s: late duplicate(s) of the submission tagged %s%s",
                    ", ".join(strays), tag, f" (pilot {keep})" if keep else "",
                )  # fmt: skip
                cancel_jobs(strays, timeout=float(self.cmd_timeout), attempts=self._attempts)

    def _note_nodes(self, stdout: str) -> None:
        """Keep each running pilot's node list with Parsl's record of the job."""
        for line in stdout.splitlines():
            job_id, _, nodes = (line.split() + ["", ""])[:3]
            if nodes and job_id in self.resources:
                self.resources[job_id]["node"] = nodes

    @property
    def status_polling_interval(self) -> int:
        return max(1, round(self._poll_interval))


def _job_name(arguments: str) -> str | None:
    """The ``--job-name`` that Parsl's submit script (the last argument) sets, if readable."""
    try:
        script = shlex.split(arguments)[-1]
        with open(script) as text:
            found = re.search(r"^#SBATCH\s+--job-name=(\S+)", text.read(), re.MULTILINE)
    except (OSError, ValueError, IndexError):
        return None
    return found.group(1) if found else None
