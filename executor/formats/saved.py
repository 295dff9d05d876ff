"""The workflow copy in a run directory (``workflow.json``): one job per line.

The copy is ordinary JSON (any JSON reader, ``jq`` or a person can read it), laid out
so that a restart can read just the jobs it needs: the workflow's own fields on the
first line, then one job per line with its ``name`` first, then ``]}``. Restarting a
200,000-job run that is 90% done parses 20,000 lines instead of the whole file.
Copies written before this layout existed are read whole.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any

_JOBS_OPEN = ', "jobs": [\n'
_NAME_PREFIX = '{"name": "'


def saved_text(workflow: Mapping[str, Any]) -> str:
    """``workflow`` (as from :func:`graph_to_dict`) as the run directory's copy."""
    head = {key: value for key, value in workflow.items() if key != "jobs"}
    lines = [json.dumps(head, sort_keys=True)[:-1] + _JOBS_OPEN]
    jobs = workflow["jobs"]
    for index, job in enumerate(jobs):
        # The name first: a reader finds it without parsing the line.
        entry = {"name": job["name"], **{k: v for k, v in sorted(job.items()) if k != "name"}}
        lines.append(json.dumps(entry) + (",\n" if index < len(jobs) - 1 else "\n"))
    lines.append("]}\n")
    return "".join(lines)


def read_saved(path: Path, keep: Container[str] | None = None) -> dict[str, Any]:
    """The copy at ``path``; with ``keep``, only the jobs named in it are parsed."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
        if keep is None or not first.endswith(_JOBS_OPEN):
            return json.loads(first + handle.read())
        workflow = json.loads(first[: -len(_JOBS_OPEN)] + "}")
        jobs = []
        for line in handle:
            if not line.startswith(_NAME_PREFIX):
                continue  # the closing "]}"
            end = line.index('"', len(_NAME_PREFIX))
            name = line[len(_NAME_PREFIX) : end]
            if "\\" in name:  # an escaped character: let the JSON parser read the name
                name = json.JSONDecoder().raw_decode(line, len(_NAME_PREFIX) - 1)[0]
            if name in keep:
                jobs.append(json.loads(line.rstrip().rstrip(",")))
    workflow["jobs"] = jobs
    return workflow
