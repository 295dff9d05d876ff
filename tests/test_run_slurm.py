"""Runs on a real single-node Slurm cluster (``scripts/local-slurm.sh start``).

Each test runs the real ``pilot`` command; pilots are real ``sbatch`` jobs. After each
test no pilot is left in ``squeue``.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import pilot_cmd, run_pilot, status_json, wait_for, write_workflow
from slurm_cluster import attempts_of, pilot_jobs, slurm_queue_clean, write_site  # noqa: F401

pytestmark = pytest.mark.usefixtures("slurm_queue_clean")


def _submit(*args, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        pilot_cmd("submit", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip


def test_jobs_run_in_pilots_and_record_their_slurm_job(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    site = write_site(tmp_path, pool={"workers": 2, "max_blocks": 3})
    # More jobs than one pilot has workers, each long enough that pilots are added.
    jobs = [{"name": f"j{i}", "command": "echo $SLURM_JOB_ID; sleep 2"} for i in range(6)] + [
        {"name": "last", "command": "echo $SLURM_JOB_ID", "after": [f"j{i}" for i in range(6)]}
    ]
    path = write_workflow(tmp_path, {"name": "slurm-graph", "jobs": jobs})

    result = run_pilot("submit", path, "--site", site, env=subprocess_env, timeout=150)

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    status = status_json(run_id, env=subprocess_env)
    assert status["jobs"]["succeeded"] == 7
    pilots = {p["job_id"]: p for p in status["pilots"]}
    attempts = attempts_of(pilot_home, run_id)
    for attempt in attempts:
        # The job's own environment said which Slurm job it ran in.
        seen = Path(attempt["stdout"]).read_text().strip()
        assert seen == attempt["batch_job_id"] and seen in pilots, (attempt, pilots)
    used = {a["batch_job_id"] for a in attempts}
    assert len(used) >= 2, f"6 jobs of 2s on 2-worker pilots ran in one pilot: {used}"
    for pilot in pilots.values():
        assert pilot["state"] in ("scaled_in", "cancelled", "completed"), pilot
        assert pilot["end"] and pilot["cores"] == 2, pilot
        # A pilot the work no longer needed may be withdrawn before it started.
        assert (pilot["start"] and pilot["node"]) or pilot["state"] == "scaled_in", pilot
    assert all(pilots[job_id]["start"] for job_id in used)
    # exclusive: false adds no --exclusive; memory is 2 workers x 1GB.
    scripts = list((pilot_home / "runs" / run_id / "parsl").glob("*/submit_scripts/parsl.*[0-9]"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert "--exclusive" not in text and "#SBATCH --mem=2000M" in text
    shown = run_pilot("status", run_id, env=subprocess_env)
    assert "pilots" in shown.stdout and next(iter(pilots)) in shown.stdout


def test_scancel_of_a_pilot_retries_its_jobs_on_another(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    site = write_site(tmp_path, pool={"workers": 2, "init_blocks": 2, "max_blocks": 2})
    work = tmp_path / "work"
    jobs = [
        {"name": f"j{i}", "retries": 0,
         "command": 'echo $SLURM_JOB_ID > $PILOT_JOB_NAME.started; '
                    'if [ "$PILOT_ATTEMPT" = 1 ]; then sleep 20; fi'}
        for i in range(4)
    ]  # fmt: skip
    path = write_workflow(work, {"name": "lose-a-pilot", "jobs": jobs})
    with _submit(path, "--site", site, env=subprocess_env) as driver:
        run_id = driver.stdout.readline().split()[1]
        wait_for(lambda: len(list(work.glob("*.started"))) == 4, timeout=60, what="4 jobs running")
        victim = (work / "j0.started").read_text().strip()
        on_victim = {
            f.name.split(".")[0] for f in work.glob("*.started") if f.read_text().strip() == victim
        }
        subprocess.run(["scancel", victim], check=True, timeout=30)
        out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err
    attempts = attempts_of(pilot_home, run_id)
    for job in on_victim:
        first, second = [a for a in attempts if a["job"] == job]
        assert first["failure_class"] == "pilot_lost"
        assert second["state"] == "succeeded" and second["batch_job_id"] != victim
    pilots = {p["job_id"]: p for p in status_json(run_id, env=subprocess_env)["pilots"]}
    assert pilots[victim]["state"] in ("cancelled", "missing", "completed")


@pytest.mark.parametrize("how", ["pilot cancel", "ctrl-c"])
def test_cancel_leaves_no_pilot_in_the_queue(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict, how: str
):
    site = write_site(tmp_path, pool={"workers": 1, "init_blocks": 2, "max_blocks": 2})
    jobs = [{"name": f"long-{i}", "command": "touch $PILOT_JOB_NAME.on; sleep 300"} for i in (0, 1)]
    path = write_workflow(tmp_path / "work", {"name": "cancel-slurm", "jobs": jobs})
    with _submit(path, "--site", site, env=subprocess_env) as driver:
        run_id = driver.stdout.readline().split()[1]
        wait_for(lambda: len(list((tmp_path / "work").glob("*.on"))) == 2, what="jobs running")
        assert len(pilot_jobs()) == 2
        if how == "ctrl-c":
            driver.send_signal(signal.SIGINT)
        else:
            result = run_pilot("cancel", run_id, env=subprocess_env)
            assert result.returncode == 0, result.stderr
        assert driver.wait(timeout=60) == 130
    # The driver scancels its pilots before it exits; squeue may show them completing.
    wait_for(lambda: pilot_jobs() == [], timeout=20, what="squeue to have no pilot")
    assert status_json(run_id, env=subprocess_env)["state"] == "cancelled"


def test_walltime_expiry_drains_then_retries_without_using_retries(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    # One pilot at a time, one minute each, taking no new jobs after 30 s.
    site = write_site(tmp_path, walltime="1m", drain="30s", pool={"workers": 2, "max_blocks": 1})
    jobs = [
        # Outlives its first pilot; the second attempt is quick.
        {"name": "long", "retries": 0,
         "command": 'echo $SLURM_JOB_ID; if [ "$PILOT_ATTEMPT" = 1 ]; then sleep 300; fi'},
        {"name": "early", "command": "echo $SLURM_JOB_ID; sleep 35"},
        # Ready only after the first pilot started draining: must run in the next one.
        {"name": "late", "command": "echo $SLURM_JOB_ID", "after": ["early"]},
    ]  # fmt: skip
    path = write_workflow(tmp_path, {"name": "walltime", "jobs": jobs})

    result = run_pilot("submit", path, "--site", site, env=subprocess_env, timeout=200)

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    attempts = {(a["job"], a["attempt"]): a for a in attempts_of(pilot_home, run_id)}
    first_pilot = attempts["early", 1]["batch_job_id"]
    # A lost attempt never reported back; its own output says where it ran.
    lost_output = pilot_home / "runs" / run_id / "logs" / "long" / "attempt-1.out"
    assert lost_output.read_text().strip() == first_pilot
    assert attempts["long", 1]["failure_class"] == "pilot_lost"
    assert attempts["long", 2]["state"] == "succeeded"
    assert attempts["late", 1]["batch_job_id"] not in (None, first_pilot)
    pilots = {p["job_id"]: p for p in status_json(run_id, env=subprocess_env)["pilots"]}
    assert pilots[first_pilot]["state"] == "timeout"


def test_ping_on_a_wrong_partition_says_which_exist(tmp_path: Path, subprocess_env: dict):
    good = run_pilot("ping", write_site(tmp_path, "good"), env=subprocess_env)
    assert good.returncode == 0, good.stderr
    assert "sbatch --test-only" in good.stdout

    bad = run_pilot("ping", write_site(tmp_path, "bad", partition="nosuch"), env=subprocess_env)

    assert bad.returncode == 1
    assert "partition 'nosuch' does not exist" in bad.stderr
    assert "partitions: debug" in bad.stderr and "bad.yaml" in bad.stderr


def _queued(name_part: str) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--format=%i %j"], capture_output=True,
                         text=True, timeout=30, check=True).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if name_part in line]


def test_driver_on_a_batch_site_runs_the_driver_in_a_slurm_job(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    site = write_site(tmp_path, pool={"workers": 2, "max_blocks": 1})
    log = tmp_path / "done.log"
    jobs = [{"name": f"j{i}", "command": f"echo $SLURM_JOB_ID >> {log}"} for i in range(4)]
    path = write_workflow(tmp_path, {"name": "driver-on", "jobs": jobs})

    result = run_pilot("submit", path, "--site", site, "--detach", "--driver-on", site,
                       env=subprocess_env, timeout=60)  # fmt: skip

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    assert "batch job" in result.stderr
    attached = run_pilot("attach", run_id, env=subprocess_env, timeout=180)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    with sqlite3.connect(pilot_home / "monitoring.db") as conn:
        driver_job, pid = conn.execute(
            "SELECT driver_job, pid FROM runs WHERE id = ?", [run_id]
        ).fetchone()
    assert driver_job and pid  # the batch job started and named itself the driver
    pilots = {line.strip() for line in log.read_text().splitlines()}
    assert pilots and driver_job not in pilots  # jobs ran in pilots, not in the driver's job
    wait_for(lambda: not _queued(f"pilot-driver-{run_id}"), timeout=30, what="driver job gone")


def test_cancel_of_a_queued_driver_takes_it_out_of_the_queue(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    # A driver job that cannot start yet (it asks for a node's every core, held meanwhile).
    holder = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=8", "--output=/dev/null",
                             "--wrap=sleep 120"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    try:
        site = write_site(tmp_path)
        path = write_workflow(
            tmp_path, {"name": "queued", "jobs": [{"name": "a", "command": "true"}]}
        )
        result = run_pilot("submit", path, "--detach", "--driver-on", site, env=subprocess_env)
        assert result.returncode == 0, result.stderr
        run_id = result.stdout.split()[1]
        assert status_json(run_id, env=subprocess_env)["state"] == "running"
        assert _queued(f"pilot-driver-{run_id}")

        cancelled = run_pilot("cancel", run_id, env=subprocess_env)

        assert cancelled.stdout.strip() == f"run {run_id}: cancelled", cancelled.stderr
        wait_for(lambda: not _queued(f"pilot-driver-{run_id}"), timeout=30, what="no driver job")
    finally:
        subprocess.run(["scancel", holder], check=False)


def test_out_of_memory_in_a_slurm_pilot_is_retried_with_more_memory_in_a_larger_pool(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    site = write_site(tmp_path, pools={
        "small": {"cores": 1, "memory": "200MB", "workers": 2, "max_blocks": 1},
        "large": {"cores": 1, "memory": "1GB", "workers": 1, "init_blocks": 0, "max_blocks": 1},
    })  # fmt: skip
    hog = "python3 -c 'import time; x = bytearray(400 * 1000 * 1000); time.sleep(1)'"
    path = write_workflow(tmp_path, {"name": "slurm-oom", "jobs": [
        {"name": "hog", "command": hog, "memory": "150MB", "memory_multiplier": 4, "retries": 1},
        {"name": "neighbour", "command": "sleep 2; echo fine", "memory": "100MB"},
    ]})  # fmt: skip

    result = run_pilot("submit", path, "--site", site, env=subprocess_env, timeout=150)

    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.split()[1]
    attempts = {(a["job"], a["attempt"]): a for a in attempts_of(pilot_home, run_id)}
    assert attempts[("hog", 1)]["failure_class"] == "out_of_memory"
    assert (attempts[("hog", 1)]["pool"], attempts[("hog", 2)]["pool"]) == ("small", "large")
    assert attempts[("hog", 2)]["state"] == "succeeded"
    assert attempts[("neighbour", 1)]["state"] == "succeeded"
    # Each pool's attempts ran in a Slurm pilot of its own.
    assert attempts[("hog", 1)]["batch_job_id"] != attempts[("hog", 2)]["batch_job_id"]


def test_shipped_code_reaches_a_slurm_pilot_with_the_bundles(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
):
    package = tmp_path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mypkg.b import g\n\n\ndef f(x):\n    return g(x)\n")
    (package / "b.py").write_text("def g(x):\n    return x * 3\n")
    # As at a site whose nodes do not see the run directory: the bytes go with the bundles.
    site = write_site(tmp_path, shared_filesystem=False, ship_runtime=True)
    path = write_workflow(tmp_path / "src", {
        "name": "slurm-shipped",
        "code": ["./mypkg"],
        "jobs": [{"name": f"f{i}", "function": "mypkg.a:f", "args": [i]} for i in range(3)],
    })  # fmt: skip
    env = {**subprocess_env, "PILOT_CACHE": str(tmp_path / "node-cache")}

    result = run_pilot("submit", path, "--site", site, env=env, cwd=tmp_path, timeout=150)

    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[1]
    results = {a["job"]: a["result"] for a in attempts_of(pilot_home, run_id)}
    assert results == {"f0": "0", "f1": "3", "f2": "6"}
    assert all(a["batch_job_id"] for a in attempts_of(pilot_home, run_id))


# The pilot's worker pool: the process that started the job's worker (the job's parent).
_POOL_COMMAND = "tr '\\0' ' ' < /proc/$(ps -o ppid= -p $PPID | tr -d ' ')/cmdline"


@pytest.mark.parametrize("pool_elsewhere", [False, True], ids=["own-pool", "other-pool"])
def test_a_slurm_pool_boots_lean_only_when_the_node_runs_the_drivers_own_pool_script(
    tmp_path: Path, subprocess_env: dict, pilot_home: Path, pool_elsewhere: bool
):
    """A pool started through `executor.worker.lean_parsl` skips Parsl's unused
    imports (seconds of each pilot's allocation); a node whose `worker_init` puts
    another `process_worker_pool.py` first runs that one, as it would have."""
    init = ""
    if pool_elsewhere:
        other = tmp_path / "other-bin"
        other.mkdir()
        real = subprocess.run(
            ["bash", "-c", "command -v process_worker_pool.py"], env=subprocess_env,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        wrapper = other / "process_worker_pool.py"
        wrapper.write_text(f'#!/bin/bash\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
        init = f"export PATH={other}:$PATH"
    site = write_site(tmp_path, worker_init=init)
    path = write_workflow(
        tmp_path, {"name": "lean", "jobs": [{"name": "j", "command": _POOL_COMMAND}]}
    )

    result = run_pilot("submit", path, "--site", site, env=subprocess_env, timeout=150)

    assert result.returncode == 0, result.stderr
    [attempt] = attempts_of(pilot_home, result.stdout.split()[1])
    pool = Path(attempt["stdout"]).read_text()
    assert "process_worker_pool.py" in pool, pool
    assert ("executor.worker.lean_parsl" in pool) is not pool_elsewhere, pool
