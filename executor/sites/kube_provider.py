"""Pilots as Kubernetes pods: a Parsl provider that closes the gaps of ``KubernetesProvider``.

Parsl's own provider (2026.10.26) sets no restart policy (a worker pod that exits is
restarted for ever, Parsl issue #2132), no node selector, tolerations, labels or
environment, polls every 60 s, and keeps a pod deleted behind its back RUNNING for ever.
This one replaces it:

- every pod and Secret carries the run's label (:data:`RUN_LABEL`), so a cleanup finds
  them all, even after the driver was killed;
- pods have ``restartPolicy: Never`` and the site's node selector, tolerations, labels,
  annotations, volumes, environment and resources;
- status comes from one label-selected LIST every ``poll_interval`` seconds, and the
  reasons a pod reports (``Evicted``, ``OOMKilled``, ``ImagePullBackOff``,
  ``Unschedulable``, deleted outside pilot) end up in the block's ``JobStatus.message``;
- HTEx's certificate directory reaches the pods as a Secret (see :meth:`_secret_for`).

Imported only when a Kubernetes site builds its executors (it imports Parsl).
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from parsl.jobs.states import JobState, JobStatus
from parsl.providers.base import ExecutionProvider

from executor.errors import SiteError
from executor.sites.block_errors import BlockErrorHandler
from executor.sites.kube_api import RUN_LABEL, api_error, delete_labelled, dns_label
from executor.sites.kube_states import image_problem, translate

logger = logging.getLogger(__name__)

POOL_LABEL = "pilot.pool"
#: Where a pod's certificate Secret is mounted (read-only); it is copied from there to
#: the driver's path, as a private (0700) directory: Parsl refuses any other mode, and
#: a Secret volume's directory is not 0700 (kubelets mount it world-readable).
CERT_MOUNT = "/var/run/secrets/pilot/certificates"


class PilotKubernetesProvider(ExecutionProvider):
    """Parsl blocks as pods of one pool, through the real ``kubernetes`` client.

    Parameters
    ----------
    api
        A ``kubernetes.client.ApiClient`` (see :func:`executor.sites.kube_api.api_client`).
    namespace
        Where pods and Secrets go.
    pool
        The pool's name (a label on each pod).
    pod_spec
        ``(pod name, job name, launch script) -> pod body``: the site's part of the pod.
    poll_interval, api_timeout
        Seconds between status LISTs; seconds each API request may take.
    max_blocks, cores_per_node, mem_per_node
        As Parsl's providers have them (the driver starts blocks itself).
    """

    def __init__(
        self, *, api: Any, namespace: str, pool: str, pod_spec: Any, poll_interval: float,
        api_timeout: float, max_blocks: int, cores_per_node: int | None = None,
        mem_per_node: float | None = None,
    ) -> None:  # fmt: skip
        from kubernetes import client

        self.api = api
        self.core = client.CoreV1Api(api)
        self.namespace, self.pool, self.pod_spec = namespace, pool, pod_spec
        self.poll_interval, self.api_timeout = poll_interval, api_timeout
        self.min_blocks, self.init_blocks, self.max_blocks = 0, 0, max_blocks
        self.nodes_per_block, self.parallelism = 1, 1.0
        self.cores_per_node, self.mem_per_node = cores_per_node, mem_per_node
        self.script_dir: str | None = None  # set by Parsl before the first block
        self.resources: dict[Any, dict[str, Any]] = {}
        #: job id -> why its pod can never start (a bad image): the pool is broken.
        self.fatal: dict[str, str] = {}
        self._secret: str | None = None
        self._lock = threading.Lock()
        self._listed = -float("inf")
        self._closed = False
        atexit.register(self.close)  # a driver that stops Parsl the hard way still cleans up

    # -- what the run is ----------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The run's id, from where Parsl puts this provider's scripts:
        ``runs/<run id>/parsl/<NNN>/submit_scripts``."""
        if not self.script_dir:
            raise SiteError("the Kubernetes provider was used before Parsl set its script_dir")
        return Path(self.script_dir).parents[2].name

    def _labels(self) -> dict[str, str]:
        return {RUN_LABEL: dns_label(self.run_id), POOL_LABEL: dns_label(self.pool)}

    # -- Parsl's provider interface -----------------------------------------------------
    def submit(self, command: str, tasks_per_node: int, job_name: str = "parsl.auto") -> str:
        """Create the block's pod (and, once, the certificate Secret); its name is the job id."""
        block = job_name.rsplit("-", 1)[-1]
        prefix = f"pilot-{self.run_id}-{dns_label(self.pool)[:20]}-{block}"
        name = dns_label(f"{prefix}-{secrets.token_hex(2)}")
        cert_dir = _cert_dir(command)
        script = ["set -e"]
        volumes: list[dict[str, Any]] = []
        if cert_dir is not None:
            secret = self._secret_for(cert_dir)
            quoted = shlex.quote(cert_dir)
            script += [f"mkdir -p {quoted}", f"chmod 0700 {quoted}",
                       f"cp {CERT_MOUNT}/* {quoted}/"]  # fmt: skip
            volumes.append({"name": "pilot-certificates", "secret": {
                "secretName": secret, "defaultMode": 0o400}})  # fmt: skip
        script += ["set +e", f"exec {command}"]
        body = self.pod_spec(name, job_name, "\n".join(script))
        body["metadata"]["labels"].update(self._labels())
        if volumes:
            body["spec"].setdefault("volumes", []).extend(volumes)
            mount = {"name": "pilot-certificates", "mountPath": CERT_MOUNT, "readOnly": True}
            body["spec"]["containers"][0].setdefault("volumeMounts", []).append(mount)
        try:
            self.core.create_namespaced_pod(self.namespace, body, _request_timeout=self.api_timeout)
        except Exception as exc:  # the boundary with the client: say what failed, and how
            raise api_error(exc, f"creating pod {name} in namespace {self.namespace!r}") from exc
        self.resources[name] = {"status": JobStatus(JobState.PENDING), "pod_name": name,
                                "image": body["spec"]["containers"][0]["image"]}  # fmt: skip
        return name

    def status(self, job_ids: Any) -> list[JobStatus]:
        """Each block's state from its pod; a LIST of the pool's pods at most every poll."""
        if any(not self.resources[j]["status"].terminal for j in job_ids):
            self._refresh()
        # Copies: HTEx rewrites the state of what it is given (FAILED to MISSING) in place.
        return [_copy(self.resources[j]["status"]) for j in job_ids]

    def cancel(self, job_ids: Any) -> list[bool]:
        """Delete the blocks' pods; a pod already gone counts as cancelled."""
        done = []
        for job_id in job_ids:
            record = self.resources.get(job_id)
            ok = self._delete_pod(job_id)
            if record is not None and ok and not record["status"].terminal:
                record["status"] = JobStatus(JobState.CANCELLED)
            done.append(ok)
        return done

    @property
    def label(self) -> str:
        return "kubernetes"

    @property
    def status_polling_interval(self) -> int:
        return max(1, round(self.poll_interval))

    # -- the end of the run -------------------------------------------------------------
    def close(self) -> None:
        """Delete every pod and Secret of this pool in this run (idempotent)."""
        with self._lock:
            if self._closed or not self.script_dir:
                return
            self._closed = True
        try:
            delete_labelled(self.core, self.namespace, self._labels(), self.api_timeout)
        except SiteError as exc:
            logger.warning("could not delete the pods of pool %s: %s", self.pool, exc)
        with self._lock:
            for record in self.resources.values():
                if not record["status"].terminal:
                    record["status"] = JobStatus(JobState.CANCELLED)

    # -- inside -------------------------------------------------------------------------
    def _secret_for(self, cert_dir: str) -> str:
        """The run's Secret holding HTEx's certificate directory (made on the first submit:
        Parsl creates the certificates when it starts the executor)."""
        with self._lock:
            if self._secret is not None:
                return self._secret
            from executor.sites.kube_api import b64

            directory = Path(cert_dir)
            data = {p.name: b64(p.read_bytes()) for p in sorted(directory.iterdir()) if p.is_file()}
            name = dns_label(f"pilot-{self.run_id}-{dns_label(self.pool)[:20]}-certs-"
                             f"{secrets.token_hex(2)}")  # fmt: skip
            body = {"metadata": {"name": name, "labels": self._labels()}, "type": "Opaque",
                    "data": data}  # fmt: skip
            try:
                self.core.create_namespaced_secret(
                    self.namespace, body, _request_timeout=self.api_timeout
                )
            except Exception as exc:  # the boundary with the client
                raise api_error(exc, f"creating the certificate Secret {name}") from exc
            self._secret = name
            return name

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._closed or now - self._listed < self.poll_interval / 2:
            return  # closed: its own deletions are not news
        selector = ",".join(f"{k}={v}" for k, v in self._labels().items())
        try:
            # The raw JSON: the client's models are slow to build and not needed here.
            answer = self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _request_timeout=self.api_timeout,
                _preload_content=False,
            )  # fmt: skip
            listed = json.loads(answer.data)
        except Exception as exc:  # no news this time: Parsl asks again at the next poll
            logger.warning("could not list the pods of pool %s: %s", self.pool, exc)
            return
        self._listed = now
        pods = {pod["metadata"]["name"]: pod for pod in listed.get("items") or []}
        for job_id, record in list(self.resources.items()):
            if record["status"].terminal:
                continue
            pod = pods.get(job_id)
            if pod is None:
                why = f"pod {job_id} was deleted outside pilot"
                record["status"] = JobStatus(JobState.MISSING, why)
                continue
            record["node"] = (pod.get("spec") or {}).get("nodeName") or record.get("node")
            status = translate(pod, record["image"])
            if status.state == JobState.FAILED and image_problem(pod):
                self.fatal[job_id] = status.message or ""
                self._delete_pod(job_id)  # it would pull, and fail, for ever
            record["status"] = status

    def _delete_pod(self, name: str) -> bool:
        try:
            self.core.delete_namespaced_pod(
                name, self.namespace, grace_period_seconds=5, _request_timeout=self.api_timeout
            )
        except Exception as exc:  # the boundary with the client
            if getattr(exc, "status", None) == 404:
                return True
            logger.warning("could not delete pod %s: %s", name, api_error(exc, "deleting"))
            return False
        return True


def _copy(status: JobStatus) -> JobStatus:
    return JobStatus(status.state, status.message, exit_code=status.exit_code)


def _cert_dir(command: str) -> str | None:
    found = re.search(r"--cert_dir[ =](\S+)", command)
    return found.group(1) if found and found.group(1) != "None" else None


class KubeBlockErrorHandler(BlockErrorHandler):
    """Ends the run at the first pod whose image cannot be pulled (another pod of the same
    image fails the same way); otherwise as :class:`BlockErrorHandler`."""

    def __init__(self, fix: str, threshold: int = 3):
        super().__init__(threshold)
        self.fix = fix

    def __call__(self, executor: Any, status: dict[str, Any]) -> None:
        fatal = getattr(executor.provider, "fatal", {})
        if fatal:
            message = next(iter(fatal.values()))
            executor.set_bad_state_and_fail_all(
                SiteError(
                    f"pool {executor.label!r}: a pilot can never start: {message}; {self.fix}"
                )
            )
            return
        super().__call__(executor, status)


def bring_logs_back(executor: Any, log_tail: int) -> None:
    """Make ``executor`` run each bundle in a scratch directory of its pod and return the
    tails of the jobs' logs with their outcomes, written here where ``pilot logs`` reads
    them: a pod shares no filesystem with the driver, and may be gone by then.

    The bundle is wrapped as Globus Compute sites wrap theirs
    (:mod:`executor.sites.globus_remote`, sent as source and run by ``eval``).
    """
    from concurrent.futures import Future

    from executor.sites import globus_remote
    from executor.worker.bundle import run_bundle

    source = Path(globus_remote.__file__).read_text()
    submit = executor.submit

    def submit_bundle(func: Any, resource_specification: dict, *args: Any, **kwargs: Any):
        inner = getattr(func, "__wrapped__", func)  # under Parsl's wrap_error
        if inner is eval and len(args) == 2 and isinstance(args[1], dict) and "specs" in args[1]:
            call, runtime = dict(args[1]), True
        elif inner is run_bundle:
            call, runtime = {"specs": args[0], "code": args[1] if len(args) > 1 else None}, False
        else:
            return submit(func, resource_specification, *args, **kwargs)
        options = {"runtime": runtime, "log_tail": log_tail}
        namespace = {"source": source, "space": {}, "call": call, "options": options}
        sent = submit(eval, resource_specification, globus_remote.RUN, namespace)
        answered: Future = Future()
        answered.parsl_executor_task_id = sent.parsl_executor_task_id  # type: ignore[attr-defined]

        def arrived(future: Future) -> None:
            try:
                outcomes = future.result()
            except BaseException as exc:  # the pilot's or worker's loss: the driver classifies it
                answered.set_exception(exc)
                return
            if isinstance(outcomes, list):
                try:
                    _store_logs(outcomes)
                except OSError as exc:
                    logger.error("could not store the logs of a bundle: %s", exc)
            answered.set_result(outcomes)

        sent.add_done_callback(arrived)
        return answered

    executor.submit = submit_bundle


def _store_logs(outcomes: list[dict[str, Any]]) -> None:
    """Write the log tails that came back in ``outcomes`` at the driver's log paths."""
    for outcome in outcomes:
        for stream, tail in (outcome.pop("remote_logs", None) or {}).items():
            if not outcome.get(stream):
                continue
            text = tail.get("text", "")
            if tail.get("cut"):
                text = (f"[pilot: {tail['cut']} earlier bytes of this log were cut in the pod; "
                        f"the last {len(text.encode())} are kept]\n{text}")  # fmt: skip
            target = Path(outcome[stream])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
