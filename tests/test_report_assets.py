"""Each run's report.html shares one copy of plotly.js per pilot home.

Two real runs on the local site write small reports that load the same
``$PILOT_HOME/assets/plotly-<version>.min.js`` by a relative path; opened from the run
directory in a real headless Chromium they draw every plot. A report written elsewhere
(``--html FILE``) still inlines plotly.js.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from browser import Watched, file_url
from helpers import run_pilot, write_workflow
from seed import seed_run

from executor.report.assets import ensure_plotly_asset, plotly_asset_name, plotly_js
from executor.report.html import write_final_report
from executor.store import Store, locate

SMALL = 200_000  # bytes: a tiny run's report without plotly.js inlined
SCRIPT_SRC = re.compile(r'<script src="([^"]+)"')


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("assets")
    home = root / "home"
    env = {**os.environ, "PILOT_HOME": str(home)}
    env.pop("PILOT_DB", None)
    run_ids = []
    for n in range(2):
        path = write_workflow(root / f"wf{n}", {
            "name": f"assets-{n}",
            "jobs": [
                {"name": "a", "label": "first", "command": "true"},
                {"name": "b", "label": "second", "command": "sleep 0.1", "after": ["a"]},
            ],
        })  # fmt: skip
        result = run_pilot("submit", path, env=env)
        assert result.returncode == 0, result.stderr
        run_ids.append(result.stdout.split()[1])
    return {"home": home, "env": env, "run_ids": run_ids, "root": root}


def test_runs_share_one_plotly_asset(two_runs: dict[str, Any]) -> None:
    home = two_runs["home"]
    sources = set()
    for run_id in two_runs["run_ids"]:
        report = home / "runs" / run_id / "report.html"
        assert report.stat().st_size < SMALL, report.stat().st_size
        (src,) = SCRIPT_SRC.findall(report.read_text())
        assert src == f"../../assets/{plotly_asset_name()}"
        assert (report.parent / src).resolve().is_file()
        sources.add(src)
    assert len(sources) == 1
    (asset,) = (home / "assets").iterdir()  # one copy, no partial files left over
    assert asset.read_text() == plotly_js()
    assert stat.S_IMODE(asset.stat().st_mode) & 0o022 == 0


def test_a_run_report_draws_its_plots_from_the_run_directory(
    two_runs: dict[str, Any], page: Watched
) -> None:
    report = two_runs["home"] / "runs" / two_runs["run_ids"][0] / "report.html"
    fetched: list[str] = []
    page.page.on("request", lambda r: fetched.append(r.url))
    page.page.goto(file_url(report))
    page.page.wait_for_function(
        "document.querySelectorAll('.figure .main-svg').length >= 4", timeout=30_000
    )
    assert page.errors == []
    assert page.page.evaluate("typeof Plotly") == "object"
    assert page.page.locator(".plotly").count() >= 4
    # Only the page itself and the shared asset: nothing from the network.
    assert all(url.startswith("file:") for url in fetched)
    assert any(url.endswith(plotly_asset_name()) for url in fetched)


def test_report_written_elsewhere_is_self_contained(two_runs: dict[str, Any]) -> None:
    out = two_runs["root"] / "elsewhere" / "report.html"
    out.parent.mkdir()
    run_id = two_runs["run_ids"][1]
    result = run_pilot("report", run_id, "--html", out, env=two_runs["env"])
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert not SCRIPT_SRC.search(text) and plotly_js() in text


def test_a_report_without_its_asset_says_so(tmp_path: Path, page: Watched) -> None:
    locations = locate(tmp_path / "monitoring.db")
    with Store(locations.db) as store:
        seed_run(store, locations.runs, "run-1", jobs=[
            {"name": "a", "label": "x", "state": "succeeded", "start": 0, "runtime": 1},
        ])  # fmt: skip
        report = locations.run_dir("run-1") / "report.html"
        report.parent.mkdir(parents=True, exist_ok=True)
        assert write_final_report(store, "run-1", report, assets=locations.assets) == report
    (locations.assets / plotly_asset_name()).unlink()

    page.page.goto(file_url(report))
    # The drawing script still runs (no uncaught error) and says what is missing.
    page.page.wait_for_selector("#figure-gantt:has-text('plotly.js was not found')")
    assert page.page.locator(".figure:has-text('plotly.js was not found')").count() == 4


def test_the_asset_is_written_once(tmp_path: Path) -> None:
    first = ensure_plotly_asset(tmp_path / "assets")
    written = first.stat().st_mtime_ns
    assert ensure_plotly_asset(tmp_path / "assets") == first
    assert first.stat().st_mtime_ns == written
    first.write_text("truncated")  # a damaged copy is replaced
    assert ensure_plotly_asset(tmp_path / "assets").read_text() == plotly_js()
    assert [p.name for p in (tmp_path / "assets").iterdir()] == [plotly_asset_name()]


def test_assets_sit_beside_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PILOT_DB", str(tmp_path / "shared" / "monitoring.db"))
    assert locate().assets == tmp_path / "home" / "assets"
    assert locate(tmp_path / "other" / "m.db").assets == tmp_path / "other" / "assets"
