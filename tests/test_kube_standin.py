"""The Kubernetes API stand-in (``kube_standin``), driven by the real ``kubernetes`` client and
by Parsl's real ``KubernetesProvider``: what the Kubernetes backend's tests rely on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("kubernetes", reason="the `kubernetes` extra is not installed")
from kube_pods import namespace_problem  # noqa: E402
from kube_standin import KubeStandIn, b64  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.config import kube_config  # noqa: E402

NS = "default"


@pytest.fixture
def kube(tmp_path: Path):
    """A running stand-in, with the client's default configuration loaded from its kubeconfig."""
    if problem := namespace_problem():
        pytest.skip(f"pods need their own mount namespace: {problem}")
    standin = KubeStandIn(tmp_path / "kube", pull_backoff=0.3, restart_backoff=0.2)
    with standin:
        config.load_kube_config(config_file=str(standin.kubeconfig))
        yield standin
    client.Configuration.set_default(None)
    assert standin.all_pids() == [], "the stand-in left pod processes running"


@pytest.fixture
def v1(kube: KubeStandIn):
    with client.ApiClient() as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def provider(kube: KubeStandIn, monkeypatch: pytest.MonkeyPatch):
    """A factory of Parsl ``KubernetesProvider``s that talk to the stand-in."""
    from parsl.providers import KubernetesProvider

    # The provider calls load_kube_config(), whose default file is $KUBECONFIG read at import.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kube.kubeconfig))
    made: list = []
    yield lambda **options: made.append(KubernetesProvider(**options)) or made[-1]
    for each in made:
        each.kube_client.api_client.close()


def python_pod(name: str, code: str, *, restart: str = "Never", labels=None, **container):
    """A pod whose one container runs ``python3 -u -c code``."""
    container = {"name": "main", "image": "python:3.11", **container}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations={"note": "kept"}),
        spec=client.V1PodSpec(
            restart_policy=restart,
            containers=[client.V1Container(command=["python3", "-u", "-c", code], **container)],
        ),
    )


def mounted(pod: client.V1Pod, path: str, **volume) -> client.V1Pod:
    """The pod with ``volume`` (``secret=...``, ``empty_dir=...``) mounted at ``path``."""
    name = f"v{len(pod.spec.volumes or [])}"
    pod.spec.volumes = [*(pod.spec.volumes or []), client.V1Volume(name=name, **volume)]
    container = pod.spec.containers[0]
    mount = client.V1VolumeMount(name=name, mount_path=path)
    container.volume_mounts = [*(container.volume_mounts or []), mount]
    return pod


def pod_log(v1: client.CoreV1Api, name: str, **options) -> str:
    """A pod's log as text. Not the client's parsed answer: kubernetes 36 returns the repr of
    the bytes (kubernetes-client/python#2596), and every version parses a log that looks
    like JSON (#811)."""
    return v1.read_namespaced_pod_log(name, NS, _preload_content=False, **options).data.decode()


def phase(*phases: str):
    return lambda pod: pod is not None and pod["status"]["phase"] in phases


def container_status(pod: dict | None) -> dict:
    """The first container's status, ``{}`` before there is one."""
    return ((pod or {}).get("status", {}).get("containerStatuses") or [{}])[0]


def state(pod: dict | None) -> dict:
    """The first container's state (``{"waiting": {...}}`` and so on), ``{}`` before any."""
    return container_status(pod).get("state", {})


def gone(pids: list[int], timeout: float = 10) -> bool:
    """Whether all these processes are gone (reaped, or zombies) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def process_names(pids: list[int]) -> list[str]:
    return [p.info["name"] for p in psutil.process_iter(["name"]) if p.pid in pids]


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout} s: {condition}")
        time.sleep(0.1)


def names(items) -> list[str]:
    return sorted(item.metadata.name for item in items)


def test_a_pod_runs_to_succeeded_as_a_watch_sees_it_and_its_log_is_read(kube, v1):
    code = (
        "import os, socket; print('hello', os.environ['COLOUR'], os.getcwd(), socket.gethostname())"
    )
    env = [client.V1EnvVar(name="COLOUR", value="blue")]
    pod = python_pod("hello", code, labels={"run": "r1"}, working_dir="/tmp", env=env)
    created = v1.create_namespaced_pod(NS, pod)
    assert created.metadata.uid and created.metadata.creation_timestamp
    meta = created.metadata
    assert (meta.labels, meta.annotations) == ({"run": "r1"}, {"note": "kept"})
    assert created.spec.restart_policy == "Never"

    events, versions = [], []
    stream = watch.Watch()
    for event in stream.stream(
        v1.list_namespaced_pod, NS, label_selector="run=r1", timeout_seconds=30
    ):
        events.append((event["type"], event["object"].status.phase))
        versions.append(int(event["object"].metadata.resource_version))
        if event["object"].status.phase in ("Succeeded", "Failed"):
            stream.stop()
    assert events[-1] == ("MODIFIED", "Succeeded")
    assert ("MODIFIED", "Running") in events or ("ADDED", "Running") in events
    assert versions == sorted(set(versions))  # strictly increasing

    done = v1.read_namespaced_pod("hello", NS)
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert done.spec.node_name == "standin-node"
    assert [c.type for c in done.status.conditions if c.status == "True"] == [
        "PodScheduled", "Initialized"]  # fmt: skip
    assert pod_log(v1, "hello") == "hello blue /tmp hello\n"


def test_a_failing_container_reports_its_exit_code_and_restarts_on_failure(kube, v1):
    v1.create_namespaced_pod(NS, python_pod("fails", "raise SystemExit(3)"))
    terminated = state(kube.wait_pod("fails", phase("Failed")))["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")

    code = "print('run'); raise SystemExit(1)"
    v1.create_namespaced_pod(NS, python_pod("again", code, restart="OnFailure"))
    pod = kube.wait_pod("again", lambda p: container_status(p).get("restartCount", 0) >= 2
                        and "waiting" in state(p))  # fmt: skip
    assert pod["status"]["phase"] == "Running"
    assert state(pod)["waiting"]["reason"] == "CrashLoopBackOff"
    assert container_status(pod)["lastState"]["terminated"]["exitCode"] == 1
    assert pod_log(v1, "again", previous=True) == "run\n"


def test_label_and_field_selectors(kube, v1):
    for name, labels in (
        ("a1", {"run": "a", "role": "w"}),
        ("a2", {"run": "a"}),
        ("b1", {"run": "b"}),
    ):
        v1.create_namespaced_pod(NS, python_pod(name, "pass", labels=labels))
    listed = lambda **selector: names(v1.list_namespaced_pod(NS, **selector).items)  # noqa: E731
    assert listed(label_selector="run=a") == ["a1", "a2"]
    assert listed(label_selector="run==a,role=w") == ["a1"]
    assert listed(label_selector="run!=a") == ["b1"]
    assert listed(label_selector="role") == ["a1"]
    assert listed(label_selector="!role") == ["a2", "b1"]
    assert listed(field_selector="metadata.name=a2") == ["a2"]
    for name in ("a1", "a2", "b1"):
        kube.wait_pod(name, phase("Succeeded"))
    assert listed(field_selector="status.phase=Succeeded,metadata.name!=a1") == ["a2", "b1"]
    everywhere = v1.list_pod_for_all_namespaces(label_selector="run=b").items
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere] == [(NS, "b1")]
    with pytest.raises(client.ApiException) as unknown_field:
        v1.list_namespaced_pod(NS, field_selector="spec.colour=red")
    assert unknown_field.value.status == 400


def test_deleting_a_running_pod_kills_its_processes_after_the_grace_period(kube, v1):
    # The main process ignores SIGTERM and has a child: deletion has to SIGKILL both.
    code = (
        "import signal, subprocess; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "subprocess.run(['sleep', '600'])"
    )
    pod = python_pod("sleeper", code)
    pod.spec.termination_grace_period_seconds = 1
    v1.create_namespaced_pod(NS, pod)
    running = kube.wait_pod("sleeper", lambda p: "sleep" in process_names(kube.pod_pids("sleeper")))
    pids = kube.pod_pids("sleeper")
    assert all(psutil.pid_exists(pid) for pid in pids)

    started = time.monotonic()
    assert v1.delete_namespaced_pod("sleeper", NS).metadata.deletion_timestamp is not None
    since = running["metadata"]["resourceVersion"]
    events = []
    for event in watch.Watch().stream(
        v1.list_namespaced_pod, NS, resource_version=since, timeout_seconds=20
    ):
        events.append(event["type"])
        if event["type"] == "DELETED":
            break
    assert events[0] == "MODIFIED" and events[-1] == "DELETED"
    assert time.monotonic() - started >= 1  # the grace period
    assert gone(pids)
    with pytest.raises(client.ApiException) as missing:
        v1.read_namespaced_pod("sleeper", NS)
    assert missing.value.status == 404


def test_a_watch_ends_at_its_timeout_and_replays_from_a_resource_version(kube, v1):
    since = v1.list_namespaced_pod(NS).metadata.resource_version
    started = time.monotonic()
    assert list(watch.Watch().stream(v1.list_namespaced_pod, NS, timeout_seconds=1)) == []
    assert 1 <= time.monotonic() - started < 5
    v1.create_namespaced_pod(NS, python_pod("later", "pass"))
    kube.wait_pod("later", phase("Succeeded"))
    replay = watch.Watch().stream(
        v1.list_namespaced_pod, NS, resource_version=since, timeout_seconds=1
    )
    seen = [(event["type"], event["object"].status.phase) for event in replay]
    assert seen[0] == ("ADDED", "Pending") and seen[-1] == ("MODIFIED", "Succeeded")


def test_a_field_selector_watch_sees_pods_enter_and_leave_the_selection(kube, v1):
    since = v1.list_namespaced_pod(NS).metadata.resource_version
    v1.create_namespaced_pod(NS, python_pod("brief", "import time; time.sleep(0.3)"))
    seen = []
    running = {"field_selector": "status.phase=Running", "resource_version": since}
    for event in watch.Watch().stream(v1.list_namespaced_pod, NS, timeout_seconds=30, **running):
        seen.append((event["type"], event["object"].status.phase))
        if event["type"] == "DELETED":
            break
    assert seen[0] == ("ADDED", "Running") and seen[-1] == ("DELETED", "Succeeded")


def test_an_unknown_image_stays_pending_in_image_pull_backoff_naming_the_image(kube, v1):
    v1.create_namespaced_pod(NS, python_pod("badimg", "pass", image="bad/nope:1"))
    waiting = lambda p: state(p).get("waiting", {}).get("reason") == "ImagePullBackOff"  # noqa: E731
    pod = kube.wait_pod("badimg", waiting)
    assert pod["status"]["phase"] == "Pending"
    assert 'Back-off pulling image "bad/nope:1"' in state(pod)["waiting"]["message"]
    with pytest.raises(client.ApiException) as no_log:
        pod_log(v1, "badimg")
    assert no_log.value.status == 400 and "ImagePullBackOff" in no_log.value.body
    assert kube.pod_pids("badimg") == []


def test_a_secret_mounted_over_a_host_directory_shows_the_secret_read_only(kube, v1, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_text("the driver's copy")
    data, strings = {"ca.pem": b64("the secret's copy")}, {"token": "t0k"}
    meta = client.V1ObjectMeta(name="tls")
    v1.create_namespaced_secret(NS, client.V1Secret(metadata=meta, data=data, string_data=strings))
    code = (
        "import os, sys; d = sys.argv[1]; print(sorted(os.listdir(d)));"
        "print(open(d + '/ca.pem').read()); print(oct(os.stat(d + '/ca.pem').st_mode & 0o777));"
        "open(d + '/new', 'w')"
    )
    source = client.V1SecretVolumeSource(secret_name="tls", default_mode=0o440)
    v1.create_namespaced_pod(
        NS, mounted(python_pod("reader", code, args=[str(certs)]), str(certs), secret=source)
    )
    pod = kube.wait_pod("reader", phase("Succeeded", "Failed"))
    log = pod_log(v1, "reader")
    assert log.splitlines()[:3] == ["['ca.pem', 'token']", "the secret's copy", "0o440"]
    assert "Read-only file system" in log and pod["status"]["phase"] == "Failed"
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem"]  # the host saw nothing
    assert (certs / "ca.pem").read_text() == "the driver's copy"


def test_hidden_host_paths_look_empty_and_an_empty_dir_is_writable(kube, v1, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "code.py").write_text("print('a shared filesystem')")
    kube.hide.append(run_dir)
    code = "import os, sys; print(os.listdir(sys.argv[1])); open('/scratch/x', 'w').write('ok')"
    pod = python_pod("hider", code, args=[str(run_dir)])
    v1.create_namespaced_pod(
        NS, mounted(pod, "/scratch", empty_dir=client.V1EmptyDirVolumeSource())
    )
    kube.wait_pod("hider", phase("Succeeded"))
    assert pod_log(v1, "hider") == "[]\n"
    assert (run_dir / "code.py").exists() and not Path("/scratch/x").exists()


def test_a_pod_waits_for_a_missing_claim_or_secret(kube, v1):
    claim = client.V1PersistentVolumeClaimVolumeSource(claim_name="nope")
    v1.create_namespaced_pod(
        NS, mounted(python_pod("claims", "pass"), "/data", persistent_volume_claim=claim)
    )
    pending = kube.wait_pod("claims", lambda p: p["status"].get("conditions"))
    assert pending["status"]["conditions"][0]["message"] == 'persistentvolumeclaim "nope" not found'

    pod = python_pod("needs", "print(open('/etc/needs/k').read())")
    v1.create_namespaced_pod(
        NS, mounted(pod, "/etc/needs", secret=client.V1SecretVolumeSource(secret_name="late"))
    )
    waiting = kube.wait_pod("needs", lambda p: "not found" in str(state(p)))
    assert state(waiting)["waiting"]["reason"] == "ContainerCreating"
    late = client.V1Secret(metadata=client.V1ObjectMeta(name="late"), string_data={"k": "arrived"})
    v1.create_namespaced_secret(NS, late)
    kube.wait_pod("needs", phase("Succeeded"))
    assert pod_log(v1, "needs") == "arrived\n"
    kube.stop()  # the mount point made on the host goes with the stand-in
    assert not Path("/etc/needs").exists()


def test_a_memory_limit_kills_the_container_as_oomkilled(kube, v1):
    code = "import time; block = b'x' * (300 * 2**20); time.sleep(60)"
    limits = client.V1ResourceRequirements(limits={"memory": "100Mi"})
    v1.create_namespaced_pod(NS, python_pod("hog", code, resources=limits))
    pod = kube.wait_pod("hog", phase("Failed"))
    terminated = state(pod)["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"memory": "100Mi"}


def test_an_evicted_pod_fails_with_reason_evicted(kube, v1):
    v1.create_namespaced_pod(NS, python_pod("victim", "import time; time.sleep(600)"))
    kube.wait_pod("victim", lambda p: kube.pod_pids("victim"))
    pids = kube.pod_pids("victim")
    kube.evict("victim")
    pod = v1.read_namespaced_pod("victim", NS)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    assert gone(pids)


def test_unschedulable_pods_wait_then_run_when_allowed(kube, v1):
    kube.unschedulable = True
    v1.create_namespaced_pod(NS, python_pod("waits", "pass"))
    pod = kube.wait_pod("waits", lambda p: p["status"].get("conditions"))
    scheduled = pod["status"]["conditions"][0]
    assert (scheduled["type"], scheduled["status"], scheduled["reason"]) == (
        "PodScheduled", "False", "Unschedulable")  # fmt: skip
    assert pod["status"]["phase"] == "Pending" and kube.pod_pids("waits") == []
    kube.unschedulable = False
    kube.wait_pod("waits", phase("Succeeded"))


def test_generated_names_and_a_command_that_cannot_start(kube, v1):
    pod = python_pod("", "pass")
    pod.metadata = client.V1ObjectMeta(generate_name="gen-")
    name = v1.create_namespaced_pod(NS, pod).metadata.name
    assert name.startswith("gen-") and len(name) == len("gen-") + 5

    missing = python_pod("noexec", "pass")
    missing.spec.containers[0].command = ["/no/such/program"]
    v1.create_namespaced_pod(NS, missing)
    terminated = state(kube.wait_pod("noexec", phase("Failed")))["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert "No such file or directory" in terminated["message"]


def test_access_reviews_and_requests_follow_the_deny_knob(kube, v1):
    def review(verb: str) -> bool:
        attributes = client.V1ResourceAttributes(namespace=NS, verb=verb, resource="pods")
        spec = client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        reviews = client.AuthorizationV1Api(v1.api_client)
        return reviews.create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(spec=spec)
        ).status

    assert review("create").allowed is True
    kube.deny("create", "pods")
    assert (review("create").allowed, review("create").denied) == (False, True)
    assert review("delete").allowed is True
    with pytest.raises(client.ApiException) as forbidden:
        v1.create_namespaced_pod(NS, python_pod("nope", "pass"))
    assert forbidden.value.status == 403
    kube.allow("create", "pods")
    assert review("create").allowed is True


def test_requests_without_the_token_are_unauthorized(kube):
    anonymous = client.Configuration(host=kube.url)
    with client.ApiClient(anonymous) as api, pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api).list_namespaced_pod(NS)
    assert refused.value.status == 401
    assert json.loads(refused.value.body)["reason"] == "Unauthorized"


def test_errors_are_status_objects_the_client_parses(kube, v1):
    with pytest.raises(client.ApiException) as missing:
        v1.read_namespaced_pod("nothing", NS)
    status = json.loads(missing.value.body)
    assert missing.value.status == 404
    assert (status["kind"], status["reason"], status["details"]["name"]) == ("Status", "NotFound",
                                                                            "nothing")  # fmt: skip
    with pytest.raises(client.ApiException) as no_namespace:
        v1.read_namespace("elsewhere")
    assert no_namespace.value.status == 404
    assert names(v1.list_namespace().items) == [NS]
    assert v1.read_namespace(NS).status.phase == "Active"

    v1.create_namespaced_pod(NS, python_pod("twice", "pass"))
    with pytest.raises(client.ApiException) as again:
        v1.create_namespaced_pod(NS, python_pod("twice", "pass"))
    assert again.value.status == 409 and json.loads(again.value.body)["reason"] == "AlreadyExists"
    invalid = client.V1Pod(
        metadata=client.V1ObjectMeta(name="Bad_Name"), spec=client.V1PodSpec(containers=[])
    )
    with pytest.raises(client.ApiException) as refused:
        v1.create_namespaced_pod(NS, invalid)
    body = json.loads(refused.value.body)
    assert refused.value.status == 422 and body["reason"] == "Invalid"
    assert "metadata.name: Invalid value" in body["message"]
    assert "spec.containers: Required value" in body["message"]


def test_secrets_are_created_listed_read_and_deleted(kube, v1):
    for name, run in (("s1", "a"), ("s2", "b")):
        meta = client.V1ObjectMeta(name=name, labels={"run": run})
        v1.create_namespaced_secret(NS, client.V1Secret(metadata=meta, string_data={"k": name}))
    assert names(v1.list_namespaced_secret(NS, label_selector="run=b").items) == ["s2"]
    assert v1.read_namespaced_secret("s1", NS).data == {"k": b64("s1")}
    deleted = v1.delete_namespaced_secret("s1", NS)  # kubernetes 37: a dict; 36: a V1Status
    assert (deleted["status"] if isinstance(deleted, dict) else deleted.status) == "Success"
    with pytest.raises(client.ApiException) as missing:
        v1.read_namespaced_secret("s1", NS)
    assert missing.value.status == 404
    huge = client.V1Secret(
        metadata=client.V1ObjectMeta(name="huge"), data={"k": b64(b"x" * 2**20 + b"x")}
    )
    with pytest.raises(client.ApiException) as too_long:
        v1.create_namespaced_secret(NS, huge)
    assert too_long.value.status == 422


def test_parsl_provider_submits_polls_and_cancels_a_block(kube, provider):
    from parsl.jobs.states import JobState

    blocks = provider(image="python:3.11", namespace=NS, init_blocks=0, max_mem="1Gi")
    job_id = blocks.submit("echo worker-started $TEST; exec sleep 600", 1, "parsl.test.block-0")
    pod_name = blocks.resources[job_id]["pod_name"]
    kube.wait_pod(pod_name, phase("Running"))
    assert [p["metadata"]["labels"] for p in kube.pods()] == [{"parsl-job-id": job_id}]
    assert blocks.status([job_id])[0].state == JobState.RUNNING
    wait_for(lambda: "worker-started SOME DATA" in pod_log(blocks.kube_client, pod_name))
    pids = kube.pod_pids(pod_name)

    assert blocks.cancel([job_id]) == [True]
    assert blocks.status([job_id])[0].state == JobState.CANCELLED
    kube.wait_pod(pod_name, lambda pod: pod is None)
    assert gone(pids) and kube.pods() == []


def test_parsl_blocks_that_exit_are_restarted_as_the_provider_sets_no_restart_policy(
    kube, provider
):
    from parsl.jobs.states import JobState

    blocks = provider(image="python:3.11", namespace=NS, init_blocks=0)
    job_id = blocks.submit("echo done", 1)
    pod_name = blocks.resources[job_id]["pod_name"]
    pod = kube.wait_pod(pod_name, lambda p: container_status(p).get("restartCount", 0) >= 1)
    assert pod["spec"]["restartPolicy"] == "Always"
    assert blocks.status([job_id])[0].state == JobState.RUNNING  # never COMPLETED
    blocks.cancel([job_id])
    kube.wait_pod(pod_name, lambda pod: pod is None)


def test_parsl_provider_still_reports_running_a_pod_deleted_behind_its_back(kube, provider):
    """The provider marks a pod it cannot read ``Unknown`` only when its status ``is`` a new
    ``JobStatus`` (never), so a pod deleted by someone else stays RUNNING to it: a backend
    has to notice lost pods itself, by listing or watching its label."""
    from parsl.jobs.states import JobState

    blocks = provider(image="python:3.11", namespace=NS, init_blocks=0)
    job_id = blocks.submit("exec sleep 600", 1)
    pod_name = blocks.resources[job_id]["pod_name"]
    kube.wait_pod(pod_name, phase("Running"))
    blocks.kube_client.delete_namespaced_pod(pod_name, NS, grace_period_seconds=0)
    kube.wait_pod(pod_name, lambda pod: pod is None)
    assert blocks.status([job_id])[0].state == JobState.RUNNING
    with pytest.raises(client.ApiException) as missing:  # and cancelling it raises the 404
        blocks.cancel([job_id])
    assert missing.value.status == 404
