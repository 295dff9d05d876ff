"""pilot's own worker runtime, shipped like user code to workers that lack pilot.

A remote endpoint (Globus Compute) should need only Python and its endpoint
software. With a site's ``ship_runtime: true``, each bundle is sent as a call of the
built-in :func:`eval` (present on every Python, so nothing of pilot is pickled by
reference) whose arguments hold the source of :mod:`executor.codecache`, the
bundle, and the code descriptors. On the worker, that source unpacks the runtime
tarball (``worker.py``, ``inprocess.py``, ``codecache.py``, ``outcome_log.py`` in a
package named by their hash, so two versions never collide in a long-lived worker)
from the node's
cache, and the runtime runs the bundle as usual.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from executor import shipping
from executor.shipping import Shipment

# The modules a worker needs, all standard-library only.
RUNTIME_MODULES = ("codecache.py", "inprocess.py", "outcome_log.py", "worker.py")
# What each bundle evaluates on the worker (see codecache.bootstrap).
BOOTSTRAP = "exec(source, space) or space['bootstrap'](specs, code, package)"


@functools.cache
def _sources() -> dict[str, bytes]:
    package = resources.files("executor")
    return {name: package.joinpath(name).read_bytes() for name in RUNTIME_MODULES}


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
    return resources.files("executor").joinpath("codecache.py").read_text()


def bootstrap_call(
    specs: list[dict[str, Any]], code: list[dict[str, Any]], package: str
) -> tuple[str, dict[str, Any]]:
    """The arguments of ``eval`` that run ``specs`` on a worker without pilot."""
    arguments = {"source": _codecache_source(), "space": {}, "package": package}
    return BOOTSTRAP, {**arguments, "specs": specs, "code": code}
