"""The run directory's workflow copy: plain JSON, and a restart reads only what it needs."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.formats.saved import read_saved, saved_text

JOB_NAMES = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=JOB_NAMES, data=st.data())
def test_reading_some_jobs_gives_exactly_those_jobs_whatever_their_names(
    tmp_path: Path, names: list[str], data
):
    workflow = {
        "name": "w", "workdir": "/x", "code": ["/src/mypkg"],
        "jobs": [{"name": n, "command": f"echo {i}", "after": names[:i][-2:]}
                 for i, n in enumerate(names)],
    }  # fmt: skip
    keep = set(data.draw(st.lists(st.sampled_from(names), unique=True)))
    path = tmp_path / "workflow.json"
    path.write_text(saved_text(workflow), encoding="utf-8")

    assert json.loads(path.read_text(encoding="utf-8")) == workflow  # still ordinary JSON
    assert read_saved(path) == workflow
    partial = read_saved(path, keep=keep)
    assert partial == {**workflow, "jobs": [j for j in workflow["jobs"] if j["name"] in keep]}


def test_a_copy_written_before_this_layout_is_read_whole(tmp_path: Path):
    workflow = {"name": "old", "jobs": [{"name": "a", "command": "true"}, {"name": "b"}]}
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow, indent=1, sort_keys=True))

    assert read_saved(path, keep={"b"}) == workflow
