"""The ``globus_compute`` backend: bundles run as tasks on Globus Compute endpoints.

Only this backend's differences live here: its options, the executors it builds (one
:class:`~executor.sites.globus_executor.PilotGlobusExecutor` per pool, over one SDK
``Executor`` per endpoint), and ``pilot ping``. There are no pilots to start: an
endpoint runs its own workers. Workers share no filesystem with the driver, so the
defaults differ from the base's: the code and pilot's worker runtime travel with the
bundles, in chunks under the service's 10 MB per task (see docs/globus.md).
"""

from __future__ import annotations

import importlib
import platform
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from executor.errors import ConfigError, SiteError
from executor.model.units import MemoryText, Seconds, parse_memory
from executor.policy.pools import PoolConfig
from executor.sites.base import SiteConfig

# Base64 makes serialized bytes 4/3 as large; the rest is room for the framing.
SERIALIZED_GROWTH = 4 / 3
FRAMING = 0.95
POOL_OPTIONS = ("user_endpoint_config", "resource_specification", "endpoint_id")
EXTRA = "pip install 'pilot-executor[globus]'"
# Values of an endpoint's template and of a resource specification: plain YAML scalars,
# so a nested mapping written by mistake is refused at load.
Scalar = str | int | float | bool


@dataclass(frozen=True, kw_only=True)
class GlobusComputeSite(SiteConfig):
    """Bundles of jobs are Globus Compute tasks on one or several endpoints.

    Parameters
    ----------
    endpoint_id
        The endpoint's UUID; a list of them (equal weights); or a mapping of UUID to
        weight (``{A: 3, B: 1}`` sends three bundles to A for each to B).
    user_endpoint_config
        For a multi-user endpoint: the values its template takes (``account``,
        ``partition``, ``walltime``, ``worker_init``, ...).
    resource_specification
        Per-task resources for endpoints that take them (MPI: ``num_nodes``, ...).
    pool_options
        Per pool, any of ``user_endpoint_config``, ``resource_specification`` (merged
        over the site's) and ``endpoint_id`` (instead of the site's).
    endpoint_check_interval, endpoint_timeout
        How often each endpoint's status is asked, and how long it may stay not
        ``online`` before it leaves the rotation (its bundles go to the others).
    log_tail_bytes
        Of each job's stdout and stderr, the last bytes brought back at most (less when
        a bundle's jobs must share the 10 MB result); the log says what was cut.
    scratch_dir
        Where on the endpoint each bundle's scratch directory is made (default: the
        endpoint worker's temporary directory).
    keep_scratch
        Leave scratch directories on the endpoint (to debug a job).
    executor_factory
        For testing: ``module:callable`` that returns an SDK ``Executor`` for
        ``(endpoint_id, **options)``, in place of ``globus_compute_sdk.Executor``.
    """

    backend: ClassVar[str] = "globus_compute"

    endpoint_id: str | list[str] | dict[str, float] = field(
        default="", metadata={"example": "4b116d3c-1703-4f8f-9f6f-39921e5864df"}
    )
    user_endpoint_config: dict[str, Scalar] | None = field(
        default=None, metadata={"example": "{account: rubin, partition: milano}"}
    )
    resource_specification: dict[str, Scalar] | None = field(
        default=None, metadata={"example": "{num_nodes: 1}"}
    )
    pool_options: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"example": "{big: {user_endpoint_config: {mem: 64G}}}"}
    )
    endpoint_check_interval: Seconds = 30.0
    endpoint_timeout: Seconds = 300.0
    log_tail_bytes: int = 65536
    scratch_dir: str | None = field(default=None, metadata={"example": "/scratch/me/pilot"})
    keep_scratch: bool = False
    executor_factory: str | None = field(
        default=None, metadata={"example": "globus_standin:make_executor"}
    )
    # No shared filesystem: code and pilot's runtime travel with the bundles, in chunks.
    shared_filesystem: bool = False
    ship_runtime: bool = True
    max_payload: MemoryText | None = "10MB"
    # At most 100 jobs a bundle: their results (64 kB each at most) fit one 10 MB result.
    packing_max_jobs: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        where = self.source or f"site {self.name!r}"
        if not self.endpoint_id:
            raise ConfigError(
                f"{where}: endpoint_id: required for a globus_compute site; write e.g. "
                "`endpoint_id: 4b116d3c-1703-4f8f-9f6f-39921e5864df` (from "
                "`globus-compute-endpoint list` on the endpoint's host)"
            )
        _weighted(self.endpoint_id, where, "endpoint_id")
        if self.start_locally:
            raise ConfigError(
                f"{where}: start_locally: not supported by a globus_compute site (its "
                "workers are the endpoint's); remove it"
            )
        if self.shared_filesystem:
            raise ConfigError(
                f"{where}: shared_filesystem: an endpoint cannot read the driver's run "
                "directory; remove the line (code travels with the bundles)"
            )
        if self.max_payload is None:
            raise ConfigError(f"{where}: max_payload: required (Globus Compute takes 10MB)")
        names = {pool.name for pool in self.pools}
        for pool, options in self.pool_options.items():
            if pool not in names:
                raise ConfigError(
                    f"{where}: pool_options: no pool named {pool!r}; pools: "
                    f"{', '.join(sorted(names))}"
                )
            unknown = sorted(set(options) - set(POOL_OPTIONS))
            if unknown:
                raise ConfigError(
                    f"{where}: pool_options: {pool}: unknown key {unknown[0]!r}; "
                    f"valid keys: {', '.join(POOL_OPTIONS)}"
                )
            if "endpoint_id" in options:
                _weighted(options["endpoint_id"], where, f"pool_options: {pool}: endpoint_id")
        for key in ("log_tail_bytes",):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}: {key}: must be a whole number of bytes >= 1")

    # -- what the base asks of a backend ---------------------------------------------
    def default_pools(self) -> tuple[PoolConfig, ...]:
        # Workers: bundles out at once per endpoint (the endpoint runs them as it can).
        return (PoolConfig(name="default", cores=1, workers=4, max_blocks=1),)

    def node_cores(self) -> int:
        return 1

    @property
    def payload_limit(self) -> int | None:
        """Raw bytes a bundle's code chunks may take: the service counts base64 text."""
        return int(self.service_limit / SERIALIZED_GROWTH * FRAMING)

    @property
    def service_limit(self) -> int:
        """Serialized bytes one task (and one result) may take."""
        return parse_memory(self.max_payload) * 1_000_000

    def make_executors(self) -> list[Any]:
        from executor.sites.globus_executor import Endpoint, PilotGlobusExecutor

        executors = []
        for pool in self.pools:
            options = self.pool_options.get(pool.name, {})
            weights = _weighted(options.get("endpoint_id", self.endpoint_id), "", "")
            user_config = {
                **(self.user_endpoint_config or {}),
                **options.get("user_endpoint_config", {}),
            }
            resources = {
                **(self.resource_specification or {}),
                **options.get("resource_specification", {}),
            }
            endpoints = []
            for endpoint_id, weight in weights.items():
                arguments = {
                    "user_endpoint_config": user_config or None,
                    "resource_specification": resources or None,
                    "label": f"{self.name}-{pool.name}",
                }

                def make(arguments: dict = arguments, endpoint_id: str = endpoint_id, **more: Any):
                    return self._new_sdk_executor(endpoint_id, **{**arguments, **more})

                endpoints.append(Endpoint(endpoint_id, weight, make(), make))
            executors.append(
                PilotGlobusExecutor(
                    endpoints,
                    label=pool.name,
                    payload_limit=self.service_limit,
                    check_interval=self.endpoint_check_interval,
                    offline_after=self.endpoint_timeout,
                    remote_options={
                        "scratch_dir": self.scratch_dir,
                        "keep_scratch": self.keep_scratch,
                        "log_tail": self.log_tail_bytes,
                        # Of a serialized result, what the outcomes may take as raw text.
                        "result_bytes": int(self.service_limit / SERIALIZED_GROWTH * FRAMING),
                    },
                )  # fmt: skip
            )
        return executors

    def cancel_note(self) -> str | None:
        from executor.sites.globus_executor import CANCEL_NOTE

        return CANCEL_NOTE

    def attempts_left_running(self, run_dir: Path) -> set[tuple[str, int]]:
        """The jobs of tasks the run's journal says were sent and never came back."""
        from executor.sites.globus_journal import JOURNAL, read_journal

        sent = read_journal(run_dir / "parsl" / JOURNAL)
        return {(job, attempt) for record in sent.values() for job, attempt in record["members"]}

    def _new_sdk_executor(self, endpoint_id: str, **options: Any) -> Any:
        factory = _factory(self.executor_factory, self.source or f"site {self.name!r}")
        try:
            return factory(endpoint_id, **options)
        except Exception as exc:  # the boundary with the SDK (login, network)
            raise SiteError(
                f"site {self.name!r}: could not make a Globus Compute executor for endpoint "
                f"{endpoint_id}: {type(exc).__name__}: {exc}; run `globus-compute-endpoint "
                "whoami` or log in again"
            ) from exc

    # -- pilot ping --------------------------------------------------------------------
    def ping(self) -> list[str]:
        """Run a probe on each endpoint; compare its versions with this driver's.

        Raises :class:`SiteError` naming the endpoint and the mismatch when Python's
        minor version or dill differ (the SDK's payloads need both to match).
        """
        from executor.sites import globus_remote
        from executor.sites.globus_executor import _remote_source, stop_sdk_executor

        ids = set()
        for options in [{"endpoint_id": self.endpoint_id}, *self.pool_options.values()]:
            ids |= set(_weighted(options.get("endpoint_id") or self.endpoint_id, "", ""))
        here = driver_versions()
        done: list[str] = []
        problems: list[str] = []
        for endpoint_id in sorted(ids):
            sdk = self._new_sdk_executor(
                endpoint_id, user_endpoint_config=self.user_endpoint_config
            )
            try:
                status = sdk.client.get_endpoint_status(endpoint_id)
                state = status.get("status") if isinstance(status, dict) else None
                if state == "offline":  # the probe would wait for it: say so at once
                    raise SiteError(
                        f"site {self.name!r}: endpoint {endpoint_id} is offline; start it "
                        "(`globus-compute-endpoint start NAME` on its host) and ping again",
                        transient=True,
                    )
                done.append(f"endpoint {endpoint_id}: {state or 'status unknown'}")
                namespace = {"source": _remote_source(), "space": {}}
                future = sdk.submit(eval, globus_remote.PROBE, namespace)
                there = future.result(timeout=self.endpoint_timeout)
            except SiteError:
                raise
            except Exception as exc:  # the boundary with the SDK: say what failed, where
                raise SiteError(
                    f"site {self.name!r}: endpoint {endpoint_id} did not run the probe: "
                    f"{type(exc).__name__}: {exc}; is the endpoint running "
                    "(`globus-compute-endpoint list` on its host)?",
                    transient=True,
                ) from exc
            finally:
                stop_sdk_executor(sdk)
            lines, wrong = compare_versions(endpoint_id, here, there, self.ship_runtime)
            done.extend(lines)
            problems.extend(wrong)
        if problems:
            raise SiteError(
                f"site {self.name!r}: versions differ where they must match:\n  "
                + "\n  ".join(problems)
                + "\n(checked:\n  "
                + "\n  ".join(done)
                + ")"
            )
        return done


def driver_versions() -> dict[str, Any]:
    """This driver's versions of what a task depends on (``None``: not installed)."""
    from executor._version import __version__

    versions: dict[str, Any] = {"python": platform.python_version(), "pilot": __version__}
    for name in ("dill", "globus_compute_sdk", "parsl"):
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            versions[name] = None
    return versions


def compare_versions(
    endpoint_id: str, here: dict[str, Any], there: dict[str, Any], ship_runtime: bool
) -> tuple[list[str], list[str]]:
    """Lines for ``pilot ping`` and the mismatches that break tasks.

    Python's minor version and dill must match: the SDK pickles tasks and results with
    dill, and the endpoint's engine turns Python and Parsl version checks off, so a
    mismatch fails in odd ways. The SDK's and Parsl's versions are shown: pilot's
    bundles do not pickle Parsl's code, and the SDK's wire format is stable.
    """
    lines = [
        f"endpoint {endpoint_id}: runs as {there.get('user')} on {there.get('host')} "
        f"({there.get('executable')})"
    ]
    problems = []

    def minor(version: str | None) -> str | None:
        return ".".join(version.split(".")[:2]) if version else None

    checks = [
        ("python", minor(here["python"]) == minor(there.get("python")), True),
        ("dill", here["dill"] == there.get("dill"), True),
        (
            "globus_compute_sdk",
            here["globus_compute_sdk"] == there.get("globus_compute_sdk"),
            False,
        ),
        ("parsl", here["parsl"] == there.get("parsl"), False),
    ]
    if not ship_runtime:
        checks.append(("pilot", here["pilot"] == there.get("pilot"), True))
    for name, same, needed in checks:
        mine, theirs = here.get(name), there.get(name)
        verdict = "same" if mine == theirs else ("compatible" if same else "MISMATCH")
        lines.append(f"{name}: {theirs or 'not installed'} on the endpoint, {mine} here: {verdict}")
        if not same and needed:
            problems.append(
                f"endpoint {endpoint_id}: {name} {theirs or 'not installed'} there, {mine} here; "
                + _fix(name, mine)
            )
    return lines, problems


def _fix(name: str, mine: str | None) -> str:
    if name == "python":
        return f"use Python {mine} on both sides (dill cannot load across minor versions)"
    if name == "dill":
        return f"install dill=={mine} in the endpoint's environment (the SDK pins dill exactly)"
    return f"install pilot-executor=={mine} on the endpoint, or set `ship_runtime: true`"


def _weighted(value: Any, where: str, key: str) -> dict[str, float]:
    """``endpoint_id`` in any of its forms as ``{uuid: weight}``, checked."""
    if isinstance(value, str):
        weights = {value: 1.0}
    elif isinstance(value, (list, tuple)):
        weights = {str(item): 1.0 for item in value}
    else:
        weights = {str(k): float(v) for k, v in dict(value).items()}
    for endpoint_id, weight in weights.items():
        try:
            uuid.UUID(endpoint_id)
        except ValueError:
            raise ConfigError(
                f"{where}: {key}: {endpoint_id!r} is not an endpoint UUID; write e.g. "
                f"`{key}: 4b116d3c-1703-4f8f-9f6f-39921e5864df`"
            ) from None
        if weight <= 0:
            raise ConfigError(f"{where}: {key}: the weight of {endpoint_id} must be > 0")
    return weights


def _factory(spec: str | None, where: str) -> Any:
    if not spec:
        try:
            from globus_compute_sdk import Executor
        except ImportError as exc:
            raise ConfigError(
                f"{where}: the globus_compute backend needs the Globus Compute SDK: {EXTRA}"
            ) from exc
        return Executor
    module_name, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{where}: executor_factory: cannot load {spec!r} ({exc}); write `module:callable`"
            " importable by the driver (a testing hook: leave it out to use the real SDK)"
        ) from exc
