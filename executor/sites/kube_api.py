"""The Kubernetes API as the ``kubernetes`` backend uses it: one client, errors, cleanup, ping.

Every call goes through the real ``kubernetes`` client (extra ``pilot-executor[kubernetes]``)
with a configuration of its own (the kubeconfig's context, or the in-cluster service
account), never the client's process-wide default. Client and API errors become
:class:`~executor.errors.SiteError` here, saying what was being done and how to fix it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from executor.errors import ConfigError, SiteError

#: The label every pod and Secret of a run carries: its value is the run id.
RUN_LABEL = "pilot.run"

# What a probe pod prints: its Python and Parsl versions, as JSON on one line.
PROBE = (
    "import json, platform, importlib.metadata as m\n"
    "print(json.dumps({'python': platform.python_version(), 'parsl': m.version('parsl')}))"
)


def dns_label(text: str) -> str:
    """``text`` as a DNS label (lower case, ``[a-z0-9-]``, at most 63), for names and labels."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    return label or "x"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_path(configured: str | None) -> str:
    """The site's ``kubeconfig``, else ``$KUBECONFIG``'s first file, else ``~/.kube/config``."""
    if configured:
        return str(Path(configured).expanduser())
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed[0] if listed else str(Path.home() / ".kube" / "config")


def api_client(site: Any) -> Any:
    """A ``kubernetes.client.ApiClient`` for the site (kubeconfig context, or in-cluster)."""
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise ConfigError(
            f"site {site.name!r} needs the Kubernetes client: "
            "pip install 'pilot-executor[kubernetes]'"
        ) from exc
    configuration = client.Configuration()
    try:
        if site.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=kubeconfig_path(site.kubeconfig), context=site.context,
                client_configuration=configuration, persist_config=False,
            )  # fmt: skip
    except (config.ConfigException, OSError, TypeError) as exc:
        where = "in_cluster: true" if site.in_cluster else kubeconfig_path(site.kubeconfig)
        raise SiteError(
            f"site {site.name!r}: cannot load the Kubernetes configuration ({where}): {exc}; "
            "set `kubeconfig:` (or $KUBECONFIG) and `context:` in "
            f"{site.source or 'the site file'}, or `in_cluster: true` inside the cluster"
        ) from exc
    return client.ApiClient(configuration)


def namespace_of(site: Any) -> str:
    """The site's ``namespace``, else the kubeconfig context's (or the pod's), else default."""
    if site.namespace:
        return site.namespace
    if site.in_cluster:
        mounted = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        return mounted.read_text().strip() if mounted.exists() else "default"
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(kubeconfig_path(site.kubeconfig))
    except (config.ConfigException, OSError):
        return "default"  # api_client() reports an unreadable file
    chosen = next((c for c in contexts if c["name"] == site.context), active) or {}
    return (chosen.get("context") or {}).get("namespace") or "default"


def api_error(exc: BaseException, doing: str) -> SiteError:
    """A client or API exception as a :class:`SiteError` saying what was being done."""
    status = getattr(exc, "status", None)
    if status is None:  # no answer at all: connection refused, timeout, DNS
        return SiteError(f"{doing}: the Kubernetes API does not answer ({exc})", transient=True)
    try:
        message = json.loads(exc.body or "{}").get("message") or exc.reason  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        message = getattr(exc, "reason", "")
    hint = {
        401: "the kubeconfig's credentials are not accepted; log in again",
        403: "ask the cluster's admins for a Role allowing it (see docs/kubernetes.md)",
        404: "check `namespace:` in the site file",
    }.get(status, "")
    transient = status in (429, 500, 502, 503, 504)
    return SiteError(f"{doing}: {status} {message}" + (f"; {hint}" if hint else ""),
                     transient=transient)  # fmt: skip


def delete_labelled(core: Any, namespace: str, labels: dict[str, str], timeout: float) -> int:
    """Delete every pod and Secret in ``namespace`` carrying ``labels``; return how many."""
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    deleted = 0
    for kind in ("pod", "secret"):
        try:
            listed = getattr(core, f"list_namespaced_{kind}")(
                namespace, label_selector=selector, _request_timeout=timeout,
                _preload_content=False,
            )  # fmt: skip
            names = [item["metadata"]["name"] for item in json.loads(listed.data)["items"]]
        except Exception as exc:  # the boundary with the client
            raise api_error(exc, f"listing the {kind}s labelled {selector}") from exc
        for name in names:
            try:
                getattr(core, f"delete_namespaced_{kind}")(
                    name, namespace, _request_timeout=timeout,
                    **({"grace_period_seconds": 5} if kind == "pod" else {}),
                )  # fmt: skip
                deleted += 1
            except Exception as exc:  # the boundary with the client
                if getattr(exc, "status", None) != 404:  # gone meanwhile is fine
                    raise api_error(exc, f"deleting {kind} {name}") from exc
    return deleted


def run_ids_of(job_ids: list[str]) -> set[str]:
    """The run ids in pilot pod names (``pilot-<run id>-<pool>-<block>-<hex>``)."""
    pattern = re.compile(r"^pilot-(\d{8}-\d{6}-[0-9a-f]+)-")
    return {m.group(1) for job in job_ids if (m := pattern.match(str(job)))}


def delete_runs(site: Any, job_ids: list[str]) -> None:
    """Delete every pod and Secret of the runs these pilots (pod names) belong to."""
    for run_id in sorted(run_ids_of(job_ids)):
        delete_run(site, run_id)


def delete_run(site: Any, run_id: str) -> int:
    """Delete every pod and Secret labelled with ``run_id``; return how many."""
    from kubernetes import client

    with api_client(site) as api:
        core = client.CoreV1Api(api)
        return delete_labelled(core, namespace_of(site), {RUN_LABEL: run_id}, site.api_timeout)


# -- pilot ping ---------------------------------------------------------------------------
def ping(site: Any, probe_pod: dict[str, Any]) -> list[str]:
    """Check the API, the namespace, permissions, and the image's Python and Parsl versions.

    ``probe_pod`` is the body of a pod like the site's pilots that runs :data:`PROBE`.
    """
    from kubernetes import client

    done: list[str] = []
    namespace = namespace_of(site)
    with api_client(site) as api:
        try:
            served = client.VersionApi(api).get_code(_request_timeout=site.api_timeout)
        except Exception as exc:  # the boundary with the client
            raise api_error(exc, f"site {site.name!r}: reaching {api.configuration.host}") from exc
        done.append(f"API server {api.configuration.host}: Kubernetes {served.git_version}")
        core = client.CoreV1Api(api)
        try:
            core.read_namespace(namespace, _request_timeout=site.api_timeout)
            done.append(f"namespace {namespace!r}: exists")
        except Exception as exc:  # the boundary with the client
            if getattr(exc, "status", None) != 403:  # may not read namespaces: go on
                raise api_error(exc, f"site {site.name!r}: namespace {namespace!r}") from exc
            done.append(f"namespace {namespace!r}: not readable with these credentials")
        done.append(_check_access(site, api, namespace))
        done.append(_probe(site, core, namespace, probe_pod))
    return done


def _check_access(site: Any, api: Any, namespace: str) -> str:
    from kubernetes import client

    reviews = client.AuthorizationV1Api(api)
    needed = [(verb, "pods") for verb in ("create", "get", "list", "delete")]
    needed += [(verb, "secrets") for verb in ("create", "list", "delete")]
    refused = []
    for verb, resource in needed:
        attributes = client.V1ResourceAttributes(namespace=namespace, verb=verb, resource=resource)
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        )
        try:
            answer = reviews.create_self_subject_access_review(
                review, _request_timeout=site.api_timeout
            )
        except Exception as exc:  # the boundary with the client
            raise api_error(exc, f"site {site.name!r}: asking what this user may do") from exc
        if not answer.status.allowed:
            refused.append(f"{verb} {resource}")
    if refused:
        raise SiteError(
            f"site {site.name!r}: not allowed to {', '.join(refused)} in namespace "
            f"{namespace!r}; ask the cluster's admins for a Role that allows create, get, list "
            "and delete on pods and create, list and delete on secrets (see docs/kubernetes.md)"
        )
    return f"permissions: create/get/list/delete pods, create/list/delete secrets in {namespace!r}"


def _probe(site: Any, core: Any, namespace: str, pod: dict[str, Any]) -> str:
    """Run a probe pod of the site's image; compare its versions with this driver's."""
    name = pod["metadata"]["name"] = dns_label(f"pilot-ping-{secrets.token_hex(3)}")
    image = pod["spec"]["containers"][0]["image"]
    try:
        core.create_namespaced_pod(namespace, pod, _request_timeout=site.api_timeout)
    except Exception as exc:  # the boundary with the client
        raise api_error(exc, f"site {site.name!r}: creating the probe pod {name}") from exc
    try:
        log = _probe_log(site, core, namespace, name, image)
    finally:
        try:
            core.delete_namespaced_pod(
                name, namespace, grace_period_seconds=0, _request_timeout=site.api_timeout
            )
        except Exception:  # the probe may be gone already; nothing to clean then
            pass
    try:
        found = json.loads(log.strip().splitlines()[-1])
        theirs = (str(found["python"]), str(found["parsl"]))
    except (ValueError, IndexError, KeyError, TypeError):
        raise SiteError(
            f"site {site.name!r}: the probe pod {name} (image {image}) did not report its Python "
            f"and Parsl versions; it printed: {log.strip()[-300:]!r}; the image needs python3 "
            "with Parsl installed"
        ) from None
    ours = (".".join(map(str, sys.version_info[:3])), version("parsl"))
    same_minor = theirs[0].split(".")[:2] == ours[0].split(".")[:2]
    if not same_minor or theirs[1] != ours[1]:
        raise SiteError(
            f"site {site.name!r}: VERSION MISMATCH: image {image} has Python {theirs[0]} and "
            f"Parsl {theirs[1]}, this driver has Python {ours[0]} and Parsl {ours[1]}; workers "
            "must have the driver's Python minor version and exactly its Parsl version: build "
            f"the image with python{'.'.join(ours[0].split('.')[:2])} and parsl=={ours[1]}, or "
            "run the driver in the same image"
        )
    return (f"probe pod (image {image}): Python {theirs[0]}, Parsl {theirs[1]}, "
            "the same as this driver's")  # fmt: skip


def _probe_log(site: Any, core: Any, namespace: str, name: str, image: str) -> str:
    from executor.sites.kube_states import translate

    deadline = time.monotonic() + site.probe_timeout
    while True:
        try:
            answer = core.read_namespaced_pod(
                name, namespace, _request_timeout=site.api_timeout, _preload_content=False
            )
            pod = json.loads(answer.data)
        except Exception as exc:  # the boundary with the client
            raise api_error(exc, f"site {site.name!r}: reading the probe pod {name}") from exc
        status = translate(pod, image)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        if status.state.name == "FAILED":
            raise SiteError(f"site {site.name!r}: the probe {status.message}; fix `image:` "
                            f"in {site.source or 'the site file'}")  # fmt: skip
        if time.monotonic() > deadline:
            raise SiteError(
                f"site {site.name!r}: the probe pod {name} did not finish within "
                f"{site.probe_timeout:g} s ({status.message or phase}); see "
                f"`kubectl describe pod -n {namespace} {name}`", transient=True,
            )  # fmt: skip
        time.sleep(0.5)
    try:
        answer = core.read_namespaced_pod_log(
            name, namespace, _request_timeout=site.api_timeout, _preload_content=False
        )
    except Exception as exc:  # the boundary with the client
        raise api_error(exc, f"site {site.name!r}: reading the probe pod's log") from exc
    text = answer.data.decode(errors="replace")
    if phase == "Failed":
        raise SiteError(
            f"site {site.name!r}: the probe pod {name} (image {image}) failed: "
            f"{status.message}; it printed: {text.strip()[-300:]!r}; the image needs python3 "
            "with Parsl installed"
        )
    return text
