"""Each job's final failure as one line, as it happens (like Snakemake and Nextflow).

``pilot submit`` (whose driver commits to the store before it reports progress) and
``pilot attach`` (which follows the store from another process) both read the
failures from the store with one :class:`FailureFeed`, so both print the same lines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from executor.errors import StoreError
from executor.report.failures import cause_of, describe_cause
from executor.store import Store
from executor.store.jobs import failures_after, last_event

logger = logging.getLogger(__name__)


class FailureFeed:
    """The jobs that failed for good since the last call, as lines to print.

    Parameters
    ----------
    store, run_id
        The run to follow.
    from_start
        Also report the jobs that had failed before the feed was made (``attach``);
        otherwise only those that fail from now on (``submit``, ``restart``).
    """

    def __init__(self, store: Store, run_id: str, *, from_start: bool = False):
        self.store = store
        self.run_id = run_id
        self._after = 0 if from_start else last_event(store, run_id)
        self._failed = 0
        self._shown: set[str] = set()

    def lines(self, counts: Mapping[str, Mapping[str, int]]) -> list[str]:
        """One line per job that failed since the last call; ``counts`` (per label, per
        state, as the progress display gets them) say whether there can be any, so a
        run without new failures costs no query."""
        failed = sum(by_state.get("failed", 0) for by_state in counts.values())
        if failed == self._failed:
            return []
        try:
            rows, self._after = failures_after(self.store, self.run_id, self._after)
        except StoreError:  # only a display: the next update asks again
            logger.warning("run %s: cannot read new failures", self.run_id, exc_info=True)
            return []
        self._failed = failed
        fresh = [row for row in rows if row["job"] not in self._shown]
        self._shown.update(row["job"] for row in fresh)
        return [describe_failure(row) for row in fresh]


def describe_failure(row: dict[str, Any]) -> str:
    """``FAILED job-3 (label sim, attempt 2): exit code 3; log /runs/.../attempt-2.err``."""
    why = describe_cause(cause_of(row)) if row["attempts"] else "never ran"
    log = row["stderr"] or row["stdout"]
    where = f"; log {log}" if log else "; no log"
    return f"FAILED {row['job']} (label {row['label']}, attempt {row['attempts']}): {why}{where}"
