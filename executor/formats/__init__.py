"""Read workflows from files, whatever their format."""

from __future__ import annotations

from pathlib import Path

from executor.errors import GraphError
from executor.formats.native import graph_from_dict, graph_to_dict, read_json
from executor.formats.wfformat import check_time_scale, graph_from_wfformat, is_wfformat
from executor.formats.yamlio import read_yaml
from executor.model.graph import JobGraph

__all__ = ["graph_from_dict", "graph_to_dict", "load_workflow"]


def load_workflow(path: str | Path, *, time_scale: float = 1.0) -> JobGraph:
    """Load and validate a workflow file (``.yaml``, ``.yml`` or ``.json``).

    A ``.json`` file in WfFormat (a WfCommons workflow trace) becomes jobs that sleep
    for each task's recorded runtime divided by ``time_scale``; see
    :mod:`executor.formats.wfformat`.

    Relative ``workdir`` values resolve against the file's directory, and so does the
    default working directory: jobs run next to the workflow file wherever pilot is
    started from, so a restart from another directory behaves the same.

    Raises
    ------
    GraphError
        Naming the file, line, job and field of every problem; also when ``time_scale``
        is not > 0, or is given for a workflow that is not WfFormat.
    """
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such workflow file")
    check_time_scale(time_scale, str(path))
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        data = read_yaml(path)
    elif suffix == ".json":
        data = read_json(path)
        if is_wfformat(data):
            return graph_from_wfformat(
                data, source=str(path), base_dir=path.resolve().parent, time_scale=time_scale
            )
    else:
        raise GraphError(f"{path}: unknown workflow format {suffix!r}; use .yaml, .yml or .json")
    if time_scale != 1.0:
        # Native jobs have no recorded runtime to scale; ignoring the option would mislead.
        raise GraphError(
            f"{path}: a time scale ({time_scale!r}) applies to WfFormat files only and this "
            "is a native pilot workflow; drop --time-scale"
        )
    return graph_from_dict(data, source=str(path), base_dir=path.resolve().parent)
