"""Runs on the globus_compute backend, through the Globus Compute stand-in.

The real client code runs (Parsl's GlobusComputeExecutor, the SDK's Executor, Batch and
serializer); only the service and the endpoints are stand-ins (tests/globus_standin.py):
their workers run as another Unix user, with no access to the driver's files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("globus_compute_sdk")

from globus_standin import (  # noqa: E402 - after the skip
    REMOTE_USER,
    SERVICE_VARIABLE,
    StandinEndpoint,
)
from helpers import run_pilot, write_workflow  # noqa: E402

import executor  # noqa: E402
from executor.model.states import RunState  # noqa: E402
from executor.sites.globus_journal import JOURNAL, read_journal  # noqa: E402

if os.geteuid() != 0:
    pytest.skip(
        "the stand-in runs its workers as another user: needs root", allow_module_level=True
    )

HERE = Path(__file__).resolve().parent


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "globus-service"
    monkeypatch.setenv(SERVICE_VARIABLE, str(root))
    return root


@pytest.fixture
def endpoint(service: Path):
    with StandinEndpoint(service, workers=2) as started:
        yield started


@pytest.fixture
def env(subprocess_env: dict, service: Path) -> dict:
    """The environment of `pilot` commands: the stand-in importable, its service named."""
    path = [str(HERE), subprocess_env.get("PYTHONPATH", "")]
    return {
        **subprocess_env,
        SERVICE_VARIABLE: str(service),
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
    }


def write_site(directory: Path, endpoint_id, **options) -> Path:
    data = {
        "backend": "globus_compute",
        "endpoint_id": endpoint_id,
        "executor_factory": "globus_standin:make_executor",
        "endpoint_check_interval": 0.5,
        **options,
    }
    path = directory / "globus-test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def user_code(root: Path) -> Path:
    """``mypkg.stats:summarize`` imports ``mypkg.helper``: the whole package must travel."""
    package = root / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (package / "stats.py").write_text(
        "import os\nfrom mypkg.helper import double\n\n\ndef summarize(x):\n"
        "    print('summarizing', x)\n"
        "    return {'value': double(x), 'uid': os.getuid()}\n"
    )
    return package


def journal(run_dir: Path) -> list[dict]:
    lines = (run_dir / "parsl" / JOURNAL).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run_id_of(result) -> str:
    first = result.stdout.splitlines()[0]
    assert first.startswith("run "), result.stdout + result.stderr
    return first.split()[1]


def test_shell_and_function_jobs_complete_on_an_endpoint(
    tmp_path: Path, pilot_home: Path, endpoint: StandinEndpoint
):
    import pwd

    user_code(tmp_path)
    workflow = write_workflow(
        tmp_path,
        {
            "name": "globus-demo",
            "code": ["./mypkg"],
            "jobs": [
                {"name": "hello", "command": "echo hello from $(id -un) in $PWD"},
                {
                    "name": "sum",
                    "function": "mypkg.stats:summarize",
                    "args": [21],
                    "after": ["hello"],
                },
            ],  # fmt: skip
        },
    )
    site = write_site(tmp_path, endpoint.endpoint_id)
    result = executor.run(str(workflow), site=str(site))
    assert result.state == RunState.SUCCEEDED, result
    assert result.values["sum"] == {"value": 42, "uid": pwd.getpwnam(REMOTE_USER).pw_uid}
    hello = (result.run_dir / "logs" / "hello" / "attempt-1.out").read_text()
    # Run remotely, in the bundle's scratch directory on the endpoint, and logged here.
    assert hello.startswith(f"hello from {REMOTE_USER} in {endpoint.home}")
    assert "pilot-bundle-" in hello
    assert (result.run_dir / "logs" / "sum" / "attempt-1.out").read_text() == "summarizing 21\n"


def test_a_detached_run_completes_on_an_endpoint_and_reports(
    tmp_path: Path, env: dict, endpoint: StandinEndpoint
):
    from helpers import status_json, wait_for

    jobs = [{"name": f"echo-{i}", "command": f"echo {i}"} for i in range(3)]
    workflow = write_workflow(tmp_path, {"name": "detached-globus", "jobs": jobs})
    site = write_site(tmp_path, endpoint.endpoint_id)
    submitted = run_pilot("submit", workflow, "--site", site, "--detach", env=env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    run_id = run_id_of(submitted)
    wait_for(
        lambda: status_json(run_id, env=env)["state"] != "running",
        timeout=120, what="the detached driver to finish",
    )  # fmt: skip
    status = status_json(run_id, env=env)
    assert status["state"] == "succeeded" and status["jobs"]["succeeded"] == 3, status
    assert run_pilot("logs", run_id, "echo-2", env=env).stdout.strip() == "2"
    report = run_pilot("report", run_id, env=env)
    assert report.returncode == 0 and "echo" in report.stdout, report.stderr


def test_one_failing_job_in_a_bundle_leaves_the_others_results_and_its_remote_stderr(
    tmp_path: Path, env: dict, endpoint: StandinEndpoint
):
    jobs = [{"name": f"ok-{i}", "command": f"echo fine {i}", "label": "work"} for i in range(5)]
    jobs.insert(2, {"name": "bad", "command": "echo oops from $(id -un) >&2; exit 3",
                    "label": "work"})  # fmt: skip
    # Measured on the endpoint: its peak memory and runtime come back with its outcome.
    hold = "import time; block = bytearray(60_000_000); time.sleep(1.5)"
    jobs.append({"name": "measured", "label": "big", "command": ["python3", "-c", hold]})
    # One bundle of the six `work` jobs: clustered by label.
    workflow = write_workflow(
        tmp_path, {"name": "partial", "cluster_by": "label", "cluster_max": 6, "jobs": jobs}
    )
    site = write_site(tmp_path, endpoint.endpoint_id)
    submitted = run_pilot("submit", workflow, "--site", site, env=env, cwd=tmp_path, timeout=300)
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    run_id = run_id_of(submitted)
    states = json.loads(run_pilot("status", run_id, "--json", env=env).stdout)["jobs"]
    assert states == {**states, "succeeded": 6, "failed": 1}
    listed = json.loads(run_pilot("jobs", run_id, "--json", env=env).stdout)["jobs"]
    measured = next(job for job in listed if job["job"] == "measured")
    assert measured["peak_rss_mb"] >= 60 and measured["runtime"] >= 1.5, measured

    run_dir = Path(env["PILOT_HOME"]) / "runs" / run_id
    bundles = [r["members"] for r in journal(run_dir) if r["event"] == "sent"]
    shared = next(m for m in bundles if ["bad", 1] in m)
    assert len(shared) == 6  # the failing job had bundle-mates, and they succeeded

    logs = run_pilot("logs", run_id, "bad", "--stderr", env=env)
    assert logs.returncode == 0 and logs.stdout == f"oops from {REMOTE_USER}\n"
    mate = next(name for name, _ in shared if name != "bad")
    assert run_pilot("logs", run_id, mate, env=env).stdout.startswith("fine ")


def test_a_log_longer_than_the_tail_says_what_was_cut(
    tmp_path: Path, env: dict, endpoint: StandinEndpoint
):
    workflow = write_workflow(
        tmp_path, {"name": "chatty", "jobs": [{"name": "chatty", "command": "seq 1 20000"}]}
    )
    site = write_site(tmp_path, endpoint.endpoint_id, log_tail_bytes=2000)
    submitted = run_pilot("submit", workflow, "--site", site, env=env, cwd=tmp_path, timeout=300)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    shown = run_pilot("logs", run_id_of(submitted), "chatty", env=env).stdout
    whole = "".join(f"{i}\n" for i in range(1, 20001))
    header, _, kept = shown.partition("\n")
    assert header == (
        f"[pilot: {len(whole) - 2000} earlier bytes of this log were cut on the endpoint; "
        "the last 2000 are kept]"
    )
    assert whole.endswith(kept) and kept.endswith("20000\n")


def test_code_over_the_payload_limit_travels_in_chunks(
    tmp_path: Path, env: dict, endpoint: StandinEndpoint
):
    """12 MB of incompressible data cannot go in one 10 MB task: it goes in chunks,
    each task within the stand-in's limit (which refuses larger ones with HTTP 413)."""
    package = tmp_path / "bigpkg"
    package.mkdir()
    blob = os.urandom(12_000_000)
    (package / "blob.bin").write_bytes(blob)
    (package / "__init__.py").write_text("")
    (package / "check.py").write_text(
        "import hashlib, pathlib\n\n\ndef digest():\n"
        "    return hashlib.sha256((pathlib.Path(__file__).parent / 'blob.bin').read_bytes())"
        ".hexdigest()\n"
    )
    workflow = write_workflow(
        tmp_path,
        {"name": "big", "code": ["./bigpkg"],
         "jobs": [{"name": "digest", "function": "bigpkg.check:digest"}]},
    )  # fmt: skip
    site = write_site(tmp_path, endpoint.endpoint_id)
    submitted = run_pilot("submit", workflow, "--site", site, env=env, cwd=tmp_path, timeout=600)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    run_dir = Path(env["PILOT_HOME"]) / "runs" / run_id_of(submitted)
    sends = [r for r in journal(run_dir) if r["event"] == "sent"]
    assert len(sends) >= 3  # the first send and resends with the missing chunks
    assert {tuple(m) for r in sends for m in r["members"]} == {("digest", 1)}
    from executor.store import Store, locate
    from executor.store.queries import attempts_of

    with Store(locate(Path(env["PILOT_HOME"]) / "monitoring.db").db) as store:
        result = json.loads(attempts_of(store, run_dir.name, "digest")[-1]["result"])
    import hashlib

    assert result == hashlib.sha256(blob).hexdigest()


def test_an_endpoint_that_stops_answering_leaves_the_rotation_and_its_jobs_run_elsewhere(
    tmp_path: Path, env: dict, service: Path
):
    with StandinEndpoint(service) as good, StandinEndpoint(service) as gone:
        gone.pause()  # it takes tasks from the service no more, and sends no heartbeat
        jobs = [{"name": f"job-{i}", "command": f"echo {i}"} for i in range(6)]
        workflow = write_workflow(tmp_path, {"name": "rotation", "jobs": jobs})
        site = write_site(
            tmp_path, {good.endpoint_id: 1, gone.endpoint_id: 1}, endpoint_timeout=2,
            packing_target=0,
        )  # fmt: skip
        submitted = run_pilot(
            "submit", workflow, "--site", site, env=env, cwd=tmp_path, timeout=300
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        # Looked at before the endpoint resumes (to be stopped) and takes its queue.
        queued = {p.stem for p in (service / "queue" / gone.endpoint_id).glob("*.json")}
    run_dir = Path(env["PILOT_HOME"]) / "runs" / run_id_of(submitted)
    sends = [r for r in journal(run_dir) if r["event"] == "sent"]
    to_gone = [r for r in sends if r["endpoint_id"] == gone.endpoint_id]
    assert to_gone, "the weights sent some bundles to the endpoint that stopped answering"
    for sent in to_gone:  # each went again, to the endpoint that answers
        assert any(
            r["endpoint_id"] == good.endpoint_id and r["members"] == sent["members"]
            and r["time"] > sent["time"]
            for r in sends
        ), sent  # fmt: skip
    # The endpoint that stopped answering ran none of them: they wait in its queue still.
    assert queued == {r["task_id"] for r in to_gone}


def test_ping_reports_the_endpoints_versions_and_a_mismatch(
    tmp_path: Path, env: dict, service: Path
):
    import dill

    with StandinEndpoint(service, workers=1) as same:
        checked = run_pilot("ping", write_site(tmp_path, same.endpoint_id), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"endpoint {same.endpoint_id}: online" in checked.stdout
    assert f"runs as {REMOTE_USER}" in checked.stdout
    assert f"dill: {dill.__version__} on the endpoint, {dill.__version__} here: same" in (
        checked.stdout
    )
    assert f"python: {python}." in checked.stdout

    with StandinEndpoint(service, workers=1, pretend={"dill": "0.3.8"}) as other:
        mismatch = run_pilot("ping", write_site(tmp_path, other.endpoint_id), env=env)
    assert mismatch.returncode == 1
    assert (
        f"endpoint {other.endpoint_id}: dill 0.3.8 there, {dill.__version__} here; "
        f"install dill=={dill.__version__} in the endpoint's environment"
    ) in mismatch.stderr


def test_cancel_stops_sending_and_running_tasks_finish_on_the_endpoint(
    tmp_path: Path, env: dict, service: Path, endpoint: StandinEndpoint
):
    import signal
    import subprocess
    import time

    from helpers import pilot_cmd, wait_for

    site = write_site(tmp_path, endpoint.endpoint_id, pools={"default": {"workers": 1}})
    # pilot's runtime in the endpoint's code cache first: else a bundle that reaches it
    # before the runtime is unpacked answers code_missing, and today's driver sends it
    # again even while it cancels (a driver change the docs describe).
    warm = write_workflow(
        tmp_path / "warm", {"name": "warm", "jobs": [{"name": "w", "command": "true"}]}
    )
    assert run_pilot("submit", warm, "--site", site, env=env, cwd=tmp_path).returncode == 0
    jobs = [{"name": f"slow-{i}", "command": "sleep 12; echo finished"} for i in range(5)]
    workflow = write_workflow(tmp_path, {"name": "cancel-me", "jobs": jobs})
    driver = subprocess.Popen(
        pilot_cmd("submit", workflow, "--site", site), env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    with driver:
        run_id = driver.stdout.readline().split()[1]
        claimed = service / "claimed" / endpoint.endpoint_id
        # Two bundles out (one worker slot, two bundles per slot), both running there.
        wait_for(lambda: len(list(claimed.glob("*.json"))) == 2, timeout=120, what="2 running")
        running = [p.stem for p in claimed.glob("*.json")]
        cancelled_at = time.time()
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    status = json.loads(run_pilot("status", run_id, "--json", env=env).stdout)
    assert status["state"] == "cancelled" and status["jobs"]["cancelled"] == 5
    # Nothing new was sent after the cancel; the two running tasks finish on the endpoint.
    run_dir = Path(env["PILOT_HOME"]) / "runs" / run_id
    # (a task is journaled within half a second of being sent)
    sent = [r for r in journal(run_dir) if r["event"] == "sent"]
    assert all(r["time"] < cancelled_at + 1 for r in sent), sent
    for task_id in running:
        wait_for(
            lambda t=task_id: (service / "results" / f"{t}.json").exists(),
            timeout=120, what="the endpoint to finish a task of the cancelled run",
        )  # fmt: skip
    after = json.loads(run_pilot("status", run_id, "--json", env=env).stdout)
    assert after["state"] == "cancelled" and after["jobs"] == status["jobs"]


# A driver that sends one bundle through the site's executor and dies once the task is
# in the journal, leaving it running on the endpoint.
_FIRST_DRIVER = """
import os, sys, time
from pathlib import Path
from executor.driver.context import RunContext, job_spec
from executor.driver.delivery import plan_delivery
from executor.model.graph import Job
from executor.shipping.runtime import bootstrap_call
from executor.sites import get_site

site_file, run_dir, marker = sys.argv[1:4]
run_dir = Path(run_dir)
site = get_site(site_file)
(executor,) = site.make_executors()
executor.run_dir = str(run_dir / "parsl" / "000")
executor.start()
context = RunContext("restart-me", run_dir, run_dir, run_dir / "environment.json")
job = Job(name="once", label="once", command=f"echo ran >> {marker}; sleep 4; echo finished")
spec = job_spec(job, context, 1, None, 0.1, shared_filesystem=False)
delivery, package = plan_delivery(site, None, run_dir)
executor.submit(eval, {}, *bootstrap_call([spec], delivery.payload("default"), package))
journal = run_dir / "parsl" / "globus-tasks.jsonl"
while not (journal.exists() and journal.read_text()):
    time.sleep(0.05)
os._exit(0)  # a crash: the task runs on
"""


def test_a_new_driver_reattaches_to_a_task_still_running_instead_of_running_it_again(
    tmp_path: Path, env: dict, endpoint: StandinEndpoint
):
    import subprocess

    from executor.sites import get_site

    site_file = write_site(tmp_path, endpoint.endpoint_id)
    run_dir = tmp_path / "run"
    (run_dir / "parsl").mkdir(parents=True)
    marker = endpoint.home / "ran-once.txt"
    first = subprocess.run(
        [sys.executable, "-c", _FIRST_DRIVER, str(site_file), str(run_dir), str(marker)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert not (run_dir / "logs").exists()  # nothing came back to the first driver

    (executor,) = get_site(str(site_file)).make_executors()
    executor.run_dir = str(run_dir / "parsl" / "001")
    executor.start()
    try:
        found = executor.reattach()
        assert [members for members, _ in found] == [[("once", 1)]]
        (outcome,) = found[0][1].result(timeout=120)
    finally:
        executor.shutdown()
    assert outcome["state"] == "succeeded", outcome
    assert (run_dir / "logs" / "once" / "attempt-1.out").read_text() == "finished\n"
    assert marker.read_text() == "ran\n"  # once: reattached, not sent again
    records = journal(run_dir)
    assert [r["event"] for r in records] == ["sent", "done"]


def test_the_journal_names_each_bundle_still_out_once_by_its_latest_send(tmp_path: Path):
    from executor.sites.globus_journal import unfinished_by_group

    def sent(task: str, endpoint: str, members: list, at: float) -> dict:
        return {"event": "sent", "task_id": task, "pool": "default", "endpoint_id": endpoint,
                "task_group_id": f"group-{endpoint}", "members": members, "time": at}  # fmt: skip

    path = tmp_path / JOURNAL
    records = [
        sent("t1", "A", [["x", 1]], 1.0),
        sent("t2", "A", [["y", 1]], 2.0),
        sent("t3", "B", [["x", 1]], 3.0),  # x sent again: A left the rotation
        {"event": "done", "task_id": "t2"},
        {**sent("t4", "A", [["z", 1]], 4.0), "pool": "big"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "se')
    groups = unfinished_by_group(path, "default")
    assert {key: [r["task_id"] for r in found] for key, found in groups.items()} == {
        ("B", "group-B"): ["t3"]
    }


def test_restart_after_a_driver_crash_reattaches_and_records_what_finished_meanwhile(
    tmp_path: Path, env: dict, service: Path, endpoint: StandinEndpoint
):
    """`pilot restart` of a run whose driver was killed: the task still running is
    reattached to (its job runs once), the one that finished while no driver ran is
    recorded from the service, and the rest of the graph runs."""
    import signal
    import subprocess

    from helpers import pilot_cmd, wait_for

    site = write_site(tmp_path, endpoint.endpoint_id, pools={"default": {"workers": 2}})
    ran, go = endpoint.home / "ran", endpoint.home / "go"
    until_go = f"until [ -e {go} ]; do sleep 0.1; done"  # ends once the driver is dead
    jobs = [
        {"name": "quick", "command": f"echo quick >> {ran}; {until_go}; echo quick done"},
        {"name": "slow", "command": f"echo slow >> {ran}; sleep 15; echo slow done"},
        {"name": "last", "command": "echo last done", "after": ["quick", "slow"]},
    ]
    workflow = write_workflow(tmp_path, {"name": "crash-me", "jobs": jobs})
    driver = subprocess.Popen(
        pilot_cmd("submit", workflow, "--site", site), env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    with driver:
        run_id = driver.stdout.readline().split()[1]
        run_dir = Path(env["PILOT_HOME"]) / "runs" / run_id

        def both_out() -> bool:  # in one bundle or two: packing decides
            out = read_journal(run_dir / "parsl" / JOURNAL).values()
            sent = {m[0] for r in out for m in r["members"]}
            return sent == {"quick", "slow"} and ran.exists() and len(ran.read_text().split()) == 2

        wait_for(lambda: (run_dir / "parsl" / JOURNAL).exists() and both_out(), timeout=120,
                 what="both jobs running on the endpoint and journaled")  # fmt: skip
        driver.send_signal(signal.SIGKILL)
        driver.communicate(timeout=60)
    go.touch()
    still_out = read_journal(run_dir / "parsl" / JOURNAL).values()  # not code_missing answers
    quick_task = next(r["task_id"] for r in still_out if ["quick", 1] in r["members"])
    wait_for(
        lambda: (service / "results" / f"{quick_task}.json").exists(),
        timeout=60, what="quick to finish on the endpoint while no driver runs",
    )  # fmt: skip

    restarted = run_pilot("restart", run_id, env=env, cwd=tmp_path, timeout=180)
    assert restarted.returncode == 0, restarted.stderr
    assert "2 maybe still running on the site (reattaching)" in restarted.stderr
    listing = json.loads(run_pilot("jobs", run_id, "--json", env=env).stdout)["jobs"]
    assert {j["job"]: (j["state"], j["attempts"]) for j in listing} == {
        "quick": ("succeeded", 1), "slow": ("succeeded", 1), "last": ("succeeded", 1),
    }  # fmt: skip
    assert sorted(ran.read_text().split()) == ["quick", "slow"]  # each ran once
    for name in ("quick", "slow"):
        logs = run_pilot("logs", run_id, name, env=env)
        assert f"{name} done" in logs.stdout, logs.stdout + logs.stderr


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "endpoint_id: not-a-uuid",
            "endpoint_id: 'not-a-uuid' is not an endpoint UUID; write e.g.",
        ),
        ("executor_factory: globus_standin:make_executor", "endpoint_id: required"),
        (f"endpoint_id: {{{'4b116d3c-1703-4f8f-9f6f-39921e5864df'}: 0}}", "must be > 0"),
        (
            "endpoint_id: 4b116d3c-1703-4f8f-9f6f-39921e5864df\npool_options: {huge: {}}",
            "pool_options: no pool named 'huge'; pools: default",
        ),
        (
            "endpoint_id: 4b116d3c-1703-4f8f-9f6f-39921e5864df\n"
            "pool_options: {default: {partition: x}}",
            "pool_options: default: unknown key 'partition'; valid keys: user_endpoint_config",
        ),
        (
            "endpoint_id: 4b116d3c-1703-4f8f-9f6f-39921e5864df\nstart_locally: 2",
            "start_locally: not supported by a globus_compute site",
        ),
        (
            "endpoint_id: 4b116d3c-1703-4f8f-9f6f-39921e5864df\n"
            "user_endpoint_config: {account: {nested: 1}}",
            "user_endpoint_config: expected",
        ),
    ],
)
def test_a_wrong_site_file_names_the_file_the_field_and_the_fix(
    tmp_path: Path, lines: str, expected: str
):
    from executor.errors import ConfigError
    from executor.sites import get_site

    path = tmp_path / "endpoint.yaml"
    path.write_text(f"backend: globus_compute\n{lines}\n")
    with pytest.raises(ConfigError) as caught:
        get_site(str(path))
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert expected in str(caught.value), caught.value


def test_the_shipped_example_loads_with_its_weights_and_pool_options():
    from executor.sites import get_site, shipped_sites

    site = get_site(str(shipped_sites() / "globus-example.yaml"))
    assert site.backend == "globus_compute"
    assert sorted(site.endpoint_id.values()) == [1.0, 3.0]
    assert site.pool_options["big"]["user_endpoint_config"] == {"partition": "bigmem"}
    assert site.shared_filesystem is False and site.ship_runtime is True
    # Code chunks leave room for base64 in a task of at most 10 MB serialized.
    assert site.payload_limit * 4 / 3 < site.service_limit == 10_000_000


def test_a_failed_request_stops_the_sdk_executor_and_its_bundles_go_again(
    tmp_path: Path, env: dict, service: Path, endpoint: StandinEndpoint
):
    """The SDK's submitter thread dies when a request fails, and with it that executor:
    its bundles are sent again through a fresh one, and no attempt is lost."""
    (service / "fail-requests").write_text("1")
    jobs = [{"name": f"job-{i}", "command": f"echo {i}"} for i in range(3)]
    workflow = write_workflow(tmp_path, {"name": "flaky", "jobs": jobs})
    site = write_site(tmp_path, endpoint.endpoint_id)
    submitted = run_pilot("submit", workflow, "--site", site, env=env, cwd=tmp_path, timeout=300)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert not (service / "fail-requests").exists()  # the failure did happen
    listed = json.loads(run_pilot("jobs", run_id_of(submitted), "--json", env=env).stdout)
    assert {(j["job"], j["state"], j["attempts"]) for j in listed["jobs"]} == {
        (f"job-{i}", "succeeded", 1) for i in range(3)
    }
