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
from collections.abc import Iterator
from typing import cast

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

    Parameters
    ----------
    run_dir
        The run directory whose ``outcomes/`` files to follow.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.directory = os.path.join(os.fspath(run_dir), DIRECTORY)
        self._offsets: dict[str, int] = {}

    def read_new(self) -> list[LogRecord]:
        """Every complete record written since the previous call, starts and outcomes."""
        records: list[LogRecord] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:  # no job has finished yet (or no shared filesystem)
            return records
        for entry in entries:
            if not entry.name.endswith(SUFFIX):
                continue
            offset = self._offsets.get(entry.name, 0)
            try:
                if entry.stat().st_size <= offset:
                    continue
                with open(entry.path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except OSError:
                continue
            complete = data.rfind(b"\n") + 1  # a line still being written waits
            self._offsets[entry.name] = offset + complete
            records.extend(_parse(data[:complete]))
        return records


def read_all(run_dir: str | os.PathLike) -> list[LoggedOutcome]:
    """Every complete outcome in a run directory (for a restart or a cancel); start
    records are left out."""
    return [
        cast(LoggedOutcome, record)
        for record in OutcomeReader(run_dir).read_new()
        if not is_start(record)
    ]


def _parse(data: bytes) -> Iterator[LogRecord]:
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a torn line (a node that crashed mid-write): skip it
            continue
        if isinstance(record, dict) and "job" in record and "attempt" in record:
            yield cast(LogRecord, record)  # what a worker of this run wrote
