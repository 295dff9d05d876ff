"""Small jobs are packed into bundles, and each keeps its own result, retries and logs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from helpers import run_pilot, write_workflow

from executor.store import Store, locate
from executor.store.queries import attempts_of


def _bundles(run_id: str, names: list[str]) -> Counter:
    """Bundle sizes: jobs of one bundle were handed to Parsl at the same instant."""
    with Store(locate().db) as store:
        submitted = [a["submitted"] for n in names for a in attempts_of(store, run_id, n)]
    return Counter(Counter(submitted).values())


def test_a_failing_job_does_not_fail_its_bundle_mates_and_is_retried(
    tmp_path: Path, pilot_home: Path
):
    flag = tmp_path / "failed-once"
    # `warm` teaches the driver how long label `t` takes; its 40 children are then
    # packed. One of them fails on its first attempt only.
    children = [{"name": f"t-{i}", "label": "t", "command": "true", "after": ["warm"]}
                for i in range(40)]  # fmt: skip
    children[7]["command"] = f"test -e {flag} || {{ touch {flag}; echo first >&2; exit 9; }}"
    children[7]["retries"] = 1
    path = write_workflow(tmp_path, {
        "name": "bundles", "jobs": [{"name": "warm", "label": "t", "command": "true"}, *children],
    })  # fmt: skip

    result = run_pilot("submit", path)

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    names = [c["name"] for c in children]
    sizes = _bundles(run_id, names)
    assert max(sizes) > 1, f"no job was packed: {sizes}"
    with Store(locate().db) as store:
        flaky = attempts_of(store, run_id, "t-7")
        first_bundle = [a for n in names for a in attempts_of(store, run_id, n)
                        if a["submitted"] == flaky[0]["submitted"]]  # fmt: skip
    assert [a["exit_code"] for a in flaky] == [9, 0]
    assert len(first_bundle) > 1  # it shared its first bundle...
    assert all(a["state"] == "succeeded" for a in first_bundle if a["job"] != "t-7")
    assert run_pilot("logs", run_id, "t-7", "--attempt", "1", "--stderr").stdout == "first\n"


def test_function_jobs_are_packed_and_cannot_disturb_each_other(tmp_path: Path, pilot_home: Path):
    (tmp_path / "isolation.py").write_text(
        "import os, sys\n"
        "STATE = 0\n"
        "def poison(i):\n"
        "    global STATE\n"
        "    STATE = i\n"
        "    os.environ['POISON'] = str(i)\n"
        "    sys.path.append('/poisoned')\n"
        "    os.chdir('/')\n"
        "    print('poisoned', i)\n"
        "def check(i):\n"
        "    print('checked', i)\n"
        "    return {'state': STATE, 'env': os.environ.get('POISON'), 'cwd': os.getcwd(),\n"
        "            'poisoned_path': '/poisoned' in sys.path}\n"
    )
    jobs = [{"name": "warm", "label": "f", "function": "isolation:check", "args": [0]}]
    for i in range(1, 31):
        which = "poison" if i % 2 else "check"
        jobs.append({"name": f"f-{i}", "label": "f", "function": f"isolation:{which}",
                     "args": [i], "after": ["warm"]})  # fmt: skip
    path = write_workflow(tmp_path, {"name": "functions", "jobs": jobs})

    result = run_pilot("submit", path)

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    assert max(_bundles(run_id, [j["name"] for j in jobs[1:]])) > 1
    with Store(locate().db) as store:
        for i in range(2, 31, 2):
            [attempt] = attempts_of(store, run_id, f"f-{i}")
            assert json.loads(attempt["result"]) == {
                "state": 0, "env": None, "cwd": str(tmp_path), "poisoned_path": False,
            }  # fmt: skip
    assert run_pilot("logs", run_id, "f-3").stdout == "poisoned 3\n"
    assert run_pilot("logs", run_id, "f-4").stdout == "checked 4\n"


def _first_bundle(run_id: str, names: list[str]) -> list[dict]:
    """The attempts of the run's first bundle (its jobs were handed to Parsl together)."""
    with Store(locate().db) as store:
        attempts = [a for n in names for a in attempts_of(store, run_id, n)]
    first = min(a["submitted"] for a in attempts)
    return [a for a in attempts if a["submitted"] == first]


def test_a_rerun_packs_from_its_first_submission(tmp_path: Path, pilot_home: Path):
    # No `warm` job: only an earlier run of the workflow can say that `t` is short.
    jobs = [{"name": f"t-{i}", "label": "t", "command": "true"} for i in range(40)]
    path = write_workflow(tmp_path, {"name": "rerun", "jobs": jobs})
    names = [j["name"] for j in jobs]

    runs = []
    for _ in range(2):
        result = run_pilot("submit", path)
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append(result.stdout.split()[1])

    assert len(_first_bundle(runs[0], names)) == 1  # runtimes unknown: one job to a bundle
    first = _first_bundle(runs[1], names)
    assert len(first) > 1, "the rerun did not start from the first run's runtimes"
    assert all(a["state"] == "succeeded" for a in first)
    assert len({a["block_id"] for a in first}) == 1  # one bundle: one pilot ran them all


def test_static_clustering_by_a_user_key(tmp_path: Path, pilot_home: Path):
    # Runtimes are unknown, so without clustering every job would run alone.
    jobs = [{"name": f"j-{i}", "label": "j", "command": "true", "cluster": f"visit{i % 2}"}
            for i in range(12)]  # fmt: skip
    path = write_workflow(tmp_path, {"name": "static", "cluster_by": "cluster",
                                     "cluster_max": 3, "jobs": jobs})  # fmt: skip

    result = run_pilot("submit", path)

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    with Store(locate().db) as store:
        submitted = {j["name"]: attempts_of(store, run_id, j["name"])[0]["submitted"] for j in jobs}
    bundles: dict[float, set[str]] = {}
    for name, when in submitted.items():
        bundles.setdefault(when, set()).add(name)
    assert sorted(len(b) for b in bundles.values()) == [3, 3, 3, 3]
    for bundle in bundles.values():
        assert len({int(name.split("-")[1]) % 2 for name in bundle}) == 1  # one visit each


def test_cancelling_stops_a_bundle_in_the_middle(tmp_path: Path, pilot_home: Path):
    import signal
    import subprocess
    import time

    from helpers import pilot_cmd, wait_for

    started = tmp_path / "started"
    jobs = [{"name": f"s-{i}", "label": "s", "command": f"echo {i} >> {started}; sleep 30"}
            for i in range(6)]  # fmt: skip
    path = write_workflow(tmp_path, {"name": "stop-bundle", "cluster_by": "label",
                                     "cluster_max": 6, "jobs": jobs})  # fmt: skip
    with subprocess.Popen(pilot_cmd("submit", path), stdout=subprocess.PIPE, text=True) as driver:
        run_id = driver.stdout.readline().split()[1]
        wait_for(lambda: started.exists(), what="the bundle's first job to start")
        began = time.monotonic()
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=60) == 130
    assert time.monotonic() - began < 20  # not the 6 × 30 s the bundle would take
    assert started.read_text().split() == ["0"]  # no later job of the bundle started
    with Store(locate().db) as store:
        attempts = {j["name"]: attempts_of(store, run_id, j["name"])[0] for j in jobs}
    assert {a["failure_class"] for a in attempts.values()} == {"cancelled"}
    assert attempts["s-0"]["start"] is not None
    assert all(attempts[f"s-{i}"]["start"] is None for i in range(1, 6))
