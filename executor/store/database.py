"""The one place that opens ``monitoring.db`` and writes to it.

Many drivers (many users) may write one file at once, so every write is one short
``BEGIN IMMEDIATE`` transaction, retried with backoff when SQLite reports the file
busy or locked. Readers use WAL snapshots and never block writers. On a network
filesystem, where WAL is unsafe, the store falls back to a rollback journal and says so
(see :mod:`executor.store.filesystem`); there a reader holds a shared lock while it
reads, and a writer's ``COMMIT`` waits for it, so a failed ``COMMIT`` is rolled back
and the whole transaction retried like any other busy write.

A new database file is created ``rw-rw----`` less the user's umask: with the usual
umask 022 that is group-readable; a team that shares one database sets umask 002 (or
``chmod g+w``) so that its members can write it too. It is never world-accessible.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import sqlite_utils

from executor.errors import StoreError
from executor.store.filesystem import journal_mode_for
from executor.store.schema import apply_migrations

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long SQLite itself waits for a lock, within one statement.
_BUSY_TIMEOUT_MS = 10_000
# How long a write keeps retrying before it gives up. Eight drivers flushing in tight
# loops on a rollback journal kept single writes waiting up to 25 s (SQLite's lock is
# not fair), so allow several times that; but a lock held for minutes (a suspended
# process, a stale lock on a network filesystem) must surface as an error, not a hang.
_PATIENCE = 120.0
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Store:
    """An open monitoring database; use as a context manager or call :meth:`close`.

    Parameters
    ----------
    path
        The database file; created (with its directory) if missing.
    readonly
        Open an existing database for reading only (``mode=ro``), as the dashboard
        does: nothing is created, migrated or written.
    journal
        ``"wal"`` or ``"delete"`` (rollback journal); by default WAL unless the file
        lives on a network filesystem.
    """

    def __init__(
        self, path: str | os.PathLike, *, readonly: bool = False, journal: str | None = None
    ):
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                conn = self._open_readonly()
            else:
                conn = self._open_writable(journal)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the monitoring database {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the monitoring database {self.path}: {exc}") from exc
        self.conn = conn
        self.db = sqlite_utils.Database(conn)

    def _open_writable(self, journal: str | None) -> sqlite3.Connection:
        # The leaf directory and the file: never any permission for others.
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o770)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o660)
            os.close(fd)
        if journal is None:
            journal, fstype = journal_mode_for(self.path.parent)
            if journal != "wal":
                logger.warning(
                    "%s is on a network filesystem (%s): using a rollback journal instead of "
                    "WAL, so readers may briefly delay writers",
                    self.path,
                    fstype,
                )
        if journal not in ("wal", "delete"):
            raise StoreError(f"journal must be 'wal' or 'delete', not {journal!r}")
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=10
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._retry(lambda: conn.execute(f"PRAGMA journal_mode = {journal}"), "open")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._retry(lambda: apply_migrations(conn), "migrate")
        except BaseException:
            conn.close()
            raise
        self.journal = journal
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreError(
                f"no monitoring database at {self.path}; pass --db or set PILOT_DB to one "
                "that a run has written"
            )
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self.journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        return conn

    # -- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------
    def _retry(self, operation: Callable[[], T], action: str) -> T:
        """Run ``operation`` until it is not busy; start no attempt after ``_PATIENCE`` s.

        Raises
        ------
        StoreError
            When the database is still busy after ``_PATIENCE`` seconds.
        sqlite3.Error
            Any other database error, at once.
        """
        started = time.monotonic()
        delay = _FIRST_DELAY
        attempt = 1
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                # Jittered, so that writers that collided do not collide again.
                pause = delay * (1 + random.random())
                waited = time.monotonic() - started
                if waited + pause > _PATIENCE:
                    raise StoreError(
                        f"cannot {action} the monitoring database {self.path}: still busy "
                        f"({exc}) after {attempt} attempts in {waited:.0f} s; other processes "
                        "kept it locked all that time: look for a stuck or suspended one "
                        "(`fuser` on each host that shares the file)"
                    ) from exc
                logger.debug(
                    "%s is busy (%s) at attempt %d to %s; retrying in %.2f s",
                    self.path,
                    exc,
                    attempt,
                    action,
                    pause,
                )
                time.sleep(pause)
                delay = min(delay * 2, _MAX_DELAY)
                attempt += 1

    def _rollback(self) -> None:
        # A statement or a COMMIT that failed may or may not have ended the transaction
        # (SQLite rolls some errors back itself, and a busy COMMIT keeps it open);
        # either way none may stay open, or every later BEGIN fails for good.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _not_in_a_transaction(self, action: str) -> None:
        if self.conn.in_transaction:
            raise StoreError(
                f"cannot {action} the monitoring database {self.path} inside another "
                "write or snapshot: finish that one first (transactions do not nest)"
            )

    # -- writing ------------------------------------------------------------------
    def write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation(conn)`` in one immediate transaction, retried when busy.

        The operation must be safe to repeat: on a busy error, whether in the operation
        or in the ``COMMIT``, the transaction is rolled back and the operation run again
        from the start.

        Raises
        ------
        StoreError
            When the database cannot be written, or is still busy after two minutes
            of retries; the store stays usable either way. An exception that the
            operation raises itself is passed on, after the rollback.
        """
        self._not_in_a_transaction("write to")

        def once() -> T:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = operation(self.conn)
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            return result

        try:
            return self._retry(once, "write to")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the monitoring database {self.path}: {exc}") from exc

    # -- reading ------------------------------------------------------------------
    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        try:
            return list(self.db.query(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the monitoring database {self.path}: {exc}") from exc

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """Read several queries from one consistent snapshot of the database.

        The snapshot's read transaction always ends with the block, also when the
        block raises.
        """
        self._not_in_a_transaction("take a snapshot of")
        try:
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the monitoring database {self.path}: {exc}") from exc
        try:
            yield self
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot read the monitoring database {self.path}: {exc}") from exc
