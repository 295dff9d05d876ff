"""The monitoring database schema, changed only through numbered migrations.

``PRAGMA user_version`` holds the number of the last migration applied. Migrations
run inside one ``BEGIN IMMEDIATE`` transaction, so two drivers opening a new database
at the same moment apply each migration exactly once.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, jobs, attempts, events
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER,
        pid_started REAL,
        site TEXT NOT NULL,
        state TEXT NOT NULL,
        n_jobs INTEGER NOT NULL,
        workflow_source TEXT,
        workflow_copy TEXT NOT NULL,
        workflow_hash TEXT NOT NULL,
        run_dir TEXT NOT NULL,
        workdir TEXT NOT NULL,
        created REAL NOT NULL,
        started REAL,
        ended REAL,
        heartbeat REAL,
        restarts INTEGER NOT NULL DEFAULT 0,
        pilot_version TEXT,
        message TEXT
    );
    CREATE INDEX runs_created ON runs (created);
    CREATE TABLE jobs (
        run_id TEXT NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        label TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        command TEXT,
        updated REAL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX jobs_run_label_state ON jobs (run_id, label, state);
    CREATE INDEX jobs_run_state ON jobs (run_id, state);
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        job TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,
        submitted REAL,
        start REAL,
        end REAL,
        host TEXT,
        exit_code INTEGER,
        signal INTEGER,
        failure_class TEXT,
        message TEXT,
        stdout TEXT,
        stderr TEXT,
        block_id TEXT,
        result TEXT,
        PRIMARY KEY (run_id, job, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        time REAL NOT NULL,
        job TEXT,
        state TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_run ON events (run_id, id);
    """,
    # 2: indexes for a database a whole group shares (issue 7): `pilot status --user/--since`
    # reads runs by owner and age; per-label counts read only the index (position included,
    # so a million-job run is counted without touching the table); timelines read a run's
    # attempts in start order.
    """
    CREATE INDEX runs_owner_created ON runs (owner, created);
    CREATE INDEX jobs_run_label_state_position ON jobs (run_id, label, state, position);
    DROP INDEX jobs_run_label_state;
    CREATE INDEX attempts_run_start ON attempts (run_id, start);
    """,
    # 3: per-attempt resources (issue 4): the pool it ran in, the memory it asked for,
    # and what it used.
    """
    ALTER TABLE attempts ADD COLUMN pool TEXT;
    ALTER TABLE attempts ADD COLUMN memory_mb INTEGER;
    ALTER TABLE attempts ADD COLUMN peak_rss_mb REAL;
    ALTER TABLE attempts ADD COLUMN cpu_seconds REAL;
    """,
    # 4: pilots (issue 3): one row per block; which batch job (SLURM_JOB_ID) ran an attempt.
    """
    CREATE TABLE pilots (
        run_id TEXT NOT NULL,
        pool TEXT NOT NULL,
        block_id TEXT NOT NULL,
        job_id TEXT,
        state TEXT NOT NULL,
        submitted REAL,
        start REAL,
        end REAL,
        node TEXT,
        cores INTEGER,
        message TEXT,
        PRIMARY KEY (run_id, pool, block_id)
    ) WITHOUT ROWID;
    ALTER TABLE attempts ADD COLUMN batch_job_id TEXT;
    """,
    # 5: a driver that runs as a batch job itself (`--driver-on`): its job id.
    """
    ALTER TABLE runs ADD COLUMN driver_job TEXT;
    """,
    # 6: finer failure classes (issue 19): the exception type of a function job that
    # raised, or of what kept a job from starting.
    """
    ALTER TABLE attempts ADD COLUMN error_type TEXT;
    """,
    # 7: elastic pilots (issue 16): worker slots per pilot, so busy core-seconds (its
    # attempts' runtimes times cores per worker) compare with allocated ones.
    """
    ALTER TABLE pilots ADD COLUMN workers INTEGER;
    """,
)


def apply_migrations(conn) -> int:
    """Bring the schema up to date; return the resulting version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current >= len(MIGRATIONS):
        return current
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(current, len(MIGRATIONS)):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already; a ROLLBACK then would hide the real error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
