"""The ``kubernetes`` backend: each pilot is one pod (a Parsl HTEx block) running a worker pool.

Only Kubernetes' differences live here: the option model, the pod's shape, and ``pilot
ping``. The provider (:mod:`executor.sites.kube_provider`) creates, watches and deletes the
pods; :mod:`executor.sites.kube_api` talks to the API server. Needs the extra
``pilot-executor[kubernetes]`` (the real ``kubernetes`` client). See docs/kubernetes.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from executor.errors import ConfigError
from executor.model.units import Megabytes, Seconds, WholeSeconds
from executor.policy.pools import PoolConfig
from executor.sites.base import SiteConfig

_QUANTITY = re.compile(r"^[0-9.]+(?:[eE][+-]?[0-9]+)?(?:[KMGTPE]i|[mkMGTPE])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass(frozen=True, kw_only=True)
class KubernetesSite(SiteConfig):
    """Pilots are pods created through the Kubernetes API; their workers connect back.

    Parameters
    ----------
    kubeconfig, context, namespace
        The kubeconfig file (default ``$KUBECONFIG``, then ``~/.kube/config``), its
        context (default: the current one) and the namespace (default: the context's).
    in_cluster
        Use the service account of the pod the driver runs in instead of a kubeconfig.
    image, image_pull_policy, image_pull_secret
        The workers' image (it needs the driver's Python minor version and Parsl
        version), when to pull it, and the Secret holding registry credentials.
    service_account
        The pods' service account (default: the namespace's ``default``).
    cores_per_pod
        Cores a pod asks for; sizes ``workers: auto``. Default: what its workers need.
    memory_overhead
        Memory of the worker pool itself, added to its jobs' memory in the pod's request.
    node_selector, tolerations
        Where pods may run (``spec.nodeSelector``, ``spec.tolerations``, as in a pod).
    labels, annotations
        Extra metadata on every pod (pilot adds its own ``pilot.run`` and ``pilot.pool``).
    volumes, volume_mounts
        Extra ``spec.volumes`` and the worker container's ``volumeMounts``, as in a pod.
    env
        Environment variables of the workers.
    worker_port
        The port the driver's interchange listens on for workers (pool *i* uses
        ``worker_port + i``): the cluster's network policy must let pods reach
        ``address`` on these ports. Empty: any free port in 54000-55000.
    poll_interval, api_timeout
        Seconds between status queries of the pods; seconds an API request may take.
    heartbeat_threshold
        Seconds without a heartbeat after which a pod's workers count as lost and their
        jobs are retried (without using their retries).
    probe_timeout
        Seconds ``pilot ping`` waits for its probe pod.
    log_tail_bytes
        Bytes of each job's stdout and stderr brought back from its pod, at most (the end).
    """

    backend: ClassVar[str] = "kubernetes"

    kubeconfig: str | None = field(default=None, metadata={"example": "~/.kube/config"})
    context: str | None = field(default=None, metadata={"example": "summit"})
    namespace: str | None = field(default=None, metadata={"example": "rubin-pilot"})
    in_cluster: bool = False
    image: str = field(default="", metadata={"example": "ghcr.io/lsst/pilot-worker:2026.10"})
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secret: str | None = field(default=None, metadata={"example": "registry-creds"})
    service_account: str | None = field(default=None, metadata={"example": "pilot"})
    cores_per_pod: int | None = field(default=None, metadata={"example": "4"})
    memory_overhead: Megabytes = 512
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    worker_port: int | None = 54000
    poll_interval: Seconds = 2.0
    api_timeout: Seconds = 10.0
    heartbeat_threshold: WholeSeconds = 30
    probe_timeout: Seconds = 120.0
    log_tail_bytes: int = 1_000_000
    # Pods share no filesystem with the driver: code and pilot's runtime travel with bundles.
    shared_filesystem: bool = False
    ship_runtime: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # the types and units of every field first
        where = self.source or f"site {self.name!r}"
        if not self.image:
            raise ConfigError(
                f"{where}: image: the workers' image is required; write e.g. "
                "`image: ghcr.io/lsst/pilot-worker:2026.10` (it needs the driver's Python "
                "minor version and Parsl version; check with `pilot ping`)"
            )
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ConfigError(
                f"{where}: in_cluster: true uses the pod's service account; remove "
                "`kubeconfig:` and `context:`, or set `in_cluster: false`"
            )
        for key in ("cores_per_pod", "worker_port", "log_tail_bytes"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{where}: {key}: {value!r} must be a whole number >= 1")
        if self.worker_port is not None and self.worker_port + len(self.pools) > 65536:
            raise ConfigError(f"{where}: worker_port: {self.worker_port} + one port per pool "
                              "must stay below 65536; write e.g. `worker_port: 54000`")  # fmt: skip
        for key in ("node_selector", "labels"):
            for name, value in getattr(self, key).items():
                if not _LABEL_KEY.match(name) or not _LABEL_VALUE.match(value):
                    raise ConfigError(
                        f"{where}: {key}: {name!r}: {value!r} is not a Kubernetes label (keys "
                        "and values: letters, digits, '-', '_', '.', at most 63 characters)"
                    )
        if any(name.startswith("pilot.") for name in self.labels):
            raise ConfigError(f"{where}: labels: keys starting with 'pilot.' are pilot's own")
        for name in self.env:
            if not _ENV_NAME.match(name):
                raise ConfigError(f"{where}: env: {name!r} is not a valid variable name")
        volumes = {str(volume.get("name")) for volume in self.volumes}
        for i, mount in enumerate(self.volume_mounts):
            if mount.get("name") not in volumes or not str(mount.get("mountPath", "")).startswith(
                "/"
            ):
                raise ConfigError(
                    f"{where}: volume_mounts[{i}]: needs `name:` of one of `volumes:` "
                    f"({', '.join(sorted(volumes)) or 'none declared'}) and an absolute "
                    "`mountPath:`; write e.g. `{name: scratch, mountPath: /scratch}`"
                )
        for i, toleration in enumerate(self.tolerations):
            if not set(toleration) <= {"key", "operator", "value", "effect", "tolerationSeconds"}:
                raise ConfigError(
                    f"{where}: tolerations[{i}]: keys are key, operator, value, effect, "
                    "tolerationSeconds; write e.g. `{key: dedicated, operator: Equal, "
                    "value: pilot, effect: NoSchedule}`"
                )

    # -- what the base asks of a backend ---------------------------------------------
    def default_pools(self) -> tuple[PoolConfig, ...]:
        return (PoolConfig(name="default", cores=1, memory=2000, workers=1, max_blocks=4),)

    def node_cores(self) -> int:
        return self.cores_per_pod or 1

    def executor_options(self, pool: PoolConfig) -> dict[str, Any]:
        from executor.sites.kube_provider import KubeBlockErrorHandler

        fix = (f"fix `image:` (or image_pull_secret) in {self.source or 'the site file'}, "
               "then `pilot restart`")  # fmt: skip
        options: dict[str, Any] = {
            "block_error_handler": KubeBlockErrorHandler(fix),
            "heartbeat_threshold": self.heartbeat_threshold,
            "heartbeat_period": max(1, min(5, self.heartbeat_threshold // 4)),
        }
        if self.worker_port is not None:
            options["worker_port"] = self.worker_port + self.pools.index(pool)
        return options

    def make_provider(self, pool: PoolConfig) -> Any:
        from executor.sites.kube_api import api_client, namespace_of
        from executor.sites.kube_provider import PilotKubernetesProvider

        workers = self.workers(pool)
        return PilotKubernetesProvider(
            api=api_client(self), namespace=namespace_of(self), pool=pool.name,
            pod_spec=lambda name, job, script: self.pod_body(pool, name, job, script),
            poll_interval=float(self.poll_interval), api_timeout=float(self.api_timeout),
            max_blocks=pool.max_blocks, cores_per_node=self.cores_per_pod or workers * pool.cores,
        )  # fmt: skip

    def make_executors(self) -> list[Any]:
        """The base's executors, each deleting its pool's pods and Secret when it shuts down
        (Parsl does not cancel the blocks of a pool it gave up on: a bad image), and
        bringing each job's logs back with its outcome (pods share no filesystem)."""
        from executor.sites.kube_provider import bring_logs_back

        executors = super().make_executors()
        for executor in executors:
            close = getattr(executor.provider, "close", None)
            if close is not None:
                executor.shutdown = _then(executor.shutdown, close)
                bring_logs_back(executor, self.log_tail_bytes)
        return executors

    def cancel_orphaned_pilots(self, job_ids: list[str]) -> None:
        """Delete every pod and Secret of the runs these pilots belong to (by run label)."""
        from executor.sites.kube_api import delete_runs

        delete_runs(self, job_ids)

    def clean_up_run(self, run_id: str) -> list[str]:
        """Delete every pod and Secret labelled with the run (after its driver died)."""
        from executor.sites.kube_api import delete_run

        deleted = delete_run(self, run_id)
        return [f"{deleted} pod(s) and secret(s) of run {run_id}"] if deleted else []

    def ping(self) -> list[str]:
        """API reachable, namespace, permissions, and a probe pod's Python and Parsl versions."""
        from executor.sites.kube_api import PROBE, ping

        pool = self.pools[0]
        body = self.pod_body(pool, "pilot-ping", "pilot ping", "")
        container = body["spec"]["containers"][0]
        container["command"] = ["python3", "-c", PROBE]
        body["metadata"]["labels"]["pilot.probe"] = "true"
        lines = ping(self, body)
        try:
            loopback = ipaddress.ip_address(self.address).is_loopback
        except ValueError:  # a host name: cannot judge it here
            loopback = False
        if loopback:
            lines.append(f"address {self.address}: loopback; only pods on this host reach it "
                         "(set `address:` to one the pods can reach)")  # fmt: skip
        return lines

    # -- the pod ---------------------------------------------------------------------
    def pod_body(self, pool: PoolConfig, name: str, job_name: str, script: str) -> dict[str, Any]:
        """A pilot pod of ``pool`` running ``script`` (the provider adds labels, the Secret)."""
        workers = self.workers(pool)
        cpu = str(self.cores_per_pod or workers * pool.cores)
        requests: dict[str, str] = {"cpu": cpu}
        limits: dict[str, str] = {"cpu": cpu}
        if pool.memory:
            # A pod holds its workers' jobs, each allowed memory_tolerance over its
            # request before pilot kills it, and the worker pool itself.
            jobs = workers * pool.memory
            requests["memory"] = f"{jobs + self.memory_overhead}M"
            limits["memory"] = f"{int(jobs * (1 + self.memory_tolerance)) + self.memory_overhead}M"
        env = [{"name": key, "value": value} for key, value in sorted(self.env.items())]
        script = f"{self.worker_init}\n{script}" if self.worker_init else script
        container = {
            "name": "worker", "image": self.image, "imagePullPolicy": self.image_pull_policy,
            "command": ["/bin/sh", "-c", script], "env": env,
            "resources": {"requests": requests, "limits": limits},
            "volumeMounts": [dict(mount) for mount in self.volume_mounts],
        }  # fmt: skip
        spec: dict[str, Any] = {
            "restartPolicy": "Never",  # a worker pool that exits is a pilot that ended
            "containers": [container],
            "volumes": [dict(volume) for volume in self.volumes],
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(toleration) for toleration in self.tolerations],
            "terminationGracePeriodSeconds": 10,
        }
        if self.service_account:
            spec["serviceAccountName"] = self.service_account
        if self.image_pull_secret:
            spec["imagePullSecrets"] = [{"name": self.image_pull_secret}]
        metadata = {
            "name": name,
            "labels": dict(self.labels),
            "annotations": {**self.annotations, "pilot.parsl-job": job_name},
        }
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _then(first: Any, then: Any) -> Any:
    def both(*args: Any, **kwargs: Any) -> Any:
        try:
            return first(*args, **kwargs)
        finally:
            then()

    return both
