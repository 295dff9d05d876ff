"""The live progress display of ``pilot submit``: one bar per label and one for the run.

On a terminal it redraws in place (rich); elsewhere (a log file, CI) it prints a
plain line at most every ``plain_interval`` seconds, so long runs still show life.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from executor.report.palette import FINAL_STATES, StateBar, done


class _StateBarColumn(ProgressColumn):
    """The bar, one segment per state (``report.palette``), never all green."""

    def render(self, task: Task) -> StateBar:
        return StateBar(task.fields["counts"], width=24)


class LiveProgress:
    """Context manager; call :meth:`update` with per-label state counts."""

    def __init__(self, console: Console | None = None, *, plain_interval: float = 30.0):
        self.console = console or Console(stderr=True)
        self.plain_interval = plain_interval
        self._live = self.console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            _StateBarColumn(),
            MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[running]} running"),
            TextColumn("[blue]{task.fields[queued]} queued"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("[yellow]{task.fields[blocked]} blocked"),
            TextColumn("[magenta]{task.fields[cancelled]} cancelled"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._last_plain = 0.0
        self._last_counts: dict[str, dict[str, int]] = {}

    def __enter__(self) -> LiveProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live:
            self._progress.stop()
        elif self._last_counts:
            self._print_plain(self._last_counts)

    def note(self, line: str) -> None:
        """Print ``line`` (a job's failure) at once: above the bars on a terminal, where
        they stay in place under it; as a plain line of its own elsewhere."""
        if self._live:
            self._progress.console.print(Text(line, style="red"), soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def update(self, counts: dict[str, dict[str, int]]) -> None:
        self._last_counts = counts
        if not self._live:
            now = time.monotonic()
            if now - self._last_plain >= self.plain_interval:
                self._last_plain = now
                self._print_plain(counts)
            return
        overall = {state: 0 for state in next(iter(counts.values()), {})}
        for label, by_state in counts.items():
            self._show(escape(label), by_state)
            for state, n in by_state.items():
                overall[state] += n
        if len(counts) > 1:
            self._show("[bold]all", overall)

    def _show(self, description: str, by_state: dict[str, int]) -> None:
        if description not in self._tasks:
            self._tasks[description] = self._progress.add_task(
                description, total=sum(by_state.values()), counts={}, running=0, queued=0,
                failed=0, blocked=0, cancelled=0,
            )  # fmt: skip
        self._progress.update(
            self._tasks[description],
            completed=done(by_state),
            counts=dict(by_state),
            running=by_state.get("running", 0),
            queued=by_state.get("queued", 0),
            failed=by_state.get("failed", 0),
            blocked=by_state.get("blocked", 0),
            cancelled=by_state.get("cancelled", 0),
        )

    def _print_plain(self, counts: dict[str, dict[str, int]]) -> None:
        total = {
            s: sum(c.get(s, 0) for c in counts.values())
            for s in ("running", "queued", *FINAL_STATES)
        }
        jobs = sum(sum(c.values()) for c in counts.values())
        print(
            f"progress: {done(total)}/{jobs} done, {total['running']} running, "
            f"{total['queued']} queued, "
            f"{total['succeeded']} succeeded, {total['failed']} failed, {total['blocked']} "
            f"blocked, {total['cancelled']} cancelled",
            file=sys.stderr,
            flush=True,
        )
