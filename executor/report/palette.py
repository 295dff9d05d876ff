"""What "done" means and which colour each job state has, for every progress display.

*Done* is *final*: a job that succeeded, failed for good, was blocked by a failed
ancestor or was cancelled will not change again, so ``done = succeeded + failed +
blocked + cancelled``. A progress bar never paints that sum in one colour: it shows
one segment per state, in :data:`BAR_STATES` order, then the running jobs, then the
queued ones (handed to a pilot, not started: ``executor.model.states.SHOWN_STATES``),
then the jobs still waiting (pending, ready) as the empty rest.

The live display of ``pilot submit``/``attach`` (``report.progress``), ``pilot
status`` (``report.render``) and the dashboard's ``/api`` progress (``report.api``)
use this module; the dashboard's page (``static/dashboard.js``, ``static/pilot.css``)
mirrors it and points back here.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style

FINAL_STATES: tuple[str, ...] = ("succeeded", "failed", "blocked", "cancelled")
# Segments from the left: the final states, then what is running now, then what is queued.
BAR_STATES: tuple[str, ...] = (*FINAL_STATES, "running", "queued")

STATE_STYLE: dict[str, str] = {
    "succeeded": "green", "failed": "red", "blocked": "yellow", "cancelled": "magenta",
    "running": "cyan", "queued": "blue", "driver_lost": "red bold",
}  # fmt: skip
_EMPTY_STYLE = "grey35"
# Without colour (a pipe, NO_COLOR) each state is told apart by its character.
_PLAIN_GLYPH = {"succeeded": "#", "failed": "X", "blocked": "b", "cancelled": "c", "running": ">",
               "queued": "-"}  # fmt: skip


def done(counts: Mapping[str, int]) -> int:
    """How many jobs are done (in a final state) among ``counts`` (jobs per state)."""
    return sum(counts.get(state, 0) for state in FINAL_STATES)


def segment_widths(counts: Mapping[str, int], width: int) -> list[tuple[str, int]]:
    """Cells per :data:`BAR_STATES` state in a bar ``width`` cells wide (the rest is empty).

    Cells are shared by largest remainder, and a state with at least one job gets at
    least one cell while the bar has room, so a single failure among thousands shows.
    """
    total = sum(counts.values())
    shown = [(state, counts.get(state, 0)) for state in BAR_STATES if counts.get(state, 0)]
    if not total or not shown or width <= 0:
        return []
    exact = [n * width / total for _, n in shown]
    cells = [int(x) for x in exact]
    filled = round(sum(exact))
    by_remainder = sorted(range(len(shown)), key=lambda i: exact[i] - cells[i], reverse=True)
    for i in by_remainder[: filled - sum(cells)]:
        cells[i] += 1
    for i, n in enumerate(cells):
        # Room for a visible sliver comes from the widest segment.
        if n == 0 and sum(cells) < width:
            cells[i] = 1
        elif n == 0:
            widest = max(range(len(cells)), key=cells.__getitem__)
            if cells[widest] > 1:
                cells[widest] -= 1
                cells[i] = 1
    return [(state, n) for (state, _), n in zip(shown, cells, strict=True) if n]


class StateBar:
    """A rich renderable: a one-line bar of ``counts`` (jobs per state), segment by state."""

    def __init__(self, counts: Mapping[str, int], width: int = 24):
        self.counts = dict(counts)
        self.width = width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = min(self.width, options.max_width)
        plain = console.no_color or console.color_system is None
        used = 0
        for state, cells in segment_widths(self.counts, width):
            glyph = _PLAIN_GLYPH[state] if plain else "━"
            yield Segment(glyph * cells, None if plain else Style.parse(STATE_STYLE[state]))
            used += cells
        if width > used:
            yield Segment(("." if plain else "━") * (width - used),
                          None if plain else Style.parse(_EMPTY_STYLE))  # fmt: skip

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = min(self.width, options.max_width)
        return Measurement(width, width)
