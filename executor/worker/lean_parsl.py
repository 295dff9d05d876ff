"""Start one of Parsl's own processes (its interchange, a worker pool) without importing
the optional packages they never use.

``import parsl`` imports the Kubernetes client, the Globus Compute SDK, boto3 and
SQLAlchemy whenever they are installed, for providers, executors and monitoring these
processes never use: about 0.9 s of its 1.3 s on the development machine (``python -X
importtime``), paid by every process of a pilot's start-up: the interchange, the worker
pool, the pool's multiprocessing manager and each worker, which import Parsl again.
With two cores that is most of the seconds before a first job runs.

    python -m executor.worker.lean_parsl process_worker_pool.py ARGS...
    python -m executor.worker.lean_parsl /path/to/interchange.py

runs the named Parsl script (found on PATH when it has no directory) as ``__main__``
with those imports failing *for Parsl's own modules only*, as if the packages were not
installed (Parsl then leaves those features off); the same import made by anything
else (a job's own code in a worker) works as usual. The processes a pool starts
(multiprocessing's ``spawn``) import this module again as their main module, so they
are lean too.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import shutil
import sys
from types import FrameType
from typing import Any

# What Parsl's processes never use: Parsl guards each import and turns the feature off.
SKIPPED = ("kubernetes", "globus_compute_sdk", "boto3", "botocore", "sqlalchemy")


class SkipForParsl(importlib.abc.MetaPathFinder):
    """Makes imports of ``names`` made *by Parsl's modules* fail as if not installed."""

    def __init__(self, names: tuple[str, ...] = SKIPPED):
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.partition(".")[0] not in self.names:
            return None
        frame: FrameType | None = sys._getframe(1)
        # Past the import machinery's own frames, to the module doing the import.
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("importlib", "_frozen_importlib")
        ):
            frame = frame.f_back
        if _in_parsl(frame):
            raise ModuleNotFoundError(f"{fullname}: not used by this Parsl process", name=fullname)
        return None


def _in_parsl(frame: FrameType | None) -> bool:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name == "parsl" or name.startswith("parsl.")


def _unchanged(target: Any) -> Any:
    return target


def skip_parsl_type_checks() -> None:
    """Make typeguard's ``@typechecked`` a no-op where Parsl's own modules use it.

    Parsl decorates about 30 of its classes and functions with it, and typeguard
    re-parses and recompiles each one when the module is imported: 0.35-0.4 s of
    the 0.7 s a lean Parsl process spends importing Parsl here, paid again by every
    process of a pilot's start-up. The checks catch wrong argument types given to
    Parsl's API; pilot builds those arguments itself from validated site files.
    Decorations made by any other module (a job's own code) still check. Typeguard
    is not a pilot dependency but Parsl's: nothing to do where it is missing.
    """
    try:
        typeguard = importlib.import_module("typeguard")
    except ImportError:
        return
    real = getattr(typeguard, "typechecked")  # noqa: B009
    if getattr(real, "skips_parsl", False):
        return

    def typechecked(target: Any = None, **options: Any) -> Any:
        if _in_parsl(sys._getframe(1)):
            return target if target is not None else _unchanged
        return real(target, **options)

    typechecked.skips_parsl = True  # type: ignore[attr-defined]
    typechecked.__wrapped__ = real  # type: ignore[attr-defined]
    setattr(typeguard, "typechecked", typechecked)  # noqa: B010 - a module found at run time


def install() -> SkipForParsl:
    """Put the finder first on ``sys.meta_path`` and skip Parsl's type checks (once);
    return the finder."""
    skip_parsl_type_checks()
    for finder in sys.meta_path:
        if isinstance(finder, SkipForParsl):
            return finder
    finder = SkipForParsl()
    sys.meta_path.insert(0, finder)
    return finder


def script_path(name: str) -> str:
    """A Parsl script by path, or by name on PATH or beside this interpreter."""
    if os.sep in name:
        return name
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or beside


def _run_script_here(path: str, namespace: dict[str, Any]) -> None:
    # In this module's own namespace: a spawned child finds the script's functions
    # (pickled as ``__main__.worker``) on its main module, which is this module again.
    with open(path, "rb") as handle:
        code = compile(handle.read(), path, "exec")
    exec(code, namespace)  # noqa: S102 - Parsl's own script, the command asked to run


# A spawned child runs this module as its main module with argv[0] set to this file, so
# the script it must load again travels in the environment.
_SCRIPT = "PILOT_LEAN_PARSL_SCRIPT"

if __name__ in ("__main__", "__mp_main__"):
    install()
    if __name__ == "__main__":
        if len(sys.argv) < 2:
            sys.exit("usage: python -m executor.worker.lean_parsl SCRIPT [ARGS...]")
        os.environ[_SCRIPT] = script_path(sys.argv[1])
        sys.argv = [os.environ[_SCRIPT], *sys.argv[2:]]
    # The script's `if __name__ == "__main__"` part runs in the first process only.
    _run_script_here(os.environ[_SCRIPT], globals())
