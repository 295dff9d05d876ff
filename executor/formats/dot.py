"""A picture of a workflow: its graph in Graphviz DOT (``pilot validate WORKFLOW --dot``).

Like ``snakemake --dag``: one node per job, an edge per ``after``; pipe it into
``dot -Tsvg > graph.svg``. A graph of more than :data:`COLLAPSE_ABOVE` jobs would draw
as a smear, so it is collapsed by default: one node per label with its job count, and
one edge per pair of labels with the number of job edges between them.

Nodes are numbered (``0``, ``1``, ...) and carry their name as a ``label``: job names
and labels are user data, and a quoted, escaped label is the one place DOT gives a
string no meaning of its own (see :func:`quote`).
"""

from __future__ import annotations

from collections import Counter

from executor.model.graph import JobGraph

# More jobs than this and the graph is drawn one node per label.
COLLAPSE_ABOVE = 200


def quote(text: str) -> str:
    """``text`` as a DOT quoted string that Graphviz shows exactly as written.

    Inside quotes DOT itself unescapes only ``\\"``; a label then reads ``\\\\`` as one
    backslash and ``\\n`` as a line break, so every backslash is doubled, every quote
    escaped and every line break written as ``\\n``: no name can end the string early
    or turn into an escape such as ``\\N`` (the node's name) or ``\\l``.
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")
    return f'"{escaped}"'


def _colours(labels: list[str]) -> dict[str, str]:
    """A hue per label (HSV, as Graphviz reads ``"h s v"``), spread around the wheel."""
    n = max(len(labels), 1)
    return {label: f'"{i / n:.3f} 0.45 0.95"' for i, label in enumerate(labels)}


def to_dot(graph: JobGraph, *, collapse: bool | None = None) -> str:
    """The graph in DOT.

    Parameters
    ----------
    collapse
        ``True``: one node per label; ``False``: one node per job; ``None`` (default):
        per label when the graph has more than :data:`COLLAPSE_ABOVE` jobs.
    """
    if collapse is None:
        collapse = len(graph) > COLLAPSE_ABOVE
    labels = graph.labels()
    colour = _colours(list(labels))
    lines = [
        f"digraph {quote(graph.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [color="grey40"];',
    ]
    if collapse:
        number = {label: i for i, label in enumerate(labels)}
        for label, count in labels.items():
            text = quote(f"{label}\n{count} job{'' if count == 1 else 's'}")
            lines.append(f"  {number[label]} [label={text}, fillcolor={colour[label]}];")
        between = Counter(
            (graph[parent].label, graph[child].label) for parent, child in graph.edges()
        )
        for (parent, child), count in between.items():
            lines.append(f'  {number[parent]} -> {number[child]} [label="{count}"];')
    else:
        number = {name: i for i, name in enumerate(graph.names)}
        for job in graph:
            lines.append(
                f"  {number[job.name]} [label={quote(job.name)}, fillcolor={colour[job.label]}];"
            )
        for parent, child in graph.edges():
            lines.append(f"  {number[parent]} -> {number[child]};")
    lines.append("}")
    return "\n".join(lines) + "\n"
