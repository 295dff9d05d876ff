"""A job's stdout and stderr: caught on the node, written to the run directory only when
the job writes something.

On the shared filesystems of a data facility (GPFS, Lustre, NFS) each file or directory
created is a metadata operation of milliseconds on a server every user shares, and
most small jobs write nothing. So a job writes into unnamed scratch files on its node
(``O_TMPFILE`` in ``$PILOT_SCRATCH``, else ``$TMPDIR`` or ``/tmp``: nothing to clean up
if the worker dies), and the worker copies what appears there into the run
directory's log file, creating the file (and its directory) the first time there is
something to copy: every :data:`PUMP_SECONDS` while the job runs, so ``pilot logs`` and
``pilot logs -f`` show a running job's output, and once more when it ends. A job that
writes nothing creates nothing in the run directory; its outcome names no log.

What is lost compared with writing the run directory directly: when the worker itself
dies (killed with its pilot), up to :data:`PUMP_SECONDS` of the job's last output.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

import errno
import os
import threading

# How often a running job's new output reaches its log in the run directory.
PUMP_SECONDS = 0.25
_CHUNK = 1 << 20


class Capture:
    """The two scratch files one attempt writes to, and the logs they are copied to.

    Use as a context manager around the job: while inside, the worker's pump thread
    copies new output to the logs; :meth:`finish` copies the rest and closes.

    Parameters
    ----------
    stdout, stderr
        The attempt's log paths in the run directory (created only if written to).
    """

    def __init__(self, stdout: str, stderr: str):
        self._streams = (_Stream(stdout), _Stream(stderr))
        self._finished = False

    @property
    def fds(self) -> tuple[int, int]:
        """The descriptors the job's stdout and stderr go to."""
        return self._streams[0].scratch, self._streams[1].scratch

    def __enter__(self) -> Capture:
        _pump().add(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _pump().discard(self)
        if not self._finished:
            self.close()

    def pump(self) -> None:
        """Copy what the job wrote since the last call (called by the pump thread)."""
        for stream in self._streams:
            stream.pump(quiet=True)

    def finish(self) -> tuple[str | None, str | None]:
        """Copy the rest, close everything, and return the logs written (``None``: the
        job wrote nothing there, so no file exists).

        Raises
        ------
        OSError
            A log the job wrote to could not be created or written.
        """
        _pump().discard(self)
        self._finished = True
        try:
            for stream in self._streams:
                stream.pump(quiet=False)
        finally:
            self.close()
        out, err = self._streams
        return (out.path if out.written else None), (err.path if err.written else None)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()


class _Stream:
    def __init__(self, path: str):
        self.path = path
        self.copied = 0
        self.log: int | None = None
        self.error: OSError | None = None
        self.written = False
        try:
            self.scratch = _scratch_file()
            self.direct = False
        except OSError:  # no usable scratch on this node: write the log itself, as before
            self.scratch = _create_log(path)
            self.direct = self.written = True

    def pump(self, *, quiet: bool) -> None:
        if self.direct or self.error is not None:
            if self.error is not None and not quiet:
                raise self.error
            return
        try:
            size = os.fstat(self.scratch).st_size
            while self.copied < size:
                if self.log is None:
                    self.log = _create_log(self.path)
                    self.written = True
                sent = _copy(self.scratch, self.log, self.copied, size - self.copied)
                if not sent:
                    break
                self.copied += sent
        except OSError as exc:
            # Kept for finish(), which reports it as the worker's fault with this job.
            self.error = exc
            if not quiet:
                raise

    def close(self) -> None:
        for fd in (self.scratch, self.log):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.scratch = self.log = -1  # type: ignore[assignment]


_SCRATCH_DIRECTORY: list[str] = []


def _scratch_directory() -> str:
    if not _SCRATCH_DIRECTORY:
        import tempfile

        _SCRATCH_DIRECTORY.append(os.environ.get("PILOT_SCRATCH") or tempfile.gettempdir())
    return _SCRATCH_DIRECTORY[0]


def _scratch_file() -> int:
    """An unnamed file on the node, gone when its last descriptor closes."""
    directory = _scratch_directory()
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, flags | tmpfile, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
    import tempfile

    fd, name = tempfile.mkstemp(dir=directory, prefix="pilot-log-")
    os.unlink(name)
    return fd


def _create_log(path: str) -> int:
    """Open a log readable by the owner and group only (logs may hold secrets)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o640)
    except FileNotFoundError:  # the job's log directory: one mkdir, only for jobs that write
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o640)


_SENDFILE = [hasattr(os, "sendfile")]


def _copy(source: int, target: int, offset: int, count: int) -> int:
    """Copy up to ``count`` bytes at ``offset`` of ``source`` to the end of ``target``,
    leaving ``source``'s own offset alone (the job is still writing at it)."""
    count = min(count, _CHUNK)
    if _SENDFILE[0]:
        try:
            return os.sendfile(target, source, offset, count)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            _SENDFILE[0] = False
    data = os.pread(source, count, offset)
    written = 0
    while written < len(data):
        written += os.write(target, data[written:])
    return len(data)


class _Pump:
    """One thread per worker process that copies running jobs' output every
    :data:`PUMP_SECONDS`; it sleeps once no job has run for :data:`IDLE_ROUNDS` rounds
    (waking it for each of many short jobs would cost more than they do)."""

    IDLE_ROUNDS = 8

    def __init__(self) -> None:
        self._active: set[Capture] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._asleep = False

    def add(self, capture: Capture) -> None:
        with self._changed:
            self._active.add(capture)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pilot-log-pump")
                self._thread.daemon = True
                self._thread.start()
            elif self._asleep:
                self._changed.notify()

    def discard(self, capture: Capture) -> None:
        # Under the lock: once this returns, the thread is not copying this capture.
        with self._changed:
            self._active.discard(capture)

    def _run(self) -> None:
        idle = 0
        with self._changed:
            while True:
                if idle >= self.IDLE_ROUNDS:
                    self._asleep = True
                    while not self._active:
                        self._changed.wait()
                    self._asleep, idle = False, 0
                self._changed.wait(PUMP_SECONDS)
                idle = 0 if self._active else idle + 1
                for capture in list(self._active):
                    capture.pump()


_PUMPS: list[_Pump] = []
_PUMPS_LOCK = threading.Lock()


def _forget_pump() -> None:
    # A forked child has no pump thread, and may have copied the lock held.
    _PUMPS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pump)


def _pump() -> _Pump:
    if not _PUMPS:
        with _PUMPS_LOCK:
            if not _PUMPS:
                _PUMPS.append(_Pump())
    return _PUMPS[0]


def read_scratch(fd: int) -> str | None:
    """The text in a scratch file (``None`` when empty): a function job's result or error."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    return data.decode("utf-8", "replace") if data else None


def scratch_file() -> int:
    """An unnamed file on the node for what a job hands back (its result, its error)."""
    return _scratch_file()
