"""The compiled code of a job's own modules, kept between the function jobs a worker runs.

A function job run inside the worker imports its module afresh: the modules it imported
from its working directory or shipped code are forgotten after it
(:mod:`executor.worker.inprocess`), so that module-level state cannot leak into the next
job. Executing the module again is that isolation; finding, reading and compiling its
file again is not (with ``PYTHONDONTWRITEBYTECODE``, or a working directory nobody may
write ``__pycache__`` to, each job compiled the source). So while a job runs, its own
modules load through :class:`ReusingFinder`, which keeps each module's code object by
its file's path, size and modification time: a module that did not change between jobs
is executed from memory into a new module object; a changed file is read again.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import CodeType
from typing import Any

# path -> (st_mtime_ns, st_size, code); cleared when full (a worker of a huge code base)
_CODE: dict[str, tuple[int, int, CodeType]] = {}
MAX_MODULES = 2000


class _ReusingLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname: str) -> CodeType:  # type: ignore[override]
        try:
            status = os.stat(self.path)
        except OSError:
            return super().get_code(fullname)  # type: ignore[return-value]
        kept = _CODE.get(self.path)
        if kept is not None and kept[0] == status.st_mtime_ns and kept[1] == status.st_size:
            return kept[2]
        code = super().get_code(fullname)
        if code is None:  # a source-less module: nothing to keep
            return code  # type: ignore[return-value]
        if len(_CODE) >= MAX_MODULES:
            _CODE.clear()
        _CODE[self.path] = (status.st_mtime_ns, status.st_size, code)
        return code


class ReusingFinder(importlib.abc.MetaPathFinder):
    """Finds modules as ``sys.path`` does; those from under ``roots`` load through the
    code kept from earlier jobs.

    Parameters
    ----------
    roots
        The job's working directory and shipped code trees.
    """

    def __init__(self, roots: Sequence[str]):
        raw = [os.path.join(root, "") for root in roots]
        self.prefixes = tuple({*raw, *(os.path.join(os.path.realpath(r), "") for r in roots)})

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in sys.builtin_module_names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return None  # not the job's own source: the usual finders take it from here
        if not (spec.origin or "").startswith(self.prefixes):
            return None
        spec.loader = _ReusingLoader(spec.loader.name, spec.loader.path)
        return spec

    def __enter__(self) -> ReusingFinder:
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:  # the job rebuilt sys.meta_path itself
            pass
