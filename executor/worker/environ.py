"""The worker process's own environment, read in full only when it has changed.

``os.environ`` decodes every name and value on each full read: with a hundred variables
that is about 0.1 ms, and a function job run inside the worker read it four times
(its environment, the worker's to restore, two comparisons): most of such a job's
cost. Here the worker's environment is read once and kept with a copy of
``os.environ``'s raw bytes; one C-level comparison of those bytes then proves it
unchanged. Switching to a job's environment and back touches only the variables that
differ, and a job that changed other variables itself is still undone in full.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_OWN: dict[str, object] = {}


def own_environment() -> dict[str, str]:
    """This process's environment now (do not modify the dict returned)."""
    raw = getattr(os.environ, "_data", None)  # CPython's bytes mapping behind os.environ
    cached = _OWN.get("env")
    if cached is None or raw is None or raw != _OWN.get("raw"):
        cached = dict(os.environ)
        _OWN["env"] = cached
        _OWN["raw"] = dict(raw) if raw is not None else None
    return cached  # type: ignore[return-value]


def set_environ(target: Mapping[str, str], current: Mapping[str, str] | None = None) -> None:
    """Make ``os.environ`` equal ``target``, touching only what differs.

    ``current`` is what ``os.environ`` holds now, when the caller knows it.
    """
    current = dict(os.environ) if current is None else current
    for key in current.keys() - target.keys():
        os.environ.pop(key, None)
    for key, value in target.items() - current.items():
        os.environ[key] = value


def slurm_variables() -> dict[str, str]:
    """The pilot's batch-job variables (``SLURM_JOB_ID``, ...) in this process's environment."""
    own = own_environment()
    kept = _OWN.get("slurm")
    if kept is None or kept[0] is not own:  # type: ignore[index]
        kept = (own, {k: v for k, v in own.items() if k.startswith("SLURM_")})
        _OWN["slurm"] = kept
    return kept[1]  # type: ignore[index]


class Switch:
    """Puts a job's environment in place of the worker's, and the worker's back.

    Parameters
    ----------
    target
        The job's whole environment.
    """

    def __init__(self, target: Mapping[str, str]):
        self.own = own_environment()
        self.target = target

    def enter(self) -> None:
        set_environ(self.target, self.own)

    def leave(self) -> None:
        """Restore the worker's environment, whatever the job did to it."""
        # Undo what enter() changed (as if the job left os.environ as it found it) ...
        set_environ(self.own, self.target)
        # ... and if it did not, compare in full.
        raw = getattr(os.environ, "_data", None)
        if raw is None or raw != _OWN.get("raw"):
            set_environ(self.own)
