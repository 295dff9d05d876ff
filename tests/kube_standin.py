"""A local STAND-IN for the Kubernetes API server, for tests: no cluster can run here.

It answers, over plain HTTP on 127.0.0.1, the core/v1 calls the real ``kubernetes`` client and
Parsl's ``KubernetesProvider`` make, with a real API server's JSON bodies, ``Status`` errors and
watch streams, and runs each pod's first container as a local process in its own mount
namespace (``kube_pods`` says how)::

    with KubeStandIn(tmp_path) as kube:
        kubernetes.config.load_kube_config(config_file=str(kube.kubeconfig))
        kube.wait_pod(name, lambda pod: pod["status"]["phase"] == "Running"); kube.pods()

In-process, Parsl's provider reads ``$KUBECONFIG`` as it was at import: patch ``kube_config``.

Implemented: ``GET /api``, ``/version``; namespaces list, read (a fixed set); pods create,
read (also ``/status``), list (one namespace or all), delete (SIGTERM, SIGKILL after the grace
period, then the object goes), watch (``resourceVersion``, ``timeoutSeconds``), ``/log``
(``tailLines``, ``previous``); secrets create, read, list, delete, watch; access reviews; a
bearer token; equality label selectors and ``metadata.name``/``metadata.namespace``/
``status.phase``/``spec.nodeName``/``type`` field selectors. Pod status as a kubelet reports
it (``kube_pods``): Pending (``Unschedulable``; ``ContainerCreating`` while a mounted secret
is missing; ``ErrImagePull``, ``ImagePullBackOff``), Running, Succeeded/Failed with the exit
code, ``OOMKilled``, restarts (``Always``, the default, and ``OnFailure``), eviction.

Not implemented: scheduling, nodes, capacity; RBAC beyond :meth:`KubeStandIn.deny`; more than
one container, init containers; images (a known image runs the command with this host's
programs); ``valueFrom``/``envFrom``; volumes but ``secret``/``emptyDir`` (a
``persistentVolumeClaim`` keeps the pod Pending, as a missing claim does; others get 422);
``subPath``; probes; CPU limits; other kinds (services, configmaps, events); PATCH, PUT,
delete-collection; ``follow``; set-based selectors; TLS; service-account tokens.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kube_pods
import yaml
from kube_pods import ApiError, PodRunner, b64, matches, now, status_body

__all__ = ["ApiError", "KubeStandIn", "b64"]

VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0-standin", "gitCommit": "0" * 40,
    "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
    "compiler": "gc", "platform": "linux/amd64",
}  # fmt: skip
API_VERSIONS = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}  # fmt: skip
SSAR = ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]


class KubeStandIn:
    """A stand-in Kubernetes API server whose kubelet runs pods as local processes.

    Parameters
    ----------
    directory : Path
        For the kubeconfig, ``api.log`` (a line per request) and each pod's launch specs and
        logs (``pods/<namespace>/<name>-<uid>/log.<run>``).
    namespaces : tuple of str
        The namespaces that exist; the kubeconfig's context uses the first.
    known_images : collection of str, optional
        Only these images pull, when given; otherwise all but those starting with
        ``bad_image_prefix``. Like all knobs, an attribute that may change at any time.
    hide : list of path
        Host directories every pod sees empty (a tmpfs over each, in its mount namespace).
    deny : iterable of (verb, resource)
        Denied from the start; see :meth:`deny`.
    base_env, image_env : dict, optional
        What a container's environment starts from (default: this process's ``PATH``,
        ``HOME``, ``LANG``), and per image what replaces some of it (another ``python3`` on
        ``PATH``, say), before ``HOSTNAME``, ``KUBERNETES_SERVICE_*`` and its ``env``.
    pull_backoff, restart_backoff : float
        Seconds from ``ErrImagePull`` to ``ImagePullBackOff``; the first restart back-off
        (doubling, at most 30 times this). Clusters use about 10 s for both.

    Once started: ``url``, ``kubeconfig`` (the file's path), ``token``. Set ``unschedulable``
    to keep new and pending pods Pending (``Unschedulable``) until it is false again.
    """

    def __init__(
        self,
        directory: Path,
        *,
        namespaces: tuple[str, ...] = ("default",),
        known_images: Any = None,
        bad_image_prefix: str = "bad/",
        hide: Any = (),
        deny: Any = (),
        base_env: dict[str, str] | None = None,
        pull_backoff: float = 1.0,
        restart_backoff: float = 0.5,
        image_env: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.token = secrets.token_hex(16)
        self.namespace = namespaces[0]
        self.known_images, self.bad_image_prefix = known_images, bad_image_prefix
        self.hide = [Path(p) for p in hide]
        self.denied: set[tuple[str, str]] = set(deny)
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        self.base_env = env if base_env is None else base_env
        self.pull_backoff, self.restart_backoff = pull_backoff, restart_backoff
        self.image_env = dict(image_env or {})
        self.unschedulable = False
        self.port, self.url, self.kubeconfig = 0, "", self.directory / "kubeconfig"  # start()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._rv, self._stopping = 1, False
        self._store: dict[str, dict[tuple[str, str], dict]] = {"pods": {}, "secrets": {}}
        self._store["namespaces"] = {("", ns): kube_pods.namespace(ns) for ns in namespaces}
        self._events: list[tuple[int, str, str, dict]] = []  # (rv, type, resource, object)
        self._runners: dict[tuple[str, str], PodRunner] = {}
        self._gone: list[PodRunner] = []  # runners of deleted pods, to find leftover processes
        self._deleting: set[tuple[str, str]] = set()
        self._made: list[Path] = []  # mount points created on the host, removed at the end
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> KubeStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on a random port of 127.0.0.1 and write the kubeconfig."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.kube = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, name="kube-api", daemon=True).start()
        context = {"cluster": "standin", "user": "standin-user", "namespace": self.namespace}
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin-user", "user": {"token": self.token}}],
            "contexts": [{"name": "standin", "context": context}],
        }  # fmt: skip
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))

    def stop(self) -> None:
        """Kill every pod's processes, end open watches, stop serving, remove mount points."""
        with self._lock:
            self._stopping = True
            runners = [*self._runners.values(), *self._gone]  # deleted pods may still be ending
            self._changed.notify_all()
        for runner in runners:
            runner.terminate("shutdown")
        for runner in runners:
            runner.thread.join(15)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for path in sorted(self._made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: someone else put something there
                path.rmdir()

    # -- for tests -------------------------------------------------------------------------
    def pods(self, namespace: str | None = None, **labels: str) -> list[dict]:
        """Copies of the stored pods (in ``namespace``, or all) that carry these labels."""
        with self._lock:
            pods = sorted(self._store["pods"].items())
            return copy.deepcopy([p for (ns, _), p in pods if namespace in (None, ns) and (
                labels.items() <= (p["metadata"].get("labels") or {}).items())])  # fmt: skip

    def wait_pod(self, name: str, until: Any, timeout: float = 30, namespace: str = "default"):
        """Wait until ``until(pod)`` is true (``pod`` is ``None`` once deleted); return the pod."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not until(pod := copy.deepcopy(self._store["pods"].get((namespace, name)))):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pod {name!r} not as expected after {timeout} s: {pod}")
                self._changed.wait(0.2)  # `until` may look beyond the pod (its processes, say)
            return pod

    def pod_pids(self, name: str, namespace: str = "default") -> list[int]:
        """The live local processes of a pod's container (none once it ended)."""
        with self._lock:
            runner = self._runners.get((namespace, name))
        return runner.pids() if runner else []

    def all_pids(self) -> list[int]:
        """The live local processes of every pod ever created here (to find leftovers)."""
        with self._lock:
            runners = [*self._runners.values(), *self._gone]
        return [pid for runner in runners for pid in runner.pids()]

    def evict(self, name: str, namespace: str = "default") -> None:
        """Evict a pod, as a kubelet under memory pressure does: processes killed, phase Failed,
        ``status.reason`` ``Evicted``; the object stays until deleted."""
        with self._lock:
            runner = self._runners[(namespace, name)]
        runner.terminate("evict")
        runner.thread.join(15)

    def deny(self, verb: str, resource: str) -> None:
        """Deny a verb (``create``, ``get``, ``list``, ``watch``, ``delete``, ``*``) on ``pods``,
        ``pods/log``, ``secrets`` or ``namespaces``: in access reviews and with 403s."""
        self.denied.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        """Undo :meth:`deny`."""
        self.denied.discard((verb, resource))

    # -- the store, and what pod runners call ----------------------------------------------
    def _mount_point(self, path: str) -> None:
        """Make a missing mount point on the host (not under a hidden path: the pod makes it)."""
        missing = [p for p in (Path(path), *Path(path).parents) if not p.exists()]
        if not any(Path(path).is_relative_to(hidden) for hidden in self.hide) and missing:
            Path(path).mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._made += missing

    def _set_status(self, runner: PodRunner, status: dict) -> None:
        with self._lock:
            if self._runners.get(runner.key) is runner:  # not a newer pod of the same name
                pod = self._store["pods"][runner.key]
                pod["status"] = copy.deepcopy(status)
                pod["spec"].update({"nodeName": "standin-node"} if runner.scheduled else {})
                self._emit("MODIFIED", "pods", pod)

    def _pod_done(self, runner: PodRunner) -> None:
        with self._lock:
            if self._runners.get(runner.key) is runner and runner.key in self._deleting:
                self._remove(runner.key)

    def _emit(self, kind: str, resource: str, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append((self._rv, kind, resource, copy.deepcopy(obj)))
        self._changed.notify_all()

    def _get(self, resource: str, key: tuple[str, str]) -> dict:
        if (obj := self._store[resource].get(key)) is None:
            raise _not_found(resource, key[1])
        return obj

    def _remove(self, key: tuple[str, str]) -> None:
        pod = self._store["pods"].pop(key)
        self._gone.append(self._runners.pop(key))
        self._deleting.discard(key)
        self._emit("DELETED", "pods", pod)

    def _create(self, resource: str, namespace: str, body: dict) -> dict:
        kind = "Pod" if resource == "pods" else "Secret"
        kube_pods.check_new(kind, body)
        with self._lock:
            if ("", namespace) not in self._store["namespaces"]:
                raise _not_found("namespaces", namespace)
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            meta["name"] = meta.get("name") or meta["generateName"] + secrets.token_hex(3)[:5]
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
            obj.update(kind=kind, apiVersion="v1")
            key = (namespace, meta["name"])
            if key in self._store[resource]:
                raise ApiError(409, "AlreadyExists", f'{resource} "{key[1]}" already exists',
                               {"name": key[1], "kind": resource})  # fmt: skip
            if resource == "secrets":
                obj.setdefault("type", "Opaque")
                strings = {k: b64(v) for k, v in (obj.pop("stringData", None) or {}).items()}
                obj["data"] = {**(obj.get("data") or {}), **strings}
            else:
                kube_pods.default_pod(obj)
            self._store[resource][key] = obj
            self._emit("ADDED", resource, obj)
            if resource == "pods":
                pod_dir = self.directory / "pods" / namespace / f"{key[1]}-{meta['uid'][:8]}"
                pod_dir.mkdir(parents=True)
                runner = self._runners[key] = PodRunner(self, copy.deepcopy(obj), pod_dir)
                runner.thread.start()
            return copy.deepcopy(obj)

    def _delete_pod(self, key: tuple[str, str], grace: float | None) -> dict:
        with self._lock:
            pod, runner = self._get("pods", key), self._runners[key]
            grace = pod["spec"]["terminationGracePeriodSeconds"] if grace is None else grace
            if key not in self._deleting:
                pod["metadata"].update(
                    deletionTimestamp=now(), deletionGracePeriodSeconds=int(grace)
                )
                if runner.running() and grace > 0:  # the kubelet stops it, then the object goes
                    self._deleting.add(key)
                    self._emit("MODIFIED", "pods", pod)
                    runner.terminate("delete", grace)
                else:  # nothing runs (or a forced delete): the object goes now
                    runner.terminate("delete", 0)
                    self._remove(key)
            return copy.deepcopy(pod)

    def _delete_secret(self, key: tuple[str, str]) -> dict:
        with self._lock:
            self._emit("DELETED", "secrets", secret := self._get("secrets", key))
            del self._store["secrets"][key]
        return {**status_body(None), "details": {"name": key[1], "kind": "secrets",
                                                 "uid": secret["metadata"]["uid"]}}  # fmt: skip


def _not_found(resource: str, name: str) -> ApiError:
    details = {"name": name, "kind": resource}
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', details)


def _list(kind: str, items: list, rv: int) -> dict:
    meta = {"resourceVersion": str(rv)}
    return {"kind": f"{kind}List", "apiVersion": "v1", "metadata": meta, "items": items}


class _Handler(BaseHTTPRequestHandler):
    """One request: check the token, route, answer JSON (or a chunked watch stream)."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as the client expects
    server: Any

    def _dispatch(self) -> None:
        self.kube: KubeStandIn = self.server.kube
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if self.headers.get("Authorization") != f"Bearer {self.kube.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            try:
                body = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from exc
            self._route(self.command, [p for p in url.path.split("/") if p], body)
        except ApiError as exc:
            self._send(exc.code, status_body(exc))
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading a stream
            self.close_connection = True
        except Exception as exc:  # a stand-in bug: say so to the client, not just on stderr
            self._send(500, status_body(ApiError(500, "InternalError", repr(exc))))

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        with open(self.server.kube.directory / "api.log", "a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")

    def _route(self, method: str, parts: list[str], body: dict) -> None:
        kube = self.kube
        nowhere = ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and parts in (["api"], ["version"]):
            return self._send(200, API_VERSIONS if parts == ["api"] else VERSION)
        if method == "POST" and parts == SSAR:
            return self._send(201, self._review(body))
        rest = parts[2:] if parts[:2] == ["api", "v1"] else []
        namespace = rest[1] if len(rest) > 2 and rest[0] == "namespaces" else None
        segments = rest[2:] if namespace else rest
        resource, name, sub = (segments + [None] * 3)[:3] if len(segments) <= 3 else [None] * 3
        cluster = resource == "namespaces"  # the one cluster-scoped kind here
        if (
            resource not in kube._store
            or (cluster and namespace)
            or (name and not (cluster or namespace))
        ):
            raise nowhere
        if name is None:
            return self._collection(method, resource, namespace, body)
        if sub not in (None, "status", "log") or (sub and resource != "pods"):
            raise nowhere
        key = (namespace or "", name)
        if method == "GET":
            self._authorize("get", "pods/log" if sub == "log" else resource, namespace or "")
            if sub == "log":
                return self._log(key)
            with kube._lock:  # copied under the lock, sent after it: a slow client waits alone
                obj = copy.deepcopy(kube._get(resource, key))
            return self._send(200, obj)
        if method == "DELETE" and sub is None and namespace:
            self._authorize("delete", resource, namespace)
            if resource == "secrets":
                return self._send(200, kube._delete_secret(key))
            grace = self.query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
            return self._send(200, kube._delete_pod(key, None if grace is None else float(grace)))
        raise ApiError(405, "MethodNotAllowed", f"the stand-in does not support {method} here")

    def _collection(self, method: str, resource: str, namespace: str | None, body: dict) -> None:
        kube = self.kube
        if method == "POST" and namespace:
            self._authorize("create", resource, namespace)
            return self._send(201, kube._create(resource, namespace, body))
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"the stand-in does not support {method} here")
        labels = kube_pods.parse_selector(self.query.get("labelSelector", ""))
        fields = kube_pods.parse_selector(self.query.get("fieldSelector", ""), fields=True)
        watch = self.query.get("watch", "").lower() in ("true", "1", "t")  # any ParseBool true
        self._authorize("watch" if watch else "list", resource, namespace or "")
        if watch:
            return self._watch(resource, namespace, labels, fields)
        kind = {"pods": "Pod", "secrets": "Secret", "namespaces": "Namespace"}[resource]
        with kube._lock:
            found = [o for (ns, _), o in sorted(kube._store[resource].items())
                     if namespace in (None, ns) and matches(o, labels, fields)]  # fmt: skip
            answer = _list(kind, copy.deepcopy(found), kube._rv)
        self._send(200, answer)

    def _review(self, body: dict) -> dict:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        resource = "/".join(filter(None, (attrs.get("resource"), attrs.get("subresource"))))
        allowed = not self.kube.denied & {(attrs.get("verb", ""), resource), ("*", resource)}
        status = {
            "allowed": allowed,
            **({} if allowed else {"denied": True, "reason": "KubeStandIn.deny"}),
        }
        return {**body, "metadata": {"creationTimestamp": now()}, "status": status}

    def _authorize(self, verb: str, resource: str, namespace: str) -> None:
        if self.kube.denied & {(verb, resource), ("*", resource)}:
            where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
            raise ApiError(403, "Forbidden", f'{resource} is forbidden: User "standin-user" cannot '
                           f'{verb} resource "{resource}" in API group ""{where}')  # fmt: skip

    def _watch(self, resource: str, namespace: str | None, labels: list, fields: list) -> None:
        """Stream ``{"type", "object"}`` lines until ``timeoutSeconds`` passes or shutdown."""
        kube = self.kube
        deadline = time.monotonic() + float(self.query.get("timeoutSeconds", 1800))
        since, initial = self.query.get("resourceVersion", ""), []
        seen: dict[tuple[str, str], bool] = {}  # whether this watcher sees each object now
        with kube._lock:
            if since in ("", "0"):  # no version given: the current objects first, as ADDED
                since = str(kube._rv)
                for key, obj in sorted(kube._store[resource].items()):
                    if namespace in (None, key[0]):
                        seen[key] = matches(obj, labels, fields)
                        initial += [copy.deepcopy(obj)] if seen[key] else []
            events = kube._events
            position = next((i for i, e in enumerate(events) if e[0] > int(since)), len(events))
        self._send(200, None)
        for obj in initial:
            self._chunk({"type": "ADDED", "object": obj})
        while True:
            with kube._lock:
                while position == len(events) and not kube._stopping and (
                        left := deadline - time.monotonic()) > 0:  # fmt: skip
                    kube._changed.wait(left)
                batch, position = events[position:], len(events)
                done = kube._stopping or time.monotonic() >= deadline
            for _, kind, res, obj in batch:
                key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                if res != resource or namespace not in (None, key[0]):
                    continue
                was, now_ = seen.pop(key, None), matches(obj, labels, fields)
                if kind != "DELETED":
                    seen[key] = now_
                    kind = ("ADDED" if was is False else kind) if now_ else "DELETED" if was else ""
                elif not (was or (was is None and now_)):
                    kind = ""
                if kind:  # an object that leaves the selection is DELETED for this watcher
                    self._chunk({"type": kind, "object": obj})
            if done:
                self.wfile.write(b"0\r\n\r\n")  # and keep the connection: the client pools it
                return

    def _log(self, key: tuple[str, str]) -> None:
        with self.kube._lock:
            self.kube._get("pods", key)
            runner = self.kube._runners[key]
        previous = self.query.get("previous", "").lower() in ("true", "1", "t")
        if (path := runner.log_path(previous)) is None or not path.exists():
            name = runner.container["name"]
            what = f'previous terminated container "{name}"' if previous else f'container "{name}"'
            why = next(iter(runner.state.get("waiting", {}).values()), "not found")
            raise ApiError(400, "BadRequest", f'{what} in pod "{key[1]}" is waiting: {why}')
        lines = path.read_bytes().splitlines(keepends=True)
        tail = int(self.query.get("tailLines", len(lines)))
        self._send(200, b"".join(lines[len(lines) - tail :] if tail else []), "text/plain")

    def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
        """Answer ``body`` (bytes, or an object as JSON); ``None`` starts a chunked stream."""
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        chunked = ("Transfer-Encoding", "chunked")
        self.send_header(*(chunked if data is None else ("Content-Length", str(len(data)))))
        self.end_headers()
        self.wfile.write(data or b"")

    def _chunk(self, item: dict) -> None:
        data = json.dumps(item).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
