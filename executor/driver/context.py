"""Where a run lives, and what a worker is told about each job attempt.

A job spec (:class:`executor.worker.spec.JobSpec`) is a plain dict: it crosses to the
worker (which imports nothing of the driver's side) and back, so it holds only JSON-able
values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from executor.model.graph import Job
from executor.shipping.tarball import Shipment
from executor.worker.spec import JobSpec


@dataclass(frozen=True)
class RunContext:
    """Where a run lives: what the driver needs besides the graph and the site."""

    run_id: str
    run_dir: Path
    workdir: Path
    environment_file: Path
    shipment: Shipment | None = None  # the user's code, shipped to the workers

    @property
    def cancel_marker(self) -> Path:
        return self.run_dir / "cancel"

    def log_paths(self, job: str, attempt: int) -> tuple[str, str]:
        base = self.run_dir / "logs" / job / f"attempt-{attempt}"
        return f"{base}.out", f"{base}.err"


def job_spec(
    job: Job,
    context: RunContext,
    attempt: int,
    memory: int | None,
    memory_tolerance: float,
    *,
    shared_filesystem: bool = True,
) -> JobSpec:
    """What :func:`executor.worker.bundle.run_job` needs to run one attempt of ``job``.

    On a shared filesystem the worker also appends the attempt's outcome to the run
    directory as soon as it ends (:mod:`executor.worker.outcome_log`).
    """
    stdout, stderr = context.log_paths(job.name, attempt)
    return {
        "run_id": context.run_id,
        "run_dir": str(context.run_dir),
        "job": job.name,
        "attempt": attempt,
        "kind": job.kind,
        "command": list(job.command) if isinstance(job.command, tuple) else job.command,
        "function": job.function,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
        "environment": dict(job.environment),
        "environment_file": str(context.environment_file),
        "workdir": str(context.workdir),
        "walltime": job.walltime,
        "stdout": stdout,
        "stderr": stderr,
        "cancel_path": str(context.cancel_marker),
        "memory": memory,
        "memory_tolerance": memory_tolerance,
        # No memory limit asked: a function can run inside the worker, without a fork.
        "in_process": job.kind == "function" and job.memory is None,
        "outcome_log": str(context.run_dir) if shared_filesystem else None,
    }
