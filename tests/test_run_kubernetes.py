"""Runs on the kubernetes backend, through the Kubernetes API stand-in (tests/kube_standin.py).

The real parts run: the `pilot` command, Parsl's HighThroughputExecutor and worker pools, the
real ``kubernetes`` client reading a real kubeconfig file. Only the API server and its kubelet
are a stand-in: pods are local processes in mount namespaces of their own, which see the
driver's run directory, the user's code and pilot's sources as empty directories.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import yaml

pytest.importorskip("kubernetes", reason="the `kubernetes` extra is not installed")
from helpers import pilot_cmd, run_pilot, status_json, wait_for, write_workflow  # noqa: E402
from kube_pods import namespace_problem  # noqa: E402
from kube_standin import KubeStandIn  # noqa: E402
from kubernetes import client, config  # noqa: E402

from executor.sites.kube_provider import CERT_MOUNT  # noqa: E402
from executor.store import Store, locate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "python:3.11"  # any image but bad/...: the stand-in runs this host's python3
NS = "default"
RUN = "pilot.run"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The user's working directory (code, workflow), hidden from pods."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


@pytest.fixture
def kube(tmp_path: Path, pilot_home: Path, work: Path):
    """The stand-in; pods see the driver's home, the user's files and pilot's code empty."""
    if problem := namespace_problem():
        pytest.skip(f"pods need their own mount namespace: {problem}")
    # The image's programs: this interpreter's (with Parsl), first on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    base = {"PATH": path, "HOME": "/tmp", "LANG": "C.UTF-8"}
    hide = [pilot_home, work, ROOT / "executor"]
    with KubeStandIn(tmp_path / "kube", hide=hide, base_env=base, pull_backoff=0.5) as standin:
        yield standin
    assert standin.all_pids() == [], "pod processes outlived the stand-in"


@pytest.fixture
def v1(kube: KubeStandIn):
    with config.new_client_from_config(config_file=str(kube.kubeconfig)) as api:
        yield client.CoreV1Api(api)


def write_site(directory: Path, kube: KubeStandIn, **options) -> Path:
    data = {
        "backend": "kubernetes", "kubeconfig": str(kube.kubeconfig), "image": IMAGE,
        "address": "127.0.0.1", "worker_port": free_port(), "poll_interval": 1,
        "heartbeat_threshold": 10, "labels": {"team": "tests"},
        "node_selector": {"kubernetes.io/os": "linux"},
        "env": {"PILOT_TEST_COLOUR": "blue"},
        "pools": {"default": {"cores": 1, "memory": "300MB", "workers": 2, "max_blocks": 2}},
        **options,
    }  # fmt: skip
    path = directory / "k8s-test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_id_of(output: str) -> str:
    first = output.splitlines()[0]
    assert first.startswith("run "), output
    return first.split()[1]


def pods_of(kube: KubeStandIn, run_id: str) -> list[dict]:
    return kube.pods(**{RUN: run_id})


def secrets_of(v1: client.CoreV1Api, run_id: str) -> list:
    return v1.list_namespaced_secret(NS, label_selector=f"{RUN}={run_id}").items


def store_rows(sql: str, *args) -> list[dict]:
    with Store(locate().db) as store:
        return store.query(sql, list(args))


@contextmanager
def foreground(workflow: Path, site: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """``pilot submit`` in the foreground; interrupted (Ctrl-C) if still running at the end."""
    with subprocess.Popen(
        pilot_cmd("submit", workflow, "--site", site), cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    ) as driver:  # fmt: skip
        try:
            yield driver
        finally:
            if driver.poll() is None:
                driver.send_signal(signal.SIGINT)
                driver.communicate(timeout=90)


@pytest.fixture
def detached(pilot_home: Path):
    """Submit detached: ``detached(workflow, site)`` is the run id and the driver's pid.
    Runs still going at the end of the test (it failed) are cancelled."""
    started: list[str] = []

    def submit(workflow: Path, site: Path) -> tuple[str, int]:
        result = run_pilot("submit", workflow, "--site", site, "--detach")
        assert result.returncode == 0, result.stdout + result.stderr
        started.append(run_id := run_id_of(result.stdout))
        return run_id, store_rows("SELECT pid FROM runs WHERE id = ?", run_id)[0]["pid"]

    yield submit
    for run_id in started:
        if status_json(run_id)["state"] in ("running", "driver_lost"):
            run_pilot("cancel", run_id)


def running_in_pod(kube: KubeStandIn, run_id: str, command: str = "sleep 600") -> dict:
    """Wait until a job's process (exactly ``command``) runs in a pod of the run; return the
    pod. (Without a shared filesystem, a job shows running only once it ended.)"""

    def found() -> list[dict]:
        return [pod for pod in pods_of(kube, run_id)
                if any(_cmdline(pid) == command.split()
                       for pid in kube.pod_pids(pod["metadata"]["name"]))]  # fmt: skip

    return wait_for(found, timeout=90, what=f"{command!r} running in a pod")[0]


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:  # gone meanwhile
        return []


def all_gone(kube: KubeStandIn, v1: client.CoreV1Api, run_id: str, timeout: float = 60) -> None:
    wait_for(lambda: not pods_of(kube, run_id) and not secrets_of(v1, run_id), timeout=timeout,
             what=f"every pod and secret of run {run_id} deleted")  # fmt: skip


def test_a_workflow_completes_in_pods_that_share_no_filesystem_with_the_driver(
    kube: KubeStandIn, v1: client.CoreV1Api, work: Path, pilot_home: Path
):
    package = work / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stats.py").write_text(
        "import os, socket\n\ndef summarize(x):\n    print('summarizing', x)\n"
        "    return {'value': 2 * x, 'pod': socket.gethostname()}\n"
    )
    # The job sees no file of the driver's: not its run directory, not the workflow.
    look = f'test ! -e {work}/workflow.yaml && test -z "$(ls {pilot_home}/runs/*/site.json)"'
    workflow = write_workflow(work, {
        "name": "k8s-demo", "code": ["./mypkg"],
        "jobs": [
            {"name": "hello", "command": f"{look} && echo hello $PILOT_TEST_COLOUR from $HOSTNAME"},
            {"name": "sum", "function": "mypkg.stats:summarize", "args": [21], "after": ["hello"]},
        ],
    })  # fmt: skip
    site = write_site(work, kube)
    seen: dict[str, dict] = {}
    with foreground(workflow, site, cwd=work) as driver:
        run_id = run_id_of(driver.stdout.readline())
        wait_for(lambda: secrets_of(v1, run_id), timeout=60, what="the certificate secret")
        secret = secrets_of(v1, run_id)[0]
        pod = wait_for(lambda: pods_of(kube, run_id), what="a pod")[0]
        seen[pod["metadata"]["name"]] = pod
        out, err = driver.communicate(timeout=180)
    assert driver.returncode == 0, out + err
    run_dir = pilot_home / "runs" / run_id
    cert_dir = next(run_dir.glob("parsl/*/default/certificates"))
    # The whole certificate directory travelled as the run's Secret, and only that way.
    assert sorted(secret.data) == sorted(p.name for p in cert_dir.iterdir())
    assert secret.metadata.labels[RUN] == run_id
    labels = pod["metadata"]["labels"]
    assert (labels[RUN], labels["pilot.pool"], labels["team"]) == (run_id, "default", "tests")
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"name": "pilot-certificates", "secret": {
        "secretName": secret.metadata.name, "defaultMode": 0o400}} in spec["volumes"]  # fmt: skip
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"name": "pilot-certificates", "mountPath": CERT_MOUNT, "readOnly": True} in mounts
    assert spec["containers"][0]["resources"]["requests"] == {"cpu": "2", "memory": "1112M"}
    result = json.loads(store_rows("SELECT result FROM attempts WHERE job = 'sum'")[0]["result"])
    assert result["value"] == 42 and result["pod"].startswith(f"pilot-{run_id}")
    # Logs came back from pods that are gone.
    for job, text in (("hello", f"hello blue from pilot-{run_id}"), ("sum", "summarizing 21")):
        logs = run_pilot("logs", run_id, job)
        assert logs.returncode == 0 and text in logs.stdout, logs.stdout + logs.stderr
    pilots = store_rows("SELECT job_id, node FROM pilots WHERE run_id = ?", run_id)
    assert pod["metadata"]["name"] in {p["job_id"] for p in pilots}
    # The pod's node, or, when the pod came and went between two polls of the pod list
    # (a loaded machine), the host its jobs reported: the pod's own name.
    assert {p["node"] for p in pilots} <= {"standin-node", pod["metadata"]["name"]}
    all_gone(kube, v1, run_id, timeout=30)


def test_cancel_deletes_every_pod_and_secret_of_the_run(kube, v1, work: Path, detached):
    workflow = write_workflow(work, {"name": "cancelled", "jobs": [
        {"name": "long", "command": "sleep 600"}]})  # fmt: skip
    run_id, _ = detached(workflow, write_site(work, kube))
    running_in_pod(kube, run_id)
    assert secrets_of(v1, run_id)
    cancelled = run_pilot("cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    all_gone(kube, v1, run_id)
    wait_for(lambda: status_json(run_id)["state"] == "cancelled", what="cancelled")


def test_restart_after_a_killed_driver_deletes_the_old_pods_and_succeeds(
    kube, v1, tmp_path, work, detached
):
    flag = tmp_path / "flag"  # not hidden: the test lets the rerun finish through it
    workflow = write_workflow(work, {"name": "killed", "jobs": [
        {"name": "waits", "command": f"test -e {flag} || sleep 600"}]})  # fmt: skip
    run_id, driver = detached(workflow, write_site(work, kube))
    old = running_in_pod(kube, run_id)["metadata"]["name"]
    os.kill(driver, signal.SIGKILL)
    wait_for(lambda: status_json(run_id)["state"] == "driver_lost", what="driver_lost")
    assert [p["metadata"]["name"] for p in pods_of(kube, run_id)] == [old]  # left behind
    assert secrets_of(v1, run_id)
    flag.touch()
    again = run_pilot("restart", run_id, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert status_json(run_id)["state"] == "succeeded"
    all_gone(kube, v1, run_id, timeout=30)
    assert kube.wait_pod(old, lambda pod: pod is None, timeout=1) is None


def test_a_pod_deleted_mid_run_has_its_jobs_retried_as_pilot_lost(kube, v1, tmp_path, work):
    flag = tmp_path / "deleted"
    job = {"name": "victim", "command": f"test -e {flag} && echo rerun || sleep 600",
           "retries": 0}  # fmt: skip
    workflow = write_workflow(work, {"name": "lost", "jobs": [job]})
    site = write_site(work, kube)
    with foreground(workflow, site) as driver:
        run_id = run_id_of(driver.stdout.readline())
        pod = running_in_pod(kube, run_id)["metadata"]["name"]
        flag.touch()
        v1.delete_namespaced_pod(pod, NS)  # by someone else, through the API
        out, err = driver.communicate(timeout=180)
    assert driver.returncode == 0, out + err
    attempts = store_rows(
        "SELECT attempt, state, failure_class FROM attempts WHERE run_id = ? ORDER BY attempt",
        run_id,
    )
    assert [(a["state"], a["failure_class"]) for a in attempts][:1] == [("failed", "pilot_lost")]
    assert attempts[-1]["state"] == "succeeded"
    pilots = store_rows("SELECT job_id, state, message FROM pilots WHERE run_id = ?", run_id)
    lost = next(p for p in pilots if p["job_id"] == pod)
    assert lost["state"] == "missing" and "deleted outside pilot" in lost["message"]
    all_gone(kube, v1, run_id, timeout=30)


def test_a_bad_image_ends_the_run_with_an_error_naming_pod_image_and_reason(kube, v1, work):
    workflow = write_workflow(work, {"name": "badimage", "jobs": [
        {"name": "never", "command": "echo never"}]})  # fmt: skip
    site = write_site(work, kube, image="bad/no-such-image:1")
    started = time.monotonic()
    result = run_pilot("submit", workflow, "--site", site, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    run_id = run_id_of(result.stdout)
    text = result.stdout + result.stderr
    assert "bad/no-such-image:1" in text and "ImagePullBackOff" in text, text
    assert f"pod pilot-{run_id}" in text
    (pilot,) = store_rows("SELECT * FROM pilots WHERE run_id = ?", run_id)
    assert pilot["state"] == "failed" and "ImagePullBackOff" in pilot["message"]
    assert pilot["end"] - pilot["submitted"] < 30, pilot
    assert elapsed < 60, f"the run took {elapsed:.0f} s to give up"
    all_gone(kube, v1, run_id, timeout=30)


def test_ping_checks_api_namespace_permissions_and_the_image_versions(kube, work: Path):
    site = write_site(work, kube)
    ping = run_pilot("ping", site)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "namespace 'default': exists" in ping.stdout
    assert "create/get/list/delete pods, create/list/delete secrets" in ping.stdout
    assert f"Python {sys.version.split()[0]}" in ping.stdout and "the same as" in ping.stdout
    assert "loopback" in ping.stdout
    kube.deny("create", "secrets")
    refused = run_pilot("ping", site)
    assert refused.returncode == 1 and "not allowed to create secrets" in refused.stderr
    assert kube.pods() == []  # nothing left by the probes


def test_ping_says_plainly_when_the_image_has_other_versions(kube, tmp_path, work: Path):
    fake = tmp_path / "old-image-bin"
    fake.mkdir()
    (fake / "python3").write_text('#!/bin/sh\necho \'{"python": "3.9.18", "parsl": "2024.1.8"}\'\n')
    (fake / "python3").chmod(0o755)
    kube.image_env["old/python:3.9"] = {"PATH": f"{fake}:/usr/bin:/bin"}
    result = run_pilot("ping", write_site(work, kube, image="old/python:3.9"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "VERSION MISMATCH" in result.stderr
    assert "Python 3.9.18 and Parsl 2024.1.8" in result.stderr
    from importlib.metadata import version

    assert f"Parsl {version('parsl')}" in result.stderr


def test_the_provider_reports_how_each_pod_ended_with_the_reason(kube, tmp_path: Path):
    """Evicted, OOMKilled, Unschedulable and deleted pods, as the driver's pilots see them."""
    from parsl.jobs.states import JobState

    from executor.policy.pools import PoolConfig
    from executor.sites.kubernetes import KubernetesSite

    pool = PoolConfig(name="p", memory=100, workers=1)
    site = KubernetesSite(name="t", kubeconfig=str(kube.kubeconfig), image=IMAGE, pools=(pool,),
                          memory_overhead=60, memory_tolerance=0.0, poll_interval=0.5)  # fmt: skip
    provider = site.make_provider(pool)
    run_id = "20261203-000000-abcd"
    provider.script_dir = str(tmp_path / "runs" / run_id / "parsl" / "000" / "submit_scripts")

    def ends(job: str, state: JobState, saying: str = "") -> str:
        def now() -> bool:
            status = provider.status([job])[0]
            return status.state == state and saying in (status.message or "")

        wait_for(now, timeout=30, what=f"{state} saying {saying!r}")
        return provider.status([job])[0].message or ""

    evicted = provider.submit("sleep 600", 1, "parsl.p.block-0")
    hog = provider.submit("python3 -c \"b = b'x' * 400 * 2**20; import time; time.sleep(60)\"",
                          1, "parsl.p.block-1")  # fmt: skip
    assert kube.pods(**{RUN: run_id, "pilot.pool": "p"})
    ends(evicted, JobState.RUNNING)
    kube.evict(evicted)
    ends(evicted, JobState.FAILED, f"pod {evicted} (image {IMAGE}): Evicted: The node was low on")
    ends(hog, JobState.FAILED, "OOMKilled: the pod exceeded its memory limit (exit 137)")
    kube.unschedulable = True
    waits = provider.submit("sleep 600", 1, "parsl.p.block-2")
    ends(waits, JobState.PENDING, "Unschedulable: 0/1 nodes are available")
    kube.unschedulable = False
    ends(waits, JobState.RUNNING)
    provider.core.delete_namespaced_pod(waits, NS, grace_period_seconds=0)
    assert ends(waits, JobState.MISSING) == f"pod {waits} was deleted outside pilot"
    assert provider.cancel([evicted]) == [True]
    provider.close()
    assert kube.pods() == []
    provider.api.close()


def test_clean_up_run_deletes_what_a_run_left_by_its_label_only(kube, v1, tmp_path: Path):
    from executor.sites.kubernetes import KubernetesSite

    def leave(run_id: str, name: str) -> None:
        meta = client.V1ObjectMeta(name=name, labels={RUN: run_id})
        v1.create_namespaced_secret(NS, client.V1Secret(metadata=meta, string_data={"k": "v"}))
        container = client.V1Container(name="c", image=IMAGE, command=["sleep", "600"])
        pod = client.V1Pod(metadata=meta, spec=client.V1PodSpec(containers=[container]))
        v1.create_namespaced_pod(NS, pod)

    leave("20261203-000000-dead", "pilot-left-behind")
    leave("20261203-000000-live", "pilot-another-run")
    site = KubernetesSite(name="t", kubeconfig=str(kube.kubeconfig), image=IMAGE)
    assert site.clean_up_run("20261203-000000-dead") == ["2 pod(s) and secret(s) of run "
                                                         "20261203-000000-dead"]  # fmt: skip
    assert not secrets_of(v1, "20261203-000000-dead") and secrets_of(v1, "20261203-000000-live")
    kube.wait_pod("pilot-left-behind", lambda pod: pod is None)
    assert [p["metadata"]["name"] for p in kube.pods()] == ["pilot-another-run"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("namespace: rubin", "image: the workers' image is required; write e.g. `image: "),
        ("image: x\nimage_pull_policy: Sometimes", "image_pull_policy: expected one of Always"),
        ("image: x\nin_cluster: true\ncontext: summit", "in_cluster: true uses the pod's service"),
        ("image: x\nlabels: {pilot.run: mine}", "labels: keys starting with 'pilot.'"),
        ("image: x\nnode_selector: {zone: 'a b'}", "node_selector: 'zone': 'a b' is not a"),
        ("image: x\nvolume_mounts: [{name: data, mountPath: /data}]",
         "volume_mounts[0]: needs `name:` of one of `volumes:` (none declared)"),
        ("image: x\ntolerations: [{key: a, colour: red}]", "tolerations[0]: keys are key"),
        ("image: x\nworker_port: 0", "worker_port: 0 must be a whole number >= 1"),
    ],
)  # fmt: skip
def test_a_kubernetes_site_file_is_checked_at_load_naming_the_field_and_the_fix(
    tmp_path: Path, text: str, message: str
):
    from executor.errors import ConfigError
    from executor.sites import get_site

    path = tmp_path / "k8s.yaml"
    path.write_text(f"backend: kubernetes\n{text}\n")
    with pytest.raises(ConfigError) as refused:
        get_site(str(path))
    assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)
