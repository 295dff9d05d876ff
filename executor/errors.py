"""The errors pilot raises, as one tree.

::

    PilotError                  anything pilot itself reports to a user
    ├── ConfigError             a site file or option is wrong (names the file and key)
    ├── GraphError              a workflow is wrong: syntax, keys, values, cycles, names
    ├── SiteError               a site cannot be used (``transient`` says whether to retry)
    ├── StoreError              monitoring.db cannot be read or written
    ├── RunNotFound             no run with that id in the database  (also a StoreError)
    ├── RunStateError           the run is in a state that forbids the action
    ├── RunFailed               a run was under way when its site failed (exit 1, not 2)
    └── ShippingError           the workflow's `code:` cannot be shipped (names the path)

Exceptions from Parsl, sqlite3 and YAML are converted to these at the boundary
where they occur (``raise ... from exc``), so callers catch one family. Every message
says what happened, where (file, job, field) and how to fix it.
"""

from __future__ import annotations


class PilotError(Exception):
    """Base class of every error pilot reports to a user."""


class ConfigError(PilotError):
    """A site configuration or command option is invalid."""


class GraphError(PilotError):
    """A workflow is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.message = message
        self.problems = problems or [message]
        super().__init__(message)

    def __str__(self) -> str:
        # The problems themselves, not just "3 problem(s)": `str(exc)` is all a Python
        # caller of `Workflow.build()` or `run()` may print.
        if self.problems == [self.message]:
            return self.message
        return "\n".join([f"{self.message}:", *(f"  - {p}" for p in self.problems)])


class SiteError(PilotError):
    """A site could not start, scale or run pilots.

    ``transient`` is true when retrying later may succeed (a busy scheduler).
    """

    def __init__(self, message: str, *, transient: bool = False):
        self.transient = transient
        super().__init__(message)


class StoreError(PilotError):
    """The monitoring database could not be read or written."""


class RunNotFound(StoreError):
    """No run with the given id exists in the database."""


class RunStateError(PilotError):
    """The run's state does not allow the requested action (e.g. restarting a live run)."""


class RunFailed(PilotError):
    """A run started, then its site failed under it: the run is recorded as failed.

    Not bad input: ``pilot submit`` and ``pilot restart`` exit 1, as for failed jobs.
    """

    exit_code = 1

    def __init__(self, message: str, *, run_id: str):
        self.run_id = run_id
        super().__init__(message)


class ShippingError(PilotError):
    """The user's code cannot be shipped: a missing path, a link outside it, too large."""
