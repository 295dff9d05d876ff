"""Batch-system commands (``sbatch``, ``squeue``, ``scancel``) that cannot hang or crash the driver.

A busy controller answers slowly or not at all ("Socket timed out on send/recv",
"Unable to contact slurm controller"). Parsl's own ``execute_wait`` waits without
killing a command that overran, and raises, which kills the status-polling thread.
Here every command runs in its own process group with a deadline; a command that
times out is killed with its children, and a timeout or a transient error is retried
with exponential backoff before the last answer is returned.

A submission is the exception: ``sbatch`` that timed out may have been accepted by a
controller that answered too late, and a blind retry would leave a second job that
nobody knows about. :func:`submit_batch_job` tags each submission (``--comment``)
and, after a timeout or a transient error, looks for the tag in ``squeue`` before it
submits again.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import time
import uuid
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
# Starts the ``--comment`` of every job pilot submits; the rest is unique per submission.
TAG_PREFIX = "pilot:"
# A request that never reached the controller, so no job can have come of it. Anything
# else transient (a timeout, "Socket timed out on send/recv") may have been accepted.
NEVER_SENT = re.compile(r"connect failure|connection refused", re.IGNORECASE)


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

    @property
    def maybe_done(self) -> bool:
        """Whether a transient failure may still have done what was asked (a job submitted)."""
        return self.timed_out or (self.transient and not NEVER_SENT.search(self.stderr))

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


@dataclass(frozen=True)
class Submission:
    """How one ``sbatch`` submission ended, after all its attempts.

    ``job_id`` is ``None`` when no job is known to exist; ``result`` is the last
    ``sbatch`` attempt (with the attempts counted over all of them). ``adopted`` means
    ``sbatch`` never answered but the job was found in ``squeue`` by its ``tag``;
    ``uncertain`` means some attempt may have created a job that was not found (yet),
    so a job carrying ``tag`` other than ``job_id`` may still appear and is a stray.
    """

    job_id: str | None
    tag: str
    result: CommandResult
    adopted: bool = False
    uncertain: bool = False


def find_tagged_jobs(
    tag: str, *, name: str | None = None, timeout: float = 30.0, attempts: int = 1
) -> list[str] | None:
    """Ids of this user's jobs whose comment is ``tag`` (oldest first), ``None`` if unknown.

    ``name`` (the job name) narrows the query; ``--states=all`` also lists a job that
    already ended, which was submitted all the same.
    """
    command = "squeue --noheader --me --states=all --format='%i %k'"
    if name:
        command += f" --name={shlex.quote(name)}"
    result = run_command(command, timeout=timeout, attempts=attempts)
    if result.returncode != 0:
        return None
    found = [
        fields[0]
        for fields in (line.split(None, 1) for line in result.stdout.splitlines())
        if len(fields) == 2 and fields[1].strip() == tag
    ]
    return sorted(set(found), key=_job_number)


def cancel_jobs(job_ids: list[str], *, timeout: float = 30.0, attempts: int = 4) -> bool:
    """``scancel`` these jobs (idempotent, so retried); whether ``scancel`` succeeded."""
    if not job_ids:
        return True
    command = "scancel " + " ".join(shlex.quote(job) for job in job_ids)
    return run_command(command, timeout=timeout, attempts=attempts).returncode == 0


def submit_batch_job(
    arguments: str,
    *,
    name: str | None = None,
    timeout: float = 30.0,
    attempts: int = 4,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
    settle: float = 5.0,
) -> Submission:
    """``sbatch arguments`` exactly once, even when ``sbatch`` times out.

    Every attempt carries the same ``--comment=pilot:<token>``. After an attempt that
    timed out or failed transiently (the controller may have accepted the job and
    answered late), ``squeue`` is asked for the tag for up to ``settle`` seconds: a job
    found is adopted as if ``sbatch`` had answered, and any further ones are cancelled;
    only when none appears is the job submitted again. A controller that could not be
    reached at all (``connect failure``) is simply tried again; a refused request (not
    transient) is never retried.

    Parameters
    ----------
    arguments
        What follows ``sbatch`` on its command line (options and the script), quoted.
    name
        The job's name (``--job-name``), which narrows the ``squeue`` look-up.
    timeout, attempts, backoff, max_backoff
        As for :func:`run_command`, counted over submissions.
    settle
        Seconds to keep looking for a job that ``sbatch`` did not report.

    Returns
    -------
    Submission
        Never raises for a failed command.
    """
    tag = f"{TAG_PREFIX}{uuid.uuid4().hex[:16]}"
    command = f"sbatch --parsable --comment={tag} {arguments}"
    started = time.monotonic()
    pause = backoff
    uncertain = False
    for attempt in range(1, attempts + 1):
        code, stdout, stderr = run_once(command, timeout)
        result = CommandResult(command, code, stdout, stderr, attempt, time.monotonic() - started)
        if code == 0:
            # --parsable prints "<id>" or "<id>;<cluster>".
            job_id = stdout.strip().splitlines()[-1].split(";")[0] if stdout.strip() else None
            if uncertain and job_id:
                # An earlier attempt may have landed after all: keep the one that answered.
                _keep_one(tag, name, job_id, timeout)
            return Submission(job_id, tag, result, uncertain=uncertain)
        if not result.transient:
            logger.warning("%s", result.describe())
            break
        uncertain = uncertain or result.maybe_done
        found = _settle(tag, name, timeout, settle) if uncertain else []
        if found:
            job_id = _keep_one(tag, name, found[0], timeout, found)
            logger.warning(
                "`sbatch` did not answer (%s) but its job %s is in the queue (tag %s); "
                "using it instead of submitting again",
                stderr.strip().splitlines()[0] if stderr.strip() else f"exit code {code}",
                job_id, tag,
            )  # fmt: skip
            return Submission(job_id, tag, result, adopted=True, uncertain=True)
        if attempt == attempts:
            logger.warning("%s", result.describe())
            break
        logger.warning(
            "`%s` failed (%s) and %s; submitting again in %.1fs", command, stderr.strip()[:200],
            "no job carries its tag" if uncertain else "the controller was not reached", pause,
        )  # fmt: skip
        time.sleep(pause)
        pause = min(pause * 2, max_backoff)
    return Submission(None, tag, result, uncertain=uncertain)


def _settle(tag: str, name: str | None, timeout: float, settle: float) -> list[str]:
    """Look for jobs carrying ``tag`` until one shows or ``settle`` seconds have passed."""
    deadline = time.monotonic() + settle
    while True:
        found = find_tagged_jobs(tag, name=name, timeout=timeout)
        if found or time.monotonic() >= deadline:
            return found or []
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _keep_one(
    tag: str, name: str | None, keep: str, timeout: float, found: list[str] | None = None
) -> str:
    """Cancel every job carrying ``tag`` except ``keep``; return ``keep``."""
    if found is None:
        found = find_tagged_jobs(tag, name=name, timeout=timeout) or []
    extra = [job for job in found if job != keep]
    if extra:
        logger.warning("cancelling duplicate submission(s) %s of job %s", ", ".join(extra), keep)
        cancel_jobs(extra, timeout=timeout)
    return keep


def _job_number(job_id: str) -> int:
    digits = re.match(r"\d+", job_id)
    return int(digits.group()) if digits else 0
