"""Elastic pilots on a real single-node Slurm cluster: up for a wide level, down for a tail.

``squeue`` is watched from a thread while the real ``pilot submit`` runs: the pilots
in the queue are counted as the graph widens and narrows. The cluster has 8 CPUs and
each pilot asks for 2, so up to 4 pilots fit at once.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import pilot_cmd, run_pilot, status_json, wait_for, write_workflow
from slurm_cluster import attempts_of, pilot_jobs, slurm_queue_clean, write_site  # noqa: F401

pytestmark = pytest.mark.usefixtures("slurm_queue_clean")


class QueueWatch:
    """Counts pilot jobs in ``squeue`` every half second, in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), len(pilot_jobs())))
            self._stop.wait(0.5)

    def now(self) -> int:
        return len(pilot_jobs())

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max((n for t, n in self.samples if since <= t <= until), default=0)


def test_pilots_go_up_for_a_wide_level_and_down_for_the_tail(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    # One worker per pilot, so the width of the graph is the number of pilots wanted.
    site = write_site(
        tmp_path, idle_timeout="5s", queue_wait=0, max_queued=4,
        pool={"workers": 1, "init_blocks": 1, "min_blocks": 0, "max_blocks": 4},
    )  # fmt: skip
    work = tmp_path / "work"
    wide = [{"name": f"w{i}", "command": "sleep 15"} for i in range(8)]
    tail = {
        "name": "tail", "after": [job["name"] for job in wide],
        "command": "touch tail.started; sleep 30",
    }  # fmt: skip
    path = write_workflow(work, {"name": "wide-then-tail", "jobs": [*wide, tail]})

    with QueueWatch() as watch:
        driver = subprocess.Popen(
            pilot_cmd("submit", path, "--site", site), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=subprocess_env, start_new_session=True,
        )  # fmt: skip
        try:
            run_id = driver.stdout.readline().split()[1]
            # The wide level: 8 ready jobs of unknown runtime want every pilot allowed.
            wait_for(lambda: watch.peak() >= 3, timeout=90, what="3 or more pilots up")
            wait_for(lambda: (work / "tail.started").exists(), timeout=180, what="the tail")
            tail_started = time.time()
            # The tail: one job, so the idle pilots go (idle_timeout 5s), one stays.
            wait_for(lambda: watch.now() == 1, timeout=25, what="one pilot during the tail")
            out, err = driver.communicate(timeout=120)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, err
    assert watch.peak(until=tail_started) >= 3
    assert watch.peak(since=tail_started + 20) <= 1, watch.samples

    pilots = status_json(run_id, env=subprocess_env)["pilots"]
    assert any(p["state"] == "scaled_in" for p in pilots), pilots
    report = run_pilot("report", run_id, "--json", env=subprocess_env)
    assert report.returncode == 0, report.stderr
    efficiency = json.loads(report.stdout)["efficiency"]
    assert efficiency["allocated_core_seconds"] > efficiency["busy_core_seconds"] > 0
    assert efficiency["waste_core_seconds"] >= 0 and efficiency["makespan"] > 45


def test_start_locally_runs_the_first_jobs_while_the_pilots_queue(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    # Pilots cannot start for 40 s (sbatch --begin), so the first jobs run on this host.
    site = write_site(
        tmp_path, start_locally=2, scheduler_options="#SBATCH --begin=now+40",
        pool={"workers": 2, "init_blocks": 1, "max_blocks": 1},
    )  # fmt: skip
    work = tmp_path / "work"
    jobs = [
        {"name": f"j{i}", "command": "echo ${SLURM_JOB_ID:-here} > $PILOT_JOB_NAME.where; sleep 10"}
        for i in range(10)
    ]  # fmt: skip
    path = write_workflow(work, {"name": "impatient", "jobs": jobs})

    result = run_pilot("submit", path, "--site", site, env=subprocess_env, timeout=240)

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    where = {f.name.split(".")[0]: f.read_text().strip() for f in work.glob("*.where")}
    here = [job for job, place in where.items() if place == "here"]
    in_pilots = [job for job, place in where.items() if place != "here"]
    assert len(where) == 10 and here and in_pilots, where
    pilots = status_json(run_id, env=subprocess_env)["pilots"]
    batch = [p for p in pilots if p["pool"] == "default" and p["start"]]
    assert batch, pilots
    first_pilot_start = min(p["start"] for p in batch)
    attempts = {a["job"]: a for a in attempts_of(pilot_home, run_id)}
    # The local jobs started (and the first of them ended) before any pilot started.
    assert min(attempts[job]["start"] for job in here) < first_pilot_start
    assert min(attempts[job]["end"] for job in here) < first_pilot_start
    # Once the pilot had its workers, the local ones took no more work and were released.
    last_in_a_pilot = max(attempts[job]["start"] for job in in_pilots)
    assert all(attempts[job]["start"] < last_in_a_pilot for job in here)
    local = [p for p in pilots if p["pool"] == "start-locally"]
    assert len(local) == 1 and local[0]["state"] in ("scaled_in", "cancelled", "completed"), local
