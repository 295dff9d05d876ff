"""Build a job graph in Python instead of a file.

>>> wf = Workflow("demo", defaults={"retries": 1})
>>> a = wf.shell("hello", "echo hello")
>>> b = wf.function("count", "json:dumps", args=[[1, 2]], after=[a])
>>> graph = wf.build()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from executor.formats.native import graph_from_dict
from executor.model.graph import JobGraph


class Workflow:
    """A job graph under construction; :meth:`build` validates it into a :class:`JobGraph`.

    Jobs take the same fields as in a workflow file (``label``, ``cores``, ``memory``
    like ``"4GB"``, ``walltime`` like ``"30m"``, ``retries``, ``environment``), and are
    validated with the same messages. ``max_running`` throttles labels like the
    workflow file's key: ``Workflow("w", max_running={"ingest": 2})`` hands at most two
    ``ingest`` jobs to pilots at once.
    """

    def __init__(
        self,
        name: str,
        *,
        defaults: Mapping[str, Any] | None = None,
        workdir: str | Path | None = None,
        code: Iterable[str | Path] = (),
        max_running: Mapping[str, int] | None = None,
    ):
        self.name = name
        # Shipped to the workers like a workflow file's `code:` (relative to the cwd).
        self.code = [str(Path(path).resolve()) for path in code]
        self.defaults = dict(defaults or {})
        self.workdir = Path(workdir).resolve() if workdir is not None else None
        self.max_running = dict(max_running or {})
        self._jobs: list[dict[str, Any]] = []

    def shell(
        self, name: str, command: str | Sequence[str], *, after: Iterable[str] = (), **fields: Any
    ) -> str:
        """Add a shell job (a string runs through bash, a list is an argv); return its name."""
        command = command if isinstance(command, str) else list(command)
        return self._add(name, {"command": command}, after, fields)

    def function(
        self,
        name: str,
        function: str,
        *,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        after: Iterable[str] = (),
        **fields: Any,
    ) -> str:
        """Add a Python function job (``"module:callable"``, JSON-able args); return its name."""
        body = {"function": function, "args": list(args), "kwargs": dict(kwargs or {})}
        return self._add(name, body, after, fields)

    def _add(self, name: str, body: dict, after: Iterable[str], fields: dict) -> str:
        self._jobs.append({"name": name, **body, "after": list(after), **fields})
        return name

    def build(self) -> JobGraph:
        """Validate and return the graph; raises :class:`GraphError` listing every problem."""
        data: dict[str, Any] = {"name": self.name, "jobs": self._jobs}
        if self.defaults:
            data["defaults"] = self.defaults
        if self.workdir is not None:
            data["workdir"] = str(self.workdir)
        if self.code:
            data["code"] = self.code
        if self.max_running:
            data["max_running"] = self.max_running
        return graph_from_dict(data, source=f"workflow {self.name!r}")
