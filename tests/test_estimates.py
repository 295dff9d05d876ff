"""Runtime estimates carried over from earlier runs of a workflow (the store's side)."""

from __future__ import annotations

from pathlib import Path

import pytest
from seed import seed_run

from executor.store import Store
from executor.store import estimates as store_estimates
from executor.store.estimates import label_runtimes


def _seed(store: Store, root: Path, run_id: str, created: float, runtimes: dict, **kwargs):
    """A run whose jobs of each label succeeded in ``runtimes[label]`` seconds each."""
    jobs = [
        {"name": f"{label}-{i}", "label": label, "state": "succeeded", "start": i, "runtime": r}
        for label, values in runtimes.items()
        for i, r in enumerate(values)
    ]
    jobs += kwargs.pop("extra", [])
    seed_run(store, root, run_id, created=created, jobs=jobs or [_pending()], **kwargs)


def _pending() -> dict:
    return {"name": "p-0", "label": "x", "state": "pending"}


def test_estimates_come_from_the_newest_earlier_runs_of_the_same_workflow_and_owner(
    tmp_path: Path,
) -> None:
    root = tmp_path / "runs"
    with Store(tmp_path / "monitoring.db") as store:
        _seed(store, root, "oldest", 100, {"x": [99.0]})
        _seed(store, root, "older", 200, {"x": [1.0, 3.0]})
        failed = {"name": "y-9", "label": "y", "state": "failed", "start": 0, "runtime": 500.0}
        running = {"name": "y-8", "label": "y", "state": "running", "start": 0}
        _seed(store, root, "recent", 300, {"x": [2.0], "y": [4.0]}, extra=[failed, running])
        _seed(store, root, "theirs", 310, {"x": [50.0]}, owner="bob")
        _seed(store, root, "another", 320, {"x": [70.0]})
        store.write(lambda c: c.execute("UPDATE runs SET name = 'other' WHERE id = 'another'"))
        _seed(store, root, "this", 400, {})  # just started: nothing measured yet
        _seed(store, root, "later", 500, {"x": [1000.0]})

        # The two newest earlier runs of "seeded" by alice: succeeded attempts only.
        assert label_runtimes(store, "this", earlier=2) == {"x": 2.0, "y": 4.0}
        assert label_runtimes(store, "this", earlier=3) == {"x": (99 + 1 + 3 + 2) / 4, "y": 4.0}
        assert label_runtimes(store, "oldest") == {"x": 99.0}  # its own, nothing earlier
        assert label_runtimes(store, "no-such-run") == {}


def test_a_restart_starts_from_what_its_run_measured(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with Store(tmp_path / "monitoring.db") as store:
        _seed(store, root, "before", 100, {"x": [1.0]})
        _seed(store, root, "this", 200, {"x": [3.0], "z": [0.5, 1.5]})
        assert label_runtimes(store, "this") == {"x": 2.0, "z": 1.0}


def test_each_label_is_read_from_its_last_jobs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_estimates, "SAMPLE_PER_LABEL", 2)
    root = tmp_path / "runs"
    with Store(tmp_path / "monitoring.db") as store:
        _seed(store, root, "this", 100, {"x": [10.0, 10.0, 1.0, 3.0], "y": [5.0]})
        assert label_runtimes(store, "this") == {"x": 2.0, "y": 5.0}
