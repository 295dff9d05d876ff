"""pilot: run job graphs of shell commands and Python functions in pilots.

>>> import executor
>>> wf = executor.Workflow("demo")
>>> _ = wf.shell("hello", "echo hello")
>>> result = executor.run(wf)  # doctest: +SKIP

The names below load on first use (PEP 562): every Parsl worker imports
:mod:`executor.worker`, which must not pay for the driver side, PyYAML included.
"""

import importlib as _importlib
import typing as _typing

from executor._version import __version__

if _typing.TYPE_CHECKING:
    from executor.errors import (
        ConfigError,
        GraphError,
        PilotError,
        RunNotFound,
        RunStateError,
        ShippingError,
        SiteError,
        StoreError,
    )
    from executor.formats import load_workflow
    from executor.model.graph import Job, JobGraph
    from executor.model.states import JobState, RunState
    from executor.model.workflow import Workflow
    from executor.runs.drive import RunResult
    from executor.sites.base import SiteConfig

# Where each exported name is defined.
_EXPORTS = {
    "ConfigError": "executor.errors",
    "GraphError": "executor.errors",
    "PilotError": "executor.errors",
    "RunNotFound": "executor.errors",
    "RunStateError": "executor.errors",
    "ShippingError": "executor.errors",
    "SiteError": "executor.errors",
    "StoreError": "executor.errors",
    "load_workflow": "executor.formats",
    "Job": "executor.model.graph",
    "JobGraph": "executor.model.graph",
    "JobState": "executor.model.states",
    "RunState": "executor.model.states",
    "Workflow": "executor.model.workflow",
    "RunResult": "executor.runs.drive",
    "SiteConfig": "executor.sites.base",
}


def run(workflow, *, site=None, db=None):  # noqa: ANN001 - documented in executor.runs.drive.run
    """Run a workflow to the end; see :func:`executor.runs.drive.run`."""
    from executor.runs.drive import run as _run

    return _run(workflow, site=site, db=db)


def __getattr__(name: str) -> _typing.Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'executor' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ConfigError",
    "GraphError",
    "Job",
    "JobGraph",
    "JobState",
    "PilotError",
    "RunNotFound",
    "RunResult",
    "RunState",
    "RunStateError",
    "ShippingError",
    "SiteConfig",
    "SiteError",
    "StoreError",
    "Workflow",
    "__version__",
    "load_workflow",
    "run",
]
