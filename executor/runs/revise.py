"""Continue a run with an edited workflow: keep what is unchanged, rerun what changed.

Job identity is the job's name. A job whose definition changed (command, function,
arguments, resources, environment, parents, ...) runs again, and so does everything
downstream of it; a new job runs; a removed job is dropped from the run. Succeeded
jobs that did not change keep their results. The run keeps its working directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from executor.formats import load_workflow
from executor.formats.native import graph_to_dict
from executor.formats.saved import saved_text
from executor.model.graph import JobGraph
from executor.policy.pools import assign_pools
from executor.store import Store
from executor.store.revisions import Revision, revise_jobs


def jobs_to_rerun(old: Mapping[str, Any], new: JobGraph) -> tuple[set[str], set[str], set[str]]:
    """Compare the saved workflow ``old`` (native dict) with ``new``.

    Returns
    -------
    rerun, added, removed
        Jobs of ``new`` that must run again (changed, added, and their descendants),
        the added ones, and names of ``old`` that ``new`` no longer has.
    """
    before = {job["name"]: job for job in old["jobs"]}
    after = {job["name"]: job for job in graph_to_dict(new)["jobs"]}
    added = set(after) - set(before)
    removed = set(before) - set(after)
    changed = {name for name in set(after) & set(before) if after[name] != before[name]}
    rerun = set(added | changed)
    for name in added | changed:
        rerun |= new.descendants(name)
    return rerun, added, removed


def revise_run(store: Store, run: dict[str, Any], workflow: Path) -> set[str]:
    """Replace a run's workflow with ``workflow`` and reset what must run again.

    The revised copy is written in full as a new file, ``workflow.<n>.json``, and the
    run is switched to it in the same transaction that resets its jobs: a crash at any
    point leaves the run with its old workflow and jobs, or the new ones, never a mix.
    Earlier copies stay in the run directory.
    """
    from executor.sites.base import SiteConfig

    run_dir = Path(run["run_dir"])
    new = load_workflow(workflow)
    if new.code:  # the edited workflow's code, as it is now, ships from here on
        from executor.runs.start import ship_code

        ship_code(new, run_dir)
    site = SiteConfig.of_run(run_dir)
    assign_pools(new, site.pools)
    copy = Path(run["workflow_copy"])
    old = json.loads(copy.read_text())
    rerun, added, removed = jobs_to_rerun(old, new)

    data = graph_to_dict(new)
    data["workdir"] = run["workdir"]  # the run keeps where its jobs run
    text = saved_text(data)
    revised = _write_revision(run_dir, text)
    revision = Revision(
        jobs=[(job.name, job.label, job.describe()) for job in new],
        added=added, removed=removed, rerun=rerun,
        workflow_hash=hashlib.sha256(text.encode()).hexdigest(),
        workflow_source=str(workflow.resolve()), workflow_copy=str(revised),
    )  # fmt: skip
    revise_jobs(store, run, revision)
    return rerun


def _write_revision(run_dir: Path, text: str) -> Path:
    """Write ``text`` as the next ``workflow.<n>.json``, complete on disk before it is used."""
    numbers = [
        int(path.name.split(".")[1])
        for path in run_dir.glob("workflow.*.json")
        if path.name.split(".")[1].isdigit()
    ]
    target = run_dir / f"workflow.{max(numbers, default=0) + 1}.json"
    partial = target.with_name(target.name + ".partial")
    with open(partial, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return target
