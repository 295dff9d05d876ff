"""Shared fixtures: an isolated PILOT_HOME per test, and a marker for slow tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import browser, page  # noqa: F401 - the headless Chromium fixtures


def pytest_collection_modifyitems(items):
    # Files named test_run_* start real Parsl executors.
    for item in items:
        if Path(str(item.fspath)).name.startswith("test_run_"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def pilot_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private PILOT_HOME, so tests never touch the user's runs or each other's."""
    home = tmp_path / "pilot-home"
    monkeypatch.setenv("PILOT_HOME", str(home))
    monkeypatch.delenv("PILOT_DB", raising=False)
    return home


@pytest.fixture
def subprocess_env(pilot_home: Path) -> dict:
    env = dict(os.environ)
    env["PILOT_HOME"] = str(pilot_home)
    env.pop("PILOT_DB", None)
    return env
