"""Each job's final failure printed as it happens, by `pilot submit` and `pilot attach`
(issue 19 item 7): one line with the job, how it failed and its log, before the summary."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import pilot_cmd, run_pilot, write_workflow

WORKFLOW = {
    "name": "one-fails",
    "defaults": {"retries": 0},
    "jobs": [
        {"name": "fine", "command": "true"},
        {"name": "bad", "command": "echo oops >&2; exit 3"},
        {"name": "after-bad", "command": "true", "after": ["bad"]},
    ],
}
LINE = re.compile(r"^FAILED bad \(label \S+, attempt 1\): exit code 3; log (?P<log>\S+)$")


def _merged(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `pilot` with stderr into stdout, so the order of their lines is kept."""
    return subprocess.run(
        pilot_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip


def _failure_line(lines: list[str]) -> int:
    found = [index for index, line in enumerate(lines) if LINE.match(line)]
    assert len(found) == 1, lines
    log = Path(LINE.match(lines[found[0]])["log"])  # type: ignore[index]
    assert log.read_text() == "oops\n"
    return found[0]


def test_submit_prints_a_failure_as_it_happens_before_the_summary(
    tmp_path: Path, pilot_home: Path
) -> None:
    path = write_workflow(tmp_path, WORKFLOW)
    result = _merged("submit", str(path))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("failed: "))
    assert _failure_line(lines) < summary
    assert lines[summary].startswith("failed: 1 succeeded, 1 failed, 1 blocked in ")


def test_attach_prints_the_failures_of_a_detached_run(tmp_path: Path, pilot_home: Path) -> None:
    path = write_workflow(tmp_path, WORKFLOW)
    started = run_pilot("submit", path, "--detach")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[1]
    result = _merged("attach", run_id)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("failed: "))
    assert _failure_line(lines) < summary
