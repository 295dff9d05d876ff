"""Per-job resources on the local site: pools, memory enforcement, retry policy."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import yaml
from helpers import run_pilot, status_json, write_workflow

from executor.store import Store, locate
from executor.store.queries import attempts_of, job_states

HOG = "python3 -c 'import time; x = bytearray({mb} * 1000 * 1000); time.sleep(1)'"


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "two-pools.yaml"
    site.write_text(yaml.safe_dump({
        "backend": "local",
        "memory_tolerance": 0.1,
        "pools": {
            "small": {"cores": 1, "memory": "200MB", "workers": 2, "max_blocks": 1},
            "large": {"cores": 1, "memory": "2GB", "workers": 1, "init_blocks": 0,
                      "max_blocks": 1},
        },
    }))  # fmt: skip
    return site


def test_out_of_memory_is_killed_and_retried_with_more_memory_in_a_larger_pool(
    tmp_path: Path, pilot_home: Path
):
    path = write_workflow(tmp_path, {
        "name": "oom",
        "jobs": [
            {"name": "hog", "command": HOG.format(mb=400), "memory": "150MB",
             "memory_multiplier": 4, "retries": 1},
            # Shares the small pool's pilot with the hog's first attempt.
            {"name": "neighbour", "command": "sleep 2; echo fine", "memory": "100MB"},
        ],
    })  # fmt: skip

    result = run_pilot("submit", path, "--site", _site(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        hog = attempts_of(store, run_id, "hog")
        [neighbour] = attempts_of(store, run_id, "neighbour")
    assert [a["failure_class"] for a in hog] == ["out_of_memory", None]
    assert [a["pool"] for a in hog] == ["small", "large"]
    assert [a["memory_mb"] for a in hog] == [150, 600]
    assert hog[0]["peak_rss_mb"] > 165  # over the request plus its 10% tolerance
    assert hog[0]["end"] - hog[0]["start"] < 1  # killed long before the 1 s sleep ended
    assert hog[1]["peak_rss_mb"] >= 400
    assert hog[1]["cpu_seconds"] > 0
    assert neighbour["state"] == "succeeded" and neighbour["pool"] == "small"
    assert run_pilot("logs", run_id, "neighbour").stdout == "fine\n"
    report = json.loads(run_pilot("report", run_id, "--json").stdout)
    assert report["usage"]["hog"]["attempts"] == 2
    assert report["usage"]["hog"]["peak_memory_mb"]["max"] >= 400
    # The report shows the OOM kill the retry recovered from, in text, JSON and HTML.
    assert report["failed"] == []
    assert report["retries"]["labels"]["hog"] == {
        "attempts": 2, "failed": 1, "by_class": {"out_of_memory": 1}, "recovered": 1,
    }  # fmt: skip
    [retried] = report["retries"]["jobs"]
    [oom] = retried["failed_attempts"]
    assert (retried["job"], retried["recovered"], oom["attempt"], oom["memory_mb"]) == (
        "hog", True, 1, 150,
    )  # fmt: skip
    assert oom["failure_class"] == "out_of_memory" and oom["peak_rss_mb"] > 165
    [group] = report["failure_groups"]
    assert (group["failure_class"], group["count"], group["recovered_jobs"]) == (
        "out_of_memory", 0, ["hog"],
    )  # fmt: skip
    text = run_pilot("report", run_id, env={**os.environ, "COLUMNS": "200"}).stdout
    assert "hog: attempts: 2 (1 failed: 1 out_of_memory; recovered 1)" in text
    assert "hog  label hog  succeeded on attempt 2 (recovered)" in text
    assert re.search(r"attempt 1: out_of_memory, signal \d+ \(SIG\w+\), 150MB requested", text)
    assert "out_of_memory: 1 job(s), 1 recovered: hog (recovered)" in text
    html = (pilot_home / "runs" / run_id / "report.html").read_text()
    assert "attempts: 2 (1 failed: 1 out_of_memory; recovered 1)" in html
    assert "1 × out_of_memory</span> in label hog" in html
    assert re.search(r"<td>hog</td>.*?<td class=\"n\">1</td><td>out_of_memory</td>", html)


def test_jobs_go_to_the_smallest_pool_that_fits(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "routing",
        "jobs": [
            {"name": "tiny", "command": "true"},
            {"name": "medium", "command": "true", "memory": "200MB"},
            {"name": "big", "command": "true", "memory": "1GB"},
        ],
    })  # fmt: skip
    site = _site(tmp_path)

    listing = json.loads(run_pilot("validate", path, "--site", site, "--json").stdout)
    result = run_pilot("submit", path, "--site", site)

    assert listing["pools"] == {"tiny": {"small": 1}, "medium": {"small": 1}, "big": {"large": 1}}
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        pools = {
            job: attempts_of(store, run_id, job)[0]["pool"] for job in ("tiny", "medium", "big")
        }
    assert pools == {"tiny": "small", "medium": "small", "big": "large"}


def test_a_job_that_fits_no_pool_is_bad_input(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "too-big", "jobs": [{"name": "whale", "command": "true", "memory": "64GB"}],
    })  # fmt: skip

    result = run_pilot("submit", path, "--site", _site(tmp_path))

    assert result.returncode == 2
    assert "whale" in result.stderr and "large (1 core(s), 2.0GB per worker)" in result.stderr
    assert status_json()["runs"] == []


def test_retry_unless_exit_stops_retries(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "unless",
        "defaults": {"retries": 3, "retry_unless_exit": [3]},
        "jobs": [
            {"name": "fatal", "command": "exit 3"},
            {"name": "flaky", "command": "exit 4"},
        ],
    })  # fmt: skip

    result = run_pilot("submit", path)

    assert result.returncode == 1
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        assert len(attempts_of(store, run_id, "fatal")) == 1
        assert len(attempts_of(store, run_id, "flaky")) == 4


def test_abort_on_exit_stops_the_whole_run(tmp_path: Path, pilot_home: Path):
    path = write_workflow(tmp_path, {
        "name": "abort",
        "jobs": [
            {"name": "long", "command": "sleep 300"},
            {"name": "boom", "command": "sleep 1; exit 42", "abort_on_exit": 42, "retries": 2},
            {"name": "after-long", "command": "true", "after": ["long"]},
        ],
    })  # fmt: skip

    started = time.monotonic()
    result = run_pilot("submit", path)

    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 60
    run_id = result.stdout.split()[1]
    status = status_json(run_id)
    assert status["state"] == "failed"
    assert "abort" in status["message"] and "boom" in status["message"]
    with Store(locate().db) as store:
        states = job_states(store, run_id)
        assert len(attempts_of(store, run_id, "boom")) == 1
    assert states == {"long": "cancelled", "boom": "failed", "after-long": "cancelled"}
