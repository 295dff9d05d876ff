"""The HTML report: written at run end, self-contained, opened in a real headless Chromium."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from browser import Watched, file_url
from helpers import run_pilot, write_workflow
from seed import HOSTILE_LABEL, HOSTILE_NAME, seed_run

from executor.report import activity
from executor.report.html import json_for_script, render, write_final_report
from executor.store import Store, locate


def _open(watched: Watched, path: Path) -> None:
    watched.page.goto(file_url(path))
    # plotly has drawn every figure: each container holds an SVG.
    watched.page.wait_for_function(
        "document.querySelectorAll('.figure .main-svg').length >= 4", timeout=30_000
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real run on the local site: two labels, one job that fails with a message."""
    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    path = write_workflow(root, {
        "name": "report-demo",
        "jobs": [
            *({"name": f"isr-{i}", "label": "isr", "command": "sleep 0.2"} for i in range(4)),
            {"name": "cal-1", "label": "calibrate", "command": "true", "after": ["isr-0"]},
            {"name": "cal-bad", "label": "calibrate", "retries": 0,
             "command": "echo 'flat field missing' >&2; exit 3"},
        ],
    })  # fmt: skip
    env = {**__import__("os").environ, "PILOT_HOME": str(home)}
    env.pop("PILOT_DB", None)
    result = run_pilot("submit", path, env=env)
    assert result.returncode == 1, result.stderr
    run_id = result.stdout.split()[1]
    return {"run_id": run_id, "env": env, "home": home, "root": root}


def test_a_run_writes_its_report_when_it_ends(finished_run: dict[str, Any]) -> None:
    report = finished_run["home"] / "runs" / finished_run["run_id"] / "report.html"
    assert report.is_file()
    assert stat.S_IMODE(report.stat().st_mode) & 0o002 == 0
    text = report.read_text()
    assert "report-demo" in text and "flat field missing" in text


def test_report_html_opens_offline_without_errors(
    finished_run: dict[str, Any], page: Watched
) -> None:
    out = finished_run["root"] / "out" / "report.html"
    out.parent.mkdir()
    result = run_pilot("report", finished_run["run_id"], "--html", out, env=finished_run["env"])
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    # Blocks every request the page might try: a self-contained file needs none.
    requests: list[str] = []
    page.page.on("request", lambda r: r.url.startswith("file:") or requests.append(r.url))

    _open(page, out)

    assert page.errors == [] and requests == []
    labels = page.page.locator("#labels tbody tr td:first-child").all_inner_texts()
    assert labels == ["isr", "calibrate", "total"]
    body = page.page.inner_text("body")
    assert "1 × exit code 3" in body and "flat field missing" in body
    # Every plot drew: the Gantt chart shows a bar per attempt.
    assert page.page.locator("#figure-gantt .bars path").count() >= 6
    legend = page.page.locator("#figure-gantt .legendtext").all_text_contents()
    assert {"isr", "calibrate", "failed attempts"} <= set(legend)


def test_hostile_names_render_as_text(tmp_path: Path, page: Watched) -> None:
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", "run-x", jobs=[
            {"name": HOSTILE_NAME, "label": HOSTILE_LABEL, "state": "failed", "start": 1,
             "runtime": 2, "exit_code": 1, "stderr": "</pre><script>alert(3)</script>\n",
             "command": "echo '</script><script>alert(4)</script>'"},
            {"name": "ok", "label": HOSTILE_LABEL, "state": "succeeded", "start": 0,
             "runtime": 1},
        ])  # fmt: skip
        out = tmp_path / "report.html"
        out.write_text(render(store, "run-x"))

    _open(page, out)

    assert page.dialogs == [] and page.errors == []
    body = page.page.inner_text("body")
    assert HOSTILE_NAME in body and HOSTILE_LABEL in body and "alert(3)" in body
    assert page.page.locator("img").count() == 0
    # In the plots too: the Gantt's hover text and legend show the characters.
    legend = page.page.locator("#figure-gantt .legendtext").all_text_contents()
    assert HOSTILE_LABEL in legend


def test_json_in_a_script_block_cannot_close_it() -> None:
    text = json_for_script({"name": "</script><script>alert(1)</script>&"})
    assert "<" not in text and ">" not in text and "&" not in text


def test_degrades_without_pilots_or_memory(tmp_path: Path) -> None:
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", "run-1", jobs=[
            {"name": "a", "label": "x", "state": "succeeded", "start": 0, "runtime": 4,
             "block": "0"},
            {"name": "b", "label": "x", "state": "succeeded", "start": 1, "runtime": 1,
             "block": "0"},
            {"name": "c", "label": "y", "state": "succeeded", "start": 2, "runtime": 2,
             "block": "1"},
        ])  # fmt: skip
        pilots, source = activity.pilot_spans(store, "run-1")
        busy = activity.occupancy(store, "run-1")
        stats = activity.distributions(store, "run-1")
        html = render(store, "run-1")
    # No pilot rows for this run: pilots are derived from the attempts' block ids.
    assert source == "attempts"
    assert [p["block_id"] for p in pilots] == ["0", "1"]
    created = pilots[0]["start"] - 0
    assert [round(p["end"] - created, 6) for p in pilots] == [4, 4]
    # b ends when c starts: never three at once.
    assert max(n for _, n in busy["running"]) == 2 and busy["running"][-1][1] == 0
    assert max(n for _, n in busy["pilots"]) == 2
    assert stats["x"]["runtime"]["n"] == 2 and stats["x"]["runtime"]["max"] == 4
    # Seeded attempts record no peak memory: the plot says so instead of failing.
    assert stats["x"]["memory"] is None
    assert "no peak memory recorded" in html


def test_lanes_never_overlap() -> None:
    attempts = [
        {"block_id": "0", "start": s, "end": e}
        for s, e in [(0, 10), (1, 2), (2, 5), (3, 4), (9, 12), (10, 11)]
    ]
    lanes = activity.assign_lanes(attempts)
    by_lane: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in lanes:
        by_lane.setdefault((row["pilot"], row["slot"]), []).append((row["start"], row["end"]))
    for spans in by_lane.values():
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end
    assert len(by_lane) == 3  # at most three ran at once


def test_a_failing_report_never_fails_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", "run-1", jobs=[{"name": "a", "label": "x",
                                                            "state": "succeeded"}])
        with caplog.at_level(logging.WARNING):
            written = write_final_report(store, "run-1", tmp_path / "no" / "such" / "r.html")
    assert written is None
    assert "could not write the HTML report" in caplog.text


def test_report_of_a_big_run_stays_bounded(tmp_path: Path) -> None:
    # More attempts than the timeline shows: the title says how many it left out.
    with Store(tmp_path / "monitoring.db") as store:
        jobs = [
            {"name": f"j{i}", "label": "x", "state": "succeeded", "start": i / 100, "runtime": 1}
            for i in range(60)
        ]
        seed_run(store, tmp_path / "runs", "run-1", jobs=jobs)
        rows, total = activity.timeline_attempts(store, "run-1", limit=25)
    assert len(rows) == 25 and total == 60
    assert [r["job"] for r in rows] == [f"j{i}" for i in range(25)]
    assert locate  # the report for the CLI reads the same store
