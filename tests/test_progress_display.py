"""Progress in colours by state (terminal, `pilot status`, dashboard), and 80-column tables.

Done means final (succeeded, failed, blocked or cancelled) everywhere, and no bar paints
it in one green: each state has its own segment (executor.report.palette).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Watched
from click.testing import CliRunner
from rich.color import Color
from rich.console import Console
from rich.text import Text
from seed import seed_run

from executor.cli import cli
from executor.report import render
from executor.report.palette import BAR_STATES, STATE_STYLE, done, segment_widths
from executor.report.progress import LiveProgress
from executor.report.server import Dashboard
from executor.store import Store
from executor.store.queries import get_run, run_summary

COUNTS = {"pending": 2, "running": 1, "succeeded": 5, "failed": 2, "blocked": 1, "cancelled": 1}
LONG_LABEL = "calibrate-the-detector-with-a-label-much-longer-than-any-terminal-column"
LONG_JOB = "a-job-name-that-goes-on-and-on-well-past-eighty-columns-of-terminal-{i}"
RUN_ID = "20261122-101500-ab12"


def _jobs(counts: dict[str, int], label: str) -> list[dict[str, Any]]:
    states = [state for state, n in counts.items() for _ in range(n)]
    return [{"name": LONG_JOB.format(i=f"{label[:3]}-{i}"), "label": label, "state": state}
            for i, state in enumerate(states)]  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", RUN_ID, jobs=[
            *_jobs(COUNTS, LONG_LABEL), *_jobs({"succeeded": 3, "failed": 1}, "short"),
        ])  # fmt: skip
    return tmp_path / "monitoring.db"


def _truecolor(width: int = 120) -> Console:
    return Console(
        width=width, color_system="truecolor", force_terminal=True, record=True, highlight=False
    )


def _bar_runs(console: Console, marker: str) -> list[tuple[str, int]]:
    """(colour, cells) of the "━" runs on the last recorded line holding ``marker``.

    The last: rich 14 (which globus-compute-sdk pins) also records the frame painted
    when the display starts, before any count arrives.
    """
    lines = Text.from_ansi(console.export_text(styles=True, clear=False)).split("\n")
    for line in reversed(lines):
        if marker not in line.plain or "━" not in line.plain:
            continue
        runs = []
        for span in line.spans:
            cells = line.plain[span.start : span.end]
            if cells and set(cells) == {"━"}:
                runs.append((_name(span.style.color), len(cells)))
        return runs
    raise AssertionError(f"no line with {marker!r} in {console.export_text()!r}")


# A recorded colour reads back as its number: 2 is "green".
_NAMES = {Color.parse(name).number: name for name in [*map(STATE_STYLE.get, BAR_STATES), "grey35"]}


def _name(color: Color | None) -> str:
    return "" if color is None else _NAMES.get(color.number, color.name)


def _expected_runs(counts: dict[str, int], width: int) -> list[tuple[str, int]]:
    runs = [(STATE_STYLE[state].split()[0], n) for state, n in segment_widths(counts, width)]
    rest = width - sum(n for _, n in runs)
    return runs + ([("grey35", rest)] if rest else [])


def test_done_is_every_final_state() -> None:
    assert done(COUNTS) == 5 + 2 + 1 + 1
    assert BAR_STATES == ("succeeded", "failed", "blocked", "cancelled", "running", "queued")


@pytest.mark.parametrize("width", [1, 5, 24, 30])
def test_segments_fit_and_a_single_failure_shows(width: int) -> None:
    counts = {"succeeded": 9_998, "failed": 1, "pending": 1}
    cells = dict(segment_widths(counts, width))
    assert sum(cells.values()) <= width
    if width >= 2:
        assert cells["failed"] >= 1


def test_live_progress_paints_each_state_in_its_colour() -> None:
    console = _truecolor()
    with LiveProgress(console) as progress:
        progress.update({"only": COUNTS})
    assert _bar_runs(console, "only") == _expected_runs(COUNTS, 24)
    text = console.export_text()
    assert "9/12" in text and "1 cancelled" in text


def test_status_paints_each_state_in_its_colour(db: Path) -> None:
    with Store(db) as store:
        summary = run_summary(store, get_run(store, RUN_ID))
    console = _truecolor()
    render.print_to(console, render.run_status(summary))
    assert _bar_runs(console, "short") == _expected_runs({"succeeded": 3, "failed": 1}, 30)
    assert _bar_runs(console, LONG_LABEL[:20]) == _expected_runs(COUNTS, 30)
    colours = [colour for colour, _ in _bar_runs(console, LONG_LABEL[:20])]
    assert colours == ["green", "red", "yellow", "magenta", "cyan", "grey35"]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def _figures(summary: dict[str, Any]) -> set[str]:
    figures = {f"{done(summary['jobs'])}/{summary['total']}"}
    for counts in summary["labels"].values():
        figures.add(f"{done(counts)}/{sum(counts.values())}")
    return figures


def test_status_and_report_keep_states_and_figures_whole_in_80_columns(db: Path) -> None:
    summary = json.loads(_invoke("status", RUN_ID, "--json", "--db", str(db)))
    listing = _invoke("status", "--all-users", "--db", str(db))
    one = _invoke("status", RUN_ID, "--db", str(db))
    report = _invoke("report", RUN_ID, "--db", str(db))
    states = [
        "pending", "ready", "queued", "running", "succeeded", "failed", "blocked", "cancelled",
    ]  # fmt: skip
    for output in (listing, one):
        assert max(len(line) for line in output.splitlines()) <= 80
    for output in (listing, one, report):
        assert "…" not in output
        # Piped: plain text, no colour codes and no box drawing.
        assert "\x1b[" not in output and output.isascii()
    assert re.search(rf"\b{summary['state']}\b", listing)
    assert f"{summary['total'] - 3}/{summary['total']}" in listing
    for output in (one, report):
        header = next(
            line for line in output.splitlines() if line.startswith("label") and "ready" in line
        )
        assert header.split()[1:-1] == states
    assert all(figure in one for figure in _figures(summary)), one


@pytest.fixture
def dashboard(db: Path) -> Iterator[Dashboard]:
    with Dashboard(db) as served:
        yield served


def test_the_dashboard_bars_have_a_segment_per_state(dashboard: Dashboard, page: Watched) -> None:
    from playwright.sync_api import expect

    colours = {
        "succeeded": "rgb(42, 125, 42)", "failed": "rgb(198, 40, 40)",
        "blocked": "rgb(184, 134, 11)", "cancelled": "rgb(142, 36, 170)",
        "running": "rgb(21, 101, 192)",
    }  # fmt: skip
    page.page.goto(dashboard.url)
    runs_bar = page.page.locator(f'tr[data-run="{RUN_ID}"] .bar > span')
    expect(runs_bar).to_have_count(5, timeout=30_000)
    page.page.goto(f"{dashboard.url}#{RUN_ID}")
    segments = page.page.locator(f'tr[data-label="{LONG_LABEL}"] .bar > span')
    expect(segments).to_have_count(5, timeout=30_000)
    # No job of the seeded run is queued: no segment of its own.
    assert [segments.nth(i).get_attribute("data-state") for i in range(5)] == list(BAR_STATES[:5])
    for i, state in enumerate(BAR_STATES[:5]):
        expect(segments.nth(i)).to_have_css("background-color", colours[state])
    expect(page.page.locator(f'tr[data-label="{LONG_LABEL}"]')).to_contain_text("9/12")
    short = page.page.locator('tr[data-label="short"] .bar > span')
    assert [short.nth(i).get_attribute("data-state") for i in range(2)] == ["succeeded", "failed"]
    assert page.errors == []
