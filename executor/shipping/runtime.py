"""pilot's own worker runtime, shipped like user code to workers that lack pilot.

A remote endpoint (Globus Compute) should need only Python and its endpoint
software. With a site's ``ship_runtime: true``, each bundle is sent as a call of the
built-in :func:`eval` (present on every Python, so nothing of pilot is pickled by
reference) whose arguments hold the source of :mod:`executor.worker.codecache`, the
bundle, and the code descriptors. On the worker, that source unpacks the runtime
tarball (the modules of :mod:`executor.worker`, in a package named by their hash, so
two versions never collide in a long-lived worker) from the node's cache, and the
runtime runs the bundle as usual.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from executor.shipping import tarball as shipping
from executor.shipping.tarball import Shipment
from executor.worker.spec import JobSpec

# What each bundle evaluates on the worker (see codecache.bootstrap).
BOOTSTRAP = "exec(source, space) or space['bootstrap'](specs, code, package)"


@functools.cache
def _sources() -> dict[str, bytes]:
    """Every module of the worker side (standard library only, importing each other
    relatively), without its package ``__init__``."""
    package = resources.files("executor.worker")
    return {
        entry.name: entry.read_bytes()
        for entry in package.iterdir()
        if entry.name.endswith(".py") and entry.name != "__init__.py"
    }


def package_name() -> str:
    """``_pilot_runtime_<hash>``: the runtime's import name, unique to its contents."""
    digest = hashlib.sha256()
    for name, data in sorted(_sources().items()):
        digest.update(name.encode() + b"\0" + data + b"\0")
    return "_pilot_runtime_" + digest.hexdigest()[:16]


def build_runtime(into: Path) -> tuple[Shipment, str]:
    """Build the runtime tarball into ``into``; return it and its package name."""
    package = package_name()
    staging = into / package
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in _sources().items():
        (staging / name).write_bytes(data)
    (staging / "__init__.py").write_bytes(b"")
    return shipping.build([staging], into), package


@functools.cache
def _codecache_source() -> str:
    return resources.files("executor.worker").joinpath("codecache.py").read_text()


def bootstrap_call(
    specs: list[JobSpec], code: list[dict[str, Any]], package: str
) -> tuple[str, dict[str, Any]]:
    """The arguments of ``eval`` that run ``specs`` on a worker without pilot."""
    arguments = {"source": _codecache_source(), "space": {}, "package": package}
    return BOOTSTRAP, {**arguments, "specs": specs, "code": code}
