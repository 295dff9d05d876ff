"""API objects and the kubelet for the Kubernetes API stand-in (``kube_standin``).

Objects: ``Status`` errors, a new pod's checks (422) and defaults, selectors. The kubelet: a
:class:`PodRunner` runs a pod's first container and reports each step as a kubelet does
(phase, conditions, ``containerStatuses[].state`` with ``reason``, ``exitCode``, ``message``).
``unshare --mount --uts --pid --fork`` starts :data:`LAUNCHER` in namespaces of its own (all its
processes end with it): it sets the hostname to the pod's name, mounts a tmpfs over each ``hide``
path, a tmpfs with the volume's files at each ``mountPath`` (read-only but for ``emptyDir``), then
execs ``command + args``: a secret mounted where the host has a directory shows the secret,
and the host never sees the pod's mounts (missing mount points are made on the host and
removed at the end). Needs root: see :func:`namespace_problem`. Memory limits are enforced
by polling the container's RSS every 0.1 s (not by a cgroup: an allocation may overshoot).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

POLL = 0.1  # seconds between two looks at a running container (exit, memory)

# PID 1 of the pod's namespaces, the command's parent. It reads its whole spec before
# mounting anything, since the spec file itself may live under a hidden path (``hide`` paths
# come first in ``mounts``: empty, writable).
LAUNCHER = r"""
import base64, json, os, signal, socket, subprocess, sys
spec = json.load(open(sys.argv[1]))
socket.sethostname(spec["env"]["HOSTNAME"])
for mount in spec["mounts"]:
    os.makedirs(mount["path"], exist_ok=True)
    options = "mode=1777" if mount["writable"] else "mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mount["path"]], check=True)
    for rel, (data, mode) in mount["files"].items():
        target = os.path.join(mount["path"], rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "wb").write(base64.b64decode(data))
        os.chmod(target, mode)
    if not mount["writable"]:
        subprocess.run(["mount", "-o", "remount,ro", mount["path"]], check=True)
try:
    if spec["workdir"]:
        os.makedirs(spec["workdir"], exist_ok=True)
        os.chdir(spec["workdir"])
    child = subprocess.Popen(spec["argv"], env=spec["env"])
except OSError as exc:
    open(spec["start_error"], "w").write("exec: %r: %s" % (spec["argv"][0], exc.strerror))
    sys.exit(128)
signal.signal(signal.SIGTERM, lambda *_: child.terminate())  # PID 1 passes it on, as tini does
code = child.wait()
sys.exit(128 - code if code < 0 else code)
"""

_UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_UNITS.update({f"{p}i": 2.0 ** (10 * n) for n, p in enumerate("KMGTPE", 1)})
QUANTITY = re.compile(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([KMGTPE]i|[mkMGTPE])?")
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SELECTABLE = {"metadata.name", "metadata.namespace", "status.phase", "spec.nodeName", "type"}
POD_DEFAULTS = {"restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy":
    "ClusterFirst", "schedulerName": "default-scheduler", "serviceAccountName": "default",
    "securityContext": {}}  # fmt: skip
VOLUME_KINDS = {"secret", "emptyDir", "persistentVolumeClaim"}


class ApiError(Exception):
    """A failed request, answered as a ``Status`` object with this HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_body(error: ApiError | None) -> dict:
    """The ``Status`` object for an error, or for success when ``error`` is ``None``."""
    body: dict = {"kind": "Status", "apiVersion": "v1", "metadata": {}}
    if error is None:
        return {**body, "status": "Success"}
    body.update(status="Failure", message=error.message, reason=error.reason, code=error.code)
    return {**body, "details": error.details} if error.details else body


def namespace(name: str) -> dict:
    meta = {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
            "resourceVersion": "1", "labels": {"kubernetes.io/metadata.name": name}}  # fmt: skip
    return {"kind": "Namespace", "apiVersion": "v1", "metadata": meta,
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}  # fmt: skip


def now() -> str:
    """The current time as the API writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(text: str | bytes) -> str:
    """Base64 of ``text``, as a secret carries its ``data``."""
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (``500Mi``, ``1G``, ``128974848``, ``1e9``, ``250m``) as a number."""
    if not (match := QUANTITY.fullmatch(str(text))):
        raise ValueError(f"not a quantity: {text!r}")
    return float(match[1]) * _UNITS.get(match[2] or "", 1)


def expand(text: str, env: dict[str, str]) -> str:
    """Expand ``$(VAR)`` as Kubernetes does: ``$$`` is ``$``, undefined names stay as written."""
    return _VAR.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def namespace_problem() -> str | None:
    """Why pods cannot get their own mount namespace here, or ``None`` when they can."""
    try:
        command = "unshare --mount --uts --propagation private mount -t tmpfs t /mnt".split()
        probe = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if probe.returncode != 0:
        return f"`unshare --mount` with a tmpfs mount is not permitted: {probe.stderr.strip()}"
    return None


def check_new(kind: str, body: dict) -> None:
    """Raise the API's 422 ``Invalid`` error for what makes a new Pod or Secret invalid."""
    if problems := _problems(kind, body):
        name = (body.get("metadata") or {}).get("name", "")
        listed = ", ".join(f"{field}: {problem}" for field, problem in problems)
        causes = [{"field": field, "message": problem} for field, problem in problems]
        listed = f"[{listed}]" if len(problems) > 1 else listed
        details = {"name": name, "kind": kind, "causes": causes}
        raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {listed}', details)


def _problems(kind: str, body: dict) -> list[tuple[str, str]]:
    meta, problems = body.get("metadata") or {}, []
    name = meta.get("name") or ""
    if not name and not meta.get("generateName"):
        problems.append(("metadata.name", "Required value: name or generateName is required"))
    elif name and (len(name) > 253 or not _SUBDOMAIN.fullmatch(name)):
        problems.append(("metadata.name", f'Invalid value: "{name}": not an RFC 1123 subdomain'))
    if kind == "Secret":  # the API's limit, which shipped code has to respect too
        data = [*(body.get("data") or {}).values(), *(body.get("stringData") or {}).values()]
        if sum(len(v) * 3 // 4 for v in data) > 2**20:
            problems.append(("data", "Too long: must have at most 1048576 bytes"))
        return problems
    spec = body.get("spec") or {}
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for i, volume in enumerate(volumes.values()):
        if not set(volume) - {"name"} <= VOLUME_KINDS:
            problems.append((f"spec.volumes[{i}]", f"Unsupported value: not {VOLUME_KINDS}"))
    if not spec.get("containers"):
        problems.append(("spec.containers", "Required value"))
    for i, container in enumerate(spec.get("containers") or []):
        at = f"spec.containers[{i}]"
        if not _LABEL.fullmatch(container.get("name") or "") or len(container["name"]) > 63:
            problems.append((f"{at}.name", f"Invalid value: {container.get('name')!r}"))
        if not container.get("image"):
            problems.append((f"{at}.image", "Required value"))
        for j, mount in enumerate(container.get("volumeMounts") or []):
            absolute = str(mount.get("mountPath", "")).startswith("/") and not mount.get("subPath")
            if mount.get("name") not in volumes or not absolute:
                problems.append((f"{at}.volumeMounts[{j}]", "Invalid value: not a volume, not an "
                                 "absolute mountPath, or a subPath (unsupported)"))  # fmt: skip
        memory = ((container.get("resources") or {}).get("limits") or {}).get("memory", "0")
        if not QUANTITY.fullmatch(str(memory)):
            problems.append((f"{at}.resources.limits[memory]", f"Invalid value: {memory!r}"))
    return problems


def default_pod(pod: dict) -> None:
    """Fill in what the API server's defaulting fills in for a new pod."""
    spec = pod["spec"]
    for key, value in POD_DEFAULTS.items():
        spec.setdefault(key, copy.deepcopy(value))
    for c in spec["containers"]:
        tagged = ":" in c["image"].rsplit("/", 1)[-1] and not c["image"].endswith(":latest")
        c.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        res = c.setdefault("resources", {})
        if res.get("limits"):  # requests default to the limits
            res["requests"] = {**res["limits"], **(res.get("requests") or {})}
    qos = "Burstable" if spec["containers"][0]["resources"] else "BestEffort"
    pod["status"] = {"phase": "Pending", "qosClass": qos}


def parse_selector(text: str, fields: bool = False) -> list[tuple[str, str, str]]:
    """An equality-based label (or field) selector as (key, operator, value) requirements."""
    requirements = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        found = re.fullmatch(r"(!?)([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?", part)
        if not found or (found[1] and found[3]) or (fields and not found[3]):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if fields and found[2] not in SELECTABLE:
            raise ApiError(400, "BadRequest", f'field label not supported: "{found[2]}"')
        requirements.append((found[2], found[3] or ("!" if found[1] else "exists"), found[4] or ""))
    return requirements


def matches(obj: dict, labels: list, fields: list) -> bool:
    """Whether an object meets every label and field requirement."""
    have = obj["metadata"].get("labels") or {}
    for key, op, value in labels:
        ok = {"exists": key in have, "!": key not in have, "!=": have.get(key) != value}
        if not ok.get(op, have.get(key) == value):
            return False
    for key, op, value in fields:
        section, _, name = key.rpartition(".")
        actual = (obj.get(section) or {}).get(name, "") if section else obj.get(name, "")
        if (actual == value) != (op != "!="):
            return False
    return True


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict:
    why = {k: v for k, v in (("reason", reason), ("message", message)) if v and not ok}
    return {"type": kind, "status": str(ok), "lastTransitionTime": now(), **why}


class PodRunner:
    """Runs one pod's first container as a local process and reports its status.

    Parameters
    ----------
    kube : KubeStandIn
        The stand-in the pod lives in: knobs, secrets, where status is published.
    pod : dict
        The pod as created (a pod's spec does not change).
    directory : Path
        The pod's directory on the host, for launch specs and a log file per run.
    """

    def __init__(self, kube: Any, pod: dict, directory: Path) -> None:
        self.kube, self.spec, self.dir = kube, pod["spec"], directory
        self.key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.container = self.spec["containers"][0]
        self.stop = threading.Event()  # set on deletion, eviction or shutdown
        self.why, self.grace = "", 0.0  # what set `stop`: "delete", "evict" or "shutdown"
        self.proc: subprocess.Popen | None = None
        self.sid: int | None = None  # the running container's session; None once it is empty
        self.restarts = self.runs = 0  # the runs started so far wrote log.0 .. log.{runs-1}
        self.state, self.last = {"waiting": {"reason": "ContainerCreating"}}, {}  # last: lastState
        self.phase, self.reason, self.message = "Pending", "", ""
        self.scheduled, self.started_at, self.qos = False, "", pod["status"]["qosClass"]
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.key[1]}", daemon=True)

    def terminate(self, why: str, grace: float = 0.0) -> None:
        """Stop the pod: ``delete`` (SIGTERM, SIGKILL after ``grace``), ``evict``, ``shutdown``."""
        if not self.stop.is_set():
            self.why, self.grace = why, grace
            self.stop.set()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The container's live processes: the session its main process leads, and their
        descendants (a job that calls ``setsid`` leaves the session, not the pid namespace)."""
        sid, found = self.sid, set()
        for pid in psutil.pids() if sid else ():
            with contextlib.suppress(OSError, psutil.Error):  # gone meanwhile
                if os.getsid(pid) == sid:
                    found |= {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
        return sorted(found)

    def log_path(self, previous: bool = False) -> Path | None:
        """The log of the current (or the previous) run, ``None`` when there is none."""
        run = self.runs - 1 - previous
        return self.dir / f"log.{run}" if run >= 0 else None

    # -- the pod's life --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._live()
        finally:
            self._kill_all()
            self.kube._pod_done(self)

    def _live(self) -> None:
        if not self._wait(self._schedulable):
            return
        self.scheduled, self.started_at = True, now()
        image = self.container["image"]
        known, bad = self.kube.known_images, self.kube.bad_image_prefix
        if image not in known if known is not None else image.startswith(bad):
            why = f'failed to pull and unpack image "{image}": not found'
            self._waiting("ErrImagePull", f'Failed to pull image "{image}": {why}')
            if not self.stop.wait(self.kube.pull_backoff):
                self._waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')
                self.stop.wait()
            return
        while (mounts := self._wait(self._mounts)) is not None:
            code = self._run_once(mounts)
            if code is None:
                return
            policy = self.spec["restartPolicy"]
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self.phase = "Succeeded" if code == 0 else "Failed"
                return self._publish()
            back = min(self.kube.restart_backoff * 2**self.restarts, 30 * self.kube.restart_backoff)
            why = f"back-off {back:g}s restarting failed container={self.container['name']}"
            self.last, self.state = self.state, {"waiting": {"reason": "CrashLoopBackOff",
                                                             "message": why}}  # fmt: skip
            self._publish()
            if self.stop.wait(back):
                return
            self.restarts += 1

    def _wait(self, ready: Any) -> Any:
        """Poll ``ready()`` (which publishes why it is not) until it returns something."""
        while not self.stop.is_set():
            if (result := ready()) is not None:
                return result
            self.stop.wait(2 * POLL)
        return None

    def _schedulable(self) -> bool | None:
        claims = [v["persistentVolumeClaim"]["claimName"] for v in self.spec.get("volumes") or []
                  if "persistentVolumeClaim" in v]  # fmt: skip
        if not self.kube.unschedulable and not claims:
            self.message = ""
            return True
        why = "0/1 nodes are available: 1 node(s) were unschedulable."
        why = f'persistentvolumeclaim "{claims[0]}" not found' if claims else why
        if why != self.message:
            self.message = why
            self._publish()
        return None

    def _mounts(self) -> list[dict] | None:
        """What the launcher mounts, or ``None`` while a secret it needs does not exist."""
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        mounts = []
        for mount in self.container.get("volumeMounts") or []:
            volume, files = volumes[mount["name"]], {}
            if "secret" in volume:
                source = volume["secret"]
                name = source["secretName"]
                with self.kube._lock:
                    secret = copy.deepcopy(self.kube._store["secrets"].get((self.key[0], name)))
                if secret is None and not source.get("optional"):
                    why = f'volume "{mount["name"]}" : secret "{name}" not found'
                    self._waiting("ContainerCreating", f"MountVolume.SetUp failed for {why}")
                    return None
                data, mode = (secret or {}).get("data") or {}, source.get("defaultMode", 0o644)
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                items = [i for i in items if i["key"] in data]  # a missing key: no file
                files = {i["path"]: (data[i["key"]], i.get("mode", mode)) for i in items}
            self.kube._mount_point(mount["mountPath"])
            writable = "emptyDir" in volume and not mount.get("readOnly")
            mounts.append({"path": mount["mountPath"], "files": files, "writable": writable})
        return mounts

    def _run_once(self, mounts: list[dict]) -> int | None:
        """Run the container once: its exit code, or ``None`` when the pod was stopped."""
        env = {**self.kube.base_env, **self.kube.image_env.get(self.container["image"], {})}
        env.update(HOSTNAME=self.key[1][:63], KUBERNETES_SERVICE_HOST="127.0.0.1",
                   KUBERNETES_SERVICE_PORT=str(self.kube.port))  # fmt: skip
        for var in self.container.get("env") or []:
            env[var["name"]] = expand(var.get("value", ""), env)
        argv = (self.container.get("command") or []) + (self.container.get("args") or [])
        argv = [expand(arg, env) for arg in argv]
        if not argv:
            return self._terminated(128, "StartError", "no command specified")
        run, self.runs = self.runs, self.runs + 1
        launch, start_error = self.dir / f"launch.{run}.json", self.dir / f"error.{run}"
        launch.touch(0o600)  # it holds the secrets' contents
        launch.write_text(json.dumps({
            "mounts": [{"path": str(p), "files": {}, "writable": True} for p in self.kube.hide
                       if p.is_dir()] + mounts, "argv": argv, "env": env,
            "workdir": self.container.get("workingDir"), "start_error": str(start_error),
        }))  # fmt: skip
        with open(self.dir / f"log.{run}", "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--propagation",
                 "private", "--",
                 sys.executable, "-I", "-S", "-c", LAUNCHER, str(launch)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={"PATH": os.environ.get("PATH", "")},
            )  # fmt: skip
        self.sid = self.proc.pid  # start_new_session: the launcher leads a session of its own
        self.phase, self.state = "Running", {"running": {"startedAt": now()}}
        self._publish()
        limit = (self.container.get("resources") or {}).get("limits", {}).get("memory")
        code, reason = self._watch_process(parse_quantity(limit) if limit else None)
        self._kill_all()
        if code is None:
            return None
        if start_error.exists():
            return self._terminated(128, "StartError", start_error.read_text())
        return self._terminated(code, reason or ("Completed" if code == 0 else "Error"))

    def _watch_process(self, limit: float | None) -> tuple[int | None, str]:
        """Wait for the main process to end: (exit code, reason); enforce the memory limit."""
        assert self.proc is not None
        while (code := self.proc.poll()) is None:
            if limit is not None and self._rss() > limit:
                self._signal(signal.SIGKILL)
                self.proc.wait()
                return 137, "OOMKilled"
            if self.stop.wait(POLL):
                return self._stopped()
        return (128 - code if code < 0 else code), ""  # a signal, as a runtime reports it

    def _stopped(self) -> tuple[None, str]:
        """Deletion (graceful), eviction or shutdown: kill the container, say what ended it."""
        assert self.proc is not None
        if self.why == "delete" and self.grace > 0:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(self.grace)
        self._signal(signal.SIGKILL)
        code = self.proc.wait()
        code = 128 - code if code < 0 else code
        if self.why == "evict":
            self.phase, self.reason = "Failed", "Evicted"
            self.message = "The node was low on resource: memory. "
        if self.why != "shutdown":
            self._terminated(code, "Completed" if code == 0 else "Error")
        return None, ""

    def _rss(self) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                total += psutil.Process(pid).memory_info().rss
        return total

    def _signal(self, sig: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _kill_all(self) -> None:
        """A container ends with all its processes, as when a runtime tears it down."""
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired, AttributeError):
                self.proc.wait(0.02)  # type: ignore[union-attr] # a zombie stays in the session
        if self.proc is not None:
            self.proc.wait()
        if not self.pids():  # with the session empty, its number may go to another process
            self.sid = None

    # -- status ----------------------------------------------------------------------------
    def _waiting(self, reason: str, message: str) -> None:
        if self.state.get("waiting") != {"reason": reason, "message": message}:
            self.state = {"waiting": {"reason": reason, "message": message}}
            self._publish()

    def _terminated(self, code: int, reason: str, message: str = "") -> int:
        started = self.state.get("running", {}).get("startedAt", now())
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now()}
        self.state = {"terminated": {**term, "message": message} if message else term}
        self._publish()
        return code

    def _publish(self) -> None:
        """Hand the API server this pod's status, as a kubelet reports it."""
        qos, ready, why = self.qos, "running" in self.state, "ContainersNotReady"
        if not self.scheduled:
            sched = _condition("PodScheduled", False, "Unschedulable", self.message)
            status = {"phase": "Pending", "conditions": [sched], "qosClass": qos}
            return self.kube._set_status(self, status)
        why = {"Succeeded": "PodCompleted", "Failed": "PodFailed"}.get(self.phase, why)
        container = {
            "name": self.container["name"], "image": self.container["image"],
            "imageID": f"standin://{self.container['image']}", "ready": ready, "started": ready,
            "restartCount": self.restarts, "state": self.state, "lastState": self.last,
        }  # fmt: skip
        if self.proc is not None:
            container["containerID"] = f"standin://{self.proc.pid}"
        status = {
            "phase": self.phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": self.started_at, "qosClass": qos,
            "conditions": [_condition("PodScheduled", True), _condition("Initialized", True)] + [
                _condition(kind, ready, why) for kind in ("ContainersReady", "Ready")],
            "containerStatuses": [container],
        }  # fmt: skip
        if self.reason:
            status.update(reason=self.reason, message=self.message)
        self.kube._set_status(self, status)
