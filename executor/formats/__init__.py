"""Read workflows from files, whatever their format."""

from __future__ import annotations

from pathlib import Path

from executor.errors import GraphError
from executor.formats.native import graph_from_dict, graph_to_dict, read_json
from executor.formats.yamlio import read_yaml
from executor.graph import JobGraph

__all__ = ["graph_from_dict", "graph_to_dict", "load_workflow"]


def load_workflow(path: str | Path) -> JobGraph:
    """Load and validate a workflow file (``.yaml``, ``.yml`` or ``.json``).

    Relative ``workdir`` values resolve against the file's directory, and so does the
    default working directory: jobs run next to the workflow file wherever pilot is
    started from, so a restart from another directory behaves the same.

    Raises
    ------
    GraphError
        Naming the file, line, job and field of every problem.
    """
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such workflow file")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        data = read_yaml(path)
    elif suffix == ".json":
        data = read_json(path)
    else:
        raise GraphError(f"{path}: unknown workflow format {suffix!r}; use .yaml, .yml or .json")
    return graph_from_dict(data, source=str(path), base_dir=path.resolve().parent)
