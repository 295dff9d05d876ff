"""``pilot validate --dot``: the graph in Graphviz DOT, per job or collapsed per label.

The text is read back by a small parser of exactly what :func:`to_dot` writes, so these
tests need no Graphviz; where ``dot`` is installed, it also lays the graph out and the
SVG it draws shows every name exactly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_workflow

from executor.cli import cli
from executor.formats.dot import COLLAPSE_ABOVE, quote, to_dot
from executor.model.graph import Job as _Job
from executor.model.graph import JobGraph

# Job names are checked when a workflow is loaded; labels and workflow names are
# freer, and the writer must hold for any string.
HOSTILE = ['a"b', "back\\slash", "new\nline", "\\N", 'x\\"; evil -> 0 [label="', "cr\r\nlf"]

_STRING = r'"((?:[^"\\]|\\.)*)"'
_NODE = re.compile(rf"^  (\d+) \[label={_STRING}, fillcolor=\"[0-9. ]+\"\];$")
_EDGE = re.compile(r'^  (\d+) -> (\d+)(?: \[label="(\d+)"\])?;$')


def _unquote(body: str) -> str:
    """What Graphviz shows for a quoted label (``\\n`` a line break)."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], body)


def _parse(text: str) -> tuple[dict[str, str], list[tuple[str, str, int | None]]]:
    """Nodes (id -> shown label) and edges of DOT text; fails on any line it cannot read."""
    lines = text.splitlines()
    assert re.fullmatch(rf"digraph {_STRING} {{", lines[0]) and lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, int | None]] = []
    for line in lines[1:-1]:
        if node := _NODE.match(line):
            nodes[node[1]] = _unquote(node[2])
        elif edge := _EDGE.match(line):
            edges.append((edge[1], edge[2], int(edge[3]) if edge[3] else None))
        else:
            assert line.startswith(("  rankdir=", "  node [", "  edge [")), line
    return nodes, edges


def Job(name: str, label: str, **fields: object) -> _Job:  # noqa: N802 - reads as the type
    return _Job(name=name, label=label, **fields)  # type: ignore[arg-type]


def _graph(jobs: list[_Job], name: str = "demo") -> JobGraph:
    return JobGraph(name, jobs, trusted=True)


def _diamond() -> JobGraph:
    return _graph([
        Job("split", "prep", command="true"),
        *(Job(f"work-{i}", "work", command="true", after=("split",)) for i in range(3)),
        Job("merge", "merge", command="true", after=tuple(f"work-{i}" for i in range(3))),
        Job("check", "merge", command="true", after=("merge",)),
    ])  # fmt: skip


def test_one_node_per_job_and_every_edge() -> None:
    graph = _diamond()
    nodes, edges = _parse(to_dot(graph))
    assert sorted(nodes.values()) == sorted(graph.names)
    by_id = {number: name for number, name in nodes.items()}
    assert sorted((by_id[a], by_id[b]) for a, b, _ in edges) == sorted(graph.edges())


def test_collapsed_counts_jobs_per_label_and_edges_between_labels() -> None:
    nodes, edges = _parse(to_dot(_diamond(), collapse=True))
    assert sorted(nodes.values()) == ["merge\n2 jobs", "prep\n1 job", "work\n3 jobs"]
    label = {number: text.split("\n")[0] for number, text in nodes.items()}
    counted = {(label[a], label[b]): n for a, b, n in edges}
    assert counted == {("prep", "work"): 3, ("work", "merge"): 3, ("merge", "merge"): 1}


def test_large_graphs_collapse_unless_told_otherwise() -> None:
    n = COLLAPSE_ABOVE + 1
    graph = _graph([
        Job(f"j{i}", "even" if i % 2 == 0 else "odd", command="true",
            after=(f"j{i - 1}",) if i else ())
        for i in range(n)
    ])  # fmt: skip
    nodes, edges = _parse(to_dot(graph))
    assert sorted(nodes.values()) == [f"even\n{(n + 1) // 2} jobs", f"odd\n{n // 2} jobs"]
    assert sum(count or 0 for _, _, count in edges) == n - 1
    nodes, edges = _parse(to_dot(graph, collapse=False))
    assert len(nodes) == n and len(edges) == n - 1


def test_hostile_names_and_labels_are_escaped() -> None:
    jobs = [Job(name, name, command="true") for name in HOSTILE]
    jobs.append(Job("child", "child", command="true", after=tuple(HOSTILE)))
    graph = _graph(jobs, name='wf "quoted" \\N\n')
    text = to_dot(graph)
    nodes, edges = _parse(text)
    shown = [name.replace("\r\n", "\n") for name in HOSTILE]
    assert sorted(nodes.values()) == sorted([*shown, "child"])
    assert len(edges) == len(HOSTILE)
    # Nothing but the quoted labels spans a line; no name reaches outside its quotes.
    assert text.count("\n") == len(text.splitlines())
    collapsed, _ = _parse(to_dot(graph, collapse=True))
    assert sorted(collapsed.values()) == sorted(f"{s}\n1 job" for s in [*shown, "child"])


def test_quote() -> None:
    assert quote('a"b') == '"a\\"b"'
    assert quote("a\\b") == '"a\\\\b"'
    assert quote("a\nb") == '"a\\nb"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_draws_every_name_as_written() -> None:
    jobs = [Job(f"j{i}", label, command="true") for i, label in enumerate(HOSTILE)]
    graph = _graph([*jobs, Job("last", "end", command="true", after=("j0", "j1"))])
    for collapse in (False, True):
        svg = subprocess.run(
            ["dot", "-Tsvg"], input=to_dot(graph, collapse=collapse), text=True,
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        texts = [
            re.sub(r"&(quot|amp|lt|gt|#45);", lambda m: {"quot": '"', "amp": "&", "lt": "<",
                   "gt": ">", "#45": "-"}[m[1]], t)
            for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        ]  # fmt: skip
        if collapse:
            for label in HOSTILE:
                for line in label.replace("\r\n", "\n").split("\n"):
                    assert line in texts, (label, texts)
            assert texts.count("1 job") == len(HOSTILE) + 1
        else:
            assert Counter(texts) >= Counter([*(f"j{i}" for i in range(len(HOSTILE))), "last"])


def test_validate_prints_dot(tmp_path: Path) -> None:
    path = write_workflow(tmp_path, {
        "name": "dot-demo",
        "jobs": [
            {"name": "a", "label": 'first "one"', "command": "true"},
            {"name": "b", "label": "second", "command": "true", "after": ["a"]},
            {"name": "c", "label": "second", "command": "true", "after": ["a", "b"]},
        ],
    })  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(path), "--dot"])
    assert result.exit_code == 0, result.output
    nodes, edges = _parse(result.output)
    assert sorted(nodes.values()) == ["a", "b", "c"] and len(edges) == 3
    result = runner.invoke(cli, ["validate", str(path), "--dot", "--collapse"])
    assert result.exit_code == 0, result.output
    nodes, edges = _parse(result.output)
    assert sorted(nodes.values()) == ['first "one"\n1 job', "second\n2 jobs"]
    assert sorted(n or 0 for *_, n in edges) == [1, 2]
