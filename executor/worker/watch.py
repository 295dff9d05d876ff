"""Watching one job's process: walltime, memory of its whole tree, cancel, and its end.

Part of the worker runtime: standard library only (psutil when present).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from .spec import JobSpec

# How long a job may take to exit after SIGTERM before it gets SIGKILL.
KILL_GRACE_SECONDS = 2.0
# The longest pause between checks of walltime and the cancel marker.
MAX_POLL_SECONDS = 0.1
# The longest pause between looks at the cancel marker (a stat in the run directory, a
# metadata operation on a shared filesystem) while a bundle runs.
CANCEL_CHECK_SECONDS = 0.5


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class CancelMarker:
    """Whether the run is cancelled: its marker file exists.

    Looked at the first time it is asked (each bundle's first job), then at most every
    :data:`CANCEL_CHECK_SECONDS`, so a bundle of many short jobs does not stat the
    shared run directory once per job, nor once per poll of a running job.
    """

    def __init__(self, path: str | None):
        self.path = path
        self._seen = False
        self._next = 0.0

    def present(self) -> bool:
        if self._seen or not self.path:
            return self._seen
        now = time.monotonic()
        if now >= self._next:
            self._seen = os.path.exists(self.path)
            self._next = now + CANCEL_CHECK_SECONDS
        return self._seen


class Watch:
    """Waits for a job while enforcing its walltime, memory limit and the run's cancel.

    The job is reaped with ``wait4`` so its CPU time and peak RSS come from the
    kernel; the RSS of its whole process tree is also sampled (psutil, imported only
    when needed), because the kernel's figure is per process, not per tree.
    """

    def __init__(
        self, process: subprocess.Popen, spec: JobSpec, cancel: CancelMarker | None = None
    ):
        self.process = process
        walltime = spec.get("walltime")
        self.deadline = time.monotonic() + walltime if walltime else None
        self.cancel = cancel or CancelMarker(spec.get("cancel_path"))
        memory = spec.get("memory")
        self.limit_mb = memory * (1 + spec.get("memory_tolerance", 0.0)) if memory else None
        self.peak_mb: float | None = None
        self.cpu_seconds: float | None = None
        self.returncode = 0
        self._next_sample = time.monotonic() + 0.002
        # A forked child starts with this worker's resident pages, and the kernel's
        # peak counts them: below this size the kernel figure says nothing of the job.
        self._fork_image_mb = _own_rss_mb()

    def wait(self) -> str | None:
        """Return ``None``, or why the job was stopped: timeout, out_of_memory, cancelled."""
        with ExitNotifier(self.process.pid) as exited:
            return self._watch(exited)

    def _watch(self, exited: ExitNotifier) -> str | None:
        # Checks start often (a job may blow its memory early) and slow down to
        # MAX_POLL_SECONDS; the job's exit itself ends any pause at once.
        pause = 0.001
        while not self._reaped():
            exited.wait(pause)
            pause = min(pause * 2, MAX_POLL_SECONDS)
            now = time.monotonic()
            if self.deadline is not None and now >= self.deadline:
                return self._stop("timeout")
            if self.cancel.present():
                return self._stop("cancelled")
            if now >= self._next_sample:
                # Jobs with a limit are checked at every poll; others now and then for the peak.
                self._next_sample = now + (0.0 if self.limit_mb else 1.0)
                if self._sample() and self.limit_mb and (self.peak_mb or 0) > self.limit_mb:
                    return self._stop("out_of_memory")
        return None

    def _reaped(self) -> bool:
        try:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; nothing more to learn
            self.process.returncode = self.returncode = self.process.returncode or 0
            return True
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode  # so Popen does not wait for it again
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        kernel_peak = usage.ru_maxrss * 1024 / 1_000_000  # ru_maxrss is in KiB on Linux
        if kernel_peak > self._fork_image_mb * 1.05:
            self.peak_mb = max(self.peak_mb or 0.0, kernel_peak)
        return True

    def _sample(self) -> bool:
        total = _tree_rss_bytes(self.process.pid)
        if total is None:
            return False
        if total:  # a job that already exited (a zombie) has no resident pages
            self.peak_mb = max(self.peak_mb or 0.0, total / 1_000_000)
        return True

    def _stop(self, reason: str) -> str:
        """SIGTERM the job's process group, then SIGKILL it after a grace period."""
        kill_group(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while not self._reaped():
            if time.monotonic() >= deadline:
                kill_group(self.process.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)
        return reason


def _tree_rss_bytes(pid: int) -> int | None:
    """Resident bytes of ``pid`` and its descendants; ``None`` if it is gone."""
    try:
        import psutil
    except ImportError:  # a worker with only the shipped runtime: read /proc directly
        return _tree_rss_from_proc(pid)
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for member in tree:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def _tree_rss_from_proc(pid: int) -> int | None:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as handle:
                rss[int(entry)] = int(handle.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        # The field after the state letter is the parent's pid.
        children.setdefault(int(fields[1]), []).append(int(entry))
    if pid not in rss:
        return None
    total, frontier = 0, [pid]
    while frontier:
        member = frontier.pop()
        total += rss.get(member, 0)
        frontier.extend(children.get(member, ()))
    return total


class ExitNotifier:
    """Waits up to a given time for a process to exit.

    With a pidfd (Linux 5.3+) a wait ends the moment the job exits, so a short job
    costs no polling delay; elsewhere it simply sleeps.
    """

    def __init__(self, pid: int):
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def wait(self, seconds: float) -> None:
        if self._pidfd is None:
            time.sleep(seconds)
            return
        import select

        select.select([self._pidfd], [], [], seconds)

    def __enter__(self) -> ExitNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)


def _own_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1_000_000
