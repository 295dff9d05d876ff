"""A run of small jobs as a user sees it: logs only where jobs wrote something, `pilot
logs` of an empty log prints nothing, and the first pilot starts with the interchange."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_pilot, write_workflow


def test_empty_logs_are_never_created_and_read_as_empty(tmp_path: Path, pilot_home: Path):
    jobs = [
        {"name": "quiet", "command": "true"},
        {"name": "loud", "command": "bash -c 'echo problem >&2'"},
        {"name": "chatty", "command": "echo hello", "after": ["quiet"]},
    ]
    path = write_workflow(tmp_path, {"name": "logs", "jobs": jobs})

    result = run_pilot("submit", path)

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    run_dir = pilot_home / "runs" / run_id
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["chatty", "loud"]
    assert [p.name for p in (run_dir / "logs" / "loud").iterdir()] == ["attempt-1.err"]
    assert [p.name for p in (run_dir / "logs" / "chatty").iterdir()] == ["attempt-1.out"]
    shown = {
        (job, which): run_pilot("logs", run_id, job, *(["--stderr"] if which == "err" else []))
        for job in ("quiet", "loud", "chatty")
        for which in ("out", "err")
    }
    assert {key: (r.returncode, r.stdout) for key, r in shown.items()} == {
        ("quiet", "out"): (0, ""), ("quiet", "err"): (0, ""),
        ("loud", "out"): (0, ""), ("loud", "err"): (0, "problem\n"),
        ("chatty", "out"): (0, "hello\n"), ("chatty", "err"): (0, ""),
    }  # fmt: skip
    followed = run_pilot("logs", run_id, "quiet", "-f")
    assert (followed.returncode, followed.stdout) == (0, "")
    listed = {j["job"]: j for j in json.loads(run_pilot("jobs", run_id, "--json").stdout)["jobs"]}
    assert listed["quiet"]["stdout"] is None and listed["quiet"]["stderr"] is None
    assert listed["loud"]["stderr"] == str(run_dir / "logs" / "loud" / "attempt-1.err")
    assert (run_dir / "report.html").is_file()

    # The pool was launched before the interchange had answered: they booted together.
    parsl_log = (run_dir / "parsl" / "parsl.log").read_text()
    assert parsl_log.index("Allocated block ID 0") < parsl_log.index("Interchange process started")
