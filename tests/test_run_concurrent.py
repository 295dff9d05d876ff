"""Two runs at once, from two terminals, share one database without errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import pilot_cmd, run_pilot, write_workflow


def test_two_concurrent_runs_share_one_database(tmp_path: Path, pilot_home: Path):
    db = tmp_path / "shared" / "monitoring.db"
    paths = [
        write_workflow(
            tmp_path / f"wf{n}",
            {
                "name": f"parallel-{n}",
                "jobs": [{"name": f"job-{i}", "command": "true"} for i in range(40)]
                + [{"name": "last", "command": "true", "after": [f"job-{i}" for i in range(40)]}],
            },
        )  # fmt: skip
        for n in range(2)
    ]
    drivers = [
        subprocess.Popen(pilot_cmd("submit", p, "--db", db), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for p in paths
    ]  # fmt: skip
    outputs = [d.communicate(timeout=180) for d in drivers]

    for driver, (_, err) in zip(drivers, outputs, strict=True):
        assert driver.returncode == 0, err
        assert "database is locked" not in err
    runs = json.loads(run_pilot("status", "--json", "--db", db).stdout)["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["state"] == "succeeded"
        assert run["jobs"]["succeeded"] == 41
