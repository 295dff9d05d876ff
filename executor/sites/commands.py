"""Batch-system commands (``sbatch``, ``squeue``, ``scancel``) that cannot hang or crash the driver.

A busy controller answers slowly or not at all ("Socket timed out on send/recv",
"Unable to contact slurm controller"). Parsl's own ``execute_wait`` waits without
killing a command that overran, and raises, which kills the status-polling thread.
Here every command runs in its own process group with a deadline; a command that
times out is killed with its children, and a timeout or a transient error is retried
with exponential backoff before the last answer is returned.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# What Slurm clients print when the controller is busy or restarting, not when the
# request is wrong. See https://slurm.schedmd.com/troubleshoot.html
TRANSIENT_ERRORS = re.compile(
    r"socket timed out|unable to contact slurm controller|resource temporarily unavailable|"
    r"connection refused|connection timed out|slurm_load_jobs error: (?:socket|unable)|"
    r"sending .* failed|try again|temporarily unavailable|controller is busy",
    re.IGNORECASE,
)
# The exit status reported for a command that ran out of time (as timeout(1) does).
TIMED_OUT = 124


@dataclass(frozen=True)
class CommandResult:
    """How one command ended, after all its attempts."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    attempts: int
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode == TIMED_OUT and self.stderr.startswith("timed out")

    @property
    def transient(self) -> bool:
        """Whether the failure looks like a busy controller rather than a wrong request."""
        return self.timed_out or bool(TRANSIENT_ERRORS.search(self.stderr))

    def describe(self) -> str:
        text = (self.stderr or self.stdout).strip().splitlines()
        detail = text[-1] if text else f"exit code {self.returncode}"
        return f"`{self.command}` failed after {self.attempts} attempt(s): {detail}"


def run_once(command: str, timeout: float) -> tuple[int, str, str]:
    """Run ``command`` in a shell; kill its whole process group if it outlives ``timeout``."""
    process = subprocess.Popen(
        command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, start_new_session=True, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = process.communicate()
        return TIMED_OUT, stdout, f"timed out after {timeout:g}s\n{stderr}"
    return process.returncode, stdout, stderr


def run_command(
    command: str,
    *,
    timeout: float = 30.0,
    attempts: int = 4,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
) -> CommandResult:
    """Run ``command``, retrying timeouts and transient errors with exponential backoff.

    Parameters
    ----------
    command
        A shell command line.
    timeout
        Seconds one attempt may take before it is killed.
    attempts
        Tries in all; a wrong request (not transient) is never retried.
    backoff, max_backoff
        The first pause between tries, doubled each time up to ``max_backoff``.

    Returns
    -------
    CommandResult
        The last attempt's outcome; check ``returncode``. Never raises for a failed
        command, so a polling thread survives a busy controller.
    """
    started = time.monotonic()
    pause = backoff
    for attempt in range(1, attempts + 1):
        code, stdout, stderr = run_once(command, timeout)
        result = CommandResult(command, code, stdout, stderr, attempt, time.monotonic() - started)
        if code == 0 or not result.transient or attempt == attempts:
            if code != 0:
                logger.warning("%s", result.describe())
            return result
        logger.warning("`%s` failed (%s); retrying in %.1fs", command, stderr.strip()[:200], pause)
        time.sleep(pause)
        pause = min(pause * 2, max_backoff)
    raise AssertionError("unreachable")
