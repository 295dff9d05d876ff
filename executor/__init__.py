"""pilot: run job graphs of shell commands and Python functions in pilots.

>>> import executor
>>> wf = executor.Workflow("demo")
>>> _ = wf.shell("hello", "echo hello")
>>> result = executor.run(wf)  # doctest: +SKIP
"""

from executor._version import __version__
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
from executor.graph import Job, JobGraph
from executor.sites.base import SiteConfig
from executor.states import JobState, RunState
from executor.workflow import Workflow


def run(workflow, *, site=None, db=None):  # noqa: ANN001 - documented in executor.runs.run
    """Run a workflow to the end; see :func:`executor.runs.run`."""
    from executor.runs import run as _run

    return _run(workflow, site=site, db=db)


__all__ = [
    "ConfigError",
    "GraphError",
    "Job",
    "JobGraph",
    "JobState",
    "PilotError",
    "RunNotFound",
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
