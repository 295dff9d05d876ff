"""Each job's outcome, made durable the moment the job ends.

A bundle reports to the driver only when all its jobs are done. So that a finished
job is never lost (a driver killed mid-bundle, a worker that dies on a later job,
a bundle-level error), the worker also appends one JSON line per finished attempt to
a file of its own in the run directory, ``outcomes/<host>-<pid>.jsonl``. The driver
reads these files as it goes (a job shows as finished while its bundle still runs),
and ``pilot restart`` and ``pilot cancel`` read them before deciding anything.

The worker also appends a start record as each attempt starts
(:class:`~executor.worker.outcome.StartRecord`, ``"event": "started"``), so the driver
shows a job as running only once it runs: until then it is queued in its pilot.
Readers that want outcomes only skip them (:func:`~executor.worker.outcome.is_start`).

One writer per file (a worker process) and whole lines written by one ``write``
call on an ``O_APPEND`` descriptor: a reader sees complete lines, or a last line
without its newline, which it leaves for later. The file is opened once per worker
process and run, so a job costs one ``write``, no metadata operation on the shared
filesystem. Nothing is synced: a record survives the driver's death and the
worker's (the kernel holds it), not the node's.

This module is part of the worker runtime: standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import BinaryIO, cast

from .outcome import LoggedOutcome, LogRecord, is_start

DIRECTORY = "outcomes"
SUFFIX = ".jsonl"

# run directory -> open descriptor of this process's file there
_OPEN: dict[str, int] = {}


def append(run_dir: str, record: LogRecord) -> bool:
    """Append ``record`` (an outcome or a start, with its ``job`` and ``attempt``) to this
    process's file.

    Returns ``False`` when the run directory cannot be written (no shared
    filesystem): the outcome then travels only with the bundle's result. Never raises
    for I/O: recording must not change the job's outcome.
    """
    line = (json.dumps(record, default=repr, separators=(",", ":")) + "\n").encode()
    try:
        fd = _OPEN.get(run_dir)
        if fd is None:
            directory = os.path.join(run_dir, DIRECTORY)
            os.makedirs(directory, mode=0o750, exist_ok=True)
            name = f"{socket.gethostname()}-{os.getpid()}{SUFFIX}"
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            fd = _OPEN[run_dir] = os.open(os.path.join(directory, name), flags, 0o640)
        os.write(fd, line)
    except OSError:
        return False
    return True


class OutcomeReader:
    """Reads the records appended since the last call, file by file.

    The driver calls this at every turn of its loop, so a call that finds nothing new
    costs one ``stat`` of the directory (a metadata operation on a shared filesystem),
    not a listing plus a ``stat`` and an ``open`` per worker file: the files found stay
    open and are read on from where the last read stopped, and the directory is listed
    again only when its mtime changed (a new worker's file), while that change is
    recent, and every :data:`RESCAN_SECONDS` anyway.

    Parameters
    ----------
    run_dir
        The run directory whose ``outcomes/`` files to follow.
    """

    RESCAN_SECONDS = 5.0
    MAX_OPEN = 256  # beyond that many worker files, the rest are opened at each read

    def __init__(self, run_dir: str | os.PathLike):
        self.directory = os.path.join(os.fspath(run_dir), DIRECTORY)
        self._offsets: dict[str, int] = {}
        self._open: dict[str, BinaryIO] = {}
        self._names: list[str] = []
        self._listed: tuple[int, float] | None = None  # (directory mtime, list again at)

    def read_new(self) -> list[LogRecord]:
        """Every complete record written since the previous call, starts and outcomes."""
        records: list[LogRecord] = []
        try:
            changed = os.stat(self.directory).st_mtime_ns
        except OSError:  # no job has finished yet (or no shared filesystem)
            return records
        now = time.monotonic()
        if self._listed is None or self._listed[0] != changed or now >= self._listed[1]:
            try:
                self._names = sorted(
                    e.name for e in os.scandir(self.directory) if e.name.endswith(SUFFIX)
                )
            except OSError:
                return records
            # A file created within the same timestamp tick as the listing (or on a
            # server whose clock differs) leaves the mtime unchanged: until the change
            # is a second old, list at every call.
            recent = time.time_ns() - changed < 1_000_000_000
            self._listed = (changed, now if recent else now + self.RESCAN_SECONDS)
        for name in self._names:
            data = self._read_on(name)
            offset = self._offsets.get(name, 0)
            complete = data.rfind(b"\n") + 1  # a line still being written waits
            if not complete:
                continue
            self._offsets[name] = offset + complete
            records.extend(_parse(data[:complete]))
        return records

    def _read_on(self, name: str) -> bytes:
        """What ``name`` holds past the last complete line read from it."""
        offset = self._offsets.get(name, 0)
        handle = self._open.get(name)
        try:
            if handle is None:
                handle = open(os.path.join(self.directory, name), "rb")  # noqa: SIM115
                if len(self._open) < self.MAX_OPEN:
                    self._open[name] = handle
                else:
                    with handle:
                        handle.seek(offset)
                        return handle.read()
            handle.seek(offset)
            return handle.read()
        except OSError:
            return b""

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def __del__(self) -> None:
        self.close()


def read_all(run_dir: str | os.PathLike) -> list[LoggedOutcome]:
    """Every complete outcome in a run directory (for a restart or a cancel); start
    records are left out."""
    reader = OutcomeReader(run_dir)
    try:
        return [cast(LoggedOutcome, r) for r in reader.read_new() if not is_start(r)]
    finally:
        reader.close()


def _parse(data: bytes) -> Iterator[LogRecord]:
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a torn line (a node that crashed mid-write): skip it
            continue
        if isinstance(record, dict) and "job" in record and "attempt" in record:
            yield cast(LogRecord, record)  # what a worker of this run wrote
