"""Shipped code on real local pilots: jobs import the shipped copy, never the original."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers import run_pilot, write_workflow

import executor
from executor.model.states import RunState
from executor.policy.pools import PoolConfig
from executor.sites.local import LocalSite
from executor.store import Store, locate
from executor.store.queries import attempts_of, job_states


def _user_code(root: Path) -> Path:
    """``mypkg.a:f`` calls ``mypkg.b.g``: a worker needs the whole package, not one function."""
    package = root / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from mypkg.b import g\n\n\ndef f(x):\n    import mypkg\n"
        "    return {'value': g(x), 'from': mypkg.__file__}\n"
    )
    (package / "b.py").write_text("def g(x):\n    return 2 * x + 1\n")
    return package


def _results(run_id: str, jobs: list[str]) -> dict[str, dict]:
    with Store(locate(None).db) as store:
        return {job: json.loads(attempts_of(store, run_id, job)[-1]["result"]) for job in jobs}


def test_jobs_use_the_shipped_copy_when_the_original_is_gone(
    tmp_path: Path, subprocess_env: dict, pilot_home: Path
):
    src = tmp_path / "src"
    _user_code(src)
    script = src / "scripts" / "hello.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\necho "hello from $(dirname "$0")"\n')
    script.chmod(0o755)
    (tmp_path / "work").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = tmp_path / "cache"
    after = ["hide-the-original"]
    path = write_workflow(src, {
        "name": "shipped",
        "workdir": "../work",
        "code": ["./mypkg", "./scripts/hello.sh"],
        "jobs": [
            # Once this ran, only the shipped copy of mypkg exists anywhere.
            {"name": "hide-the-original", "command": f"mv {src}/mypkg {tmp_path}/hidden"},
            {"name": "in-worker", "function": "mypkg.a:f", "args": [20], "after": after},
            {"name": "own-process", "function": "mypkg.a:f", "args": [1], "memory": "500MB",
             "after": after},
            {"name": "import-in-shell",
             "command": f"{sys.executable} -c 'import mypkg; print(mypkg.__file__)'",
             "after": after},
            {"name": "shipped-script", "command": "hello.sh", "after": after},
        ],
    })  # fmt: skip
    env = {**subprocess_env, "PILOT_CACHE": str(cache)}
    env.pop("PYTHONPATH", None)

    result = run_pilot("submit", path, cwd=elsewhere, env=env)

    assert result.returncode == 0, result.stderr
    assert "code: 4 files" in result.stderr
    run_id = result.stdout.split()[1]
    (tree,) = [p for p in cache.iterdir() if p.is_dir()]
    shipped_init = tree / "mypkg" / "__init__.py"
    assert _results(run_id, ["in-worker", "own-process"]) == {
        "in-worker": {"value": 41, "from": str(shipped_init)},
        "own-process": {"value": 3, "from": str(shipped_init)},
    }
    logs = run_pilot("logs", run_id, "import-in-shell", env=env)
    assert logs.stdout.strip() == str(shipped_init)
    logs = run_pilot("logs", run_id, "shipped-script", env=env)
    assert logs.stdout.strip() == f"hello from {tree}"


def test_without_a_shared_filesystem_code_and_runtime_travel_in_chunks(
    tmp_path: Path, pilot_home: Path, monkeypatch
):
    package = _user_code(tmp_path / "src")
    (package / "weights.bin").write_bytes(os.urandom(2_500_000))  # three 1 MB payloads
    monkeypatch.setenv("PILOT_CACHE", str(tmp_path / "cache"))
    site = LocalSite(
        name="remote-like",
        pools=(PoolConfig(name="default", workers=2),),
        shared_filesystem=False,
        max_payload="1MB",
        ship_runtime=True,
        packing_target=0,
    )
    wf = executor.Workflow("chunks", code=[package], workdir=tmp_path)
    jobs = [wf.function(f"f-{i}", "mypkg.a:f", args=[i]) for i in range(4)]
    jobs.append(wf.function("f-own", "mypkg.a:f", args=[10], memory="500MB"))

    result = executor.run(wf, site=site)

    with Store(locate(None).db) as store:
        states = job_states(store, result.run_id)
    assert result.state is RunState.SUCCEEDED, states
    values = {job: value["value"] for job, value in _results(result.run_id, jobs).items()}
    assert values == {"f-0": 1, "f-1": 3, "f-2": 5, "f-3": 7, "f-own": 21}
    assert "mypkg" not in sys.modules  # the driver never imported the user's code
    trees = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert len(trees) == 2  # the user's code and pilot's runtime, each unpacked once
    assert not list((tmp_path / "cache").glob("*.parts"))


def test_a_restart_ships_the_code_as_it_was_at_submit(
    tmp_path: Path, subprocess_env: dict, pilot_home: Path
):
    src = tmp_path / "src"
    package = _user_code(src)
    flag = tmp_path / "ready"
    path = write_workflow(src, {
        "name": "restart-shipped",
        "code": ["./mypkg"],
        "jobs": [
            {"name": "gate", "command": f"test -e {flag}"},
            {"name": "compute", "function": "mypkg.a:f", "args": [5], "after": ["gate"]},
        ],
    })  # fmt: skip
    env = {**subprocess_env, "PILOT_CACHE": str(tmp_path / "cache")}
    first = run_pilot("submit", path, env=env)
    assert first.returncode == 1, first.stderr
    run_id = first.stdout.split()[1]

    # The user edits their code after submitting; the run keeps what it shipped.
    (package / "b.py").write_text("def g(x):\n    return -1\n")
    flag.touch()
    again = run_pilot("restart", run_id, cwd=tmp_path, env=env)

    assert again.returncode == 0, again.stderr
    assert _results(run_id, ["compute"])["compute"]["value"] == 11


def test_validate_shows_what_would_be_shipped(tmp_path: Path, subprocess_env: dict):
    src = tmp_path / "src"
    _user_code(src)
    (src / "mypkg" / "__pycache__").mkdir()
    (src / "mypkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    extra = tmp_path / "tool.sh"
    extra.write_text("echo tool\n")
    path = write_workflow(
        src, {"name": "v", "code": ["./mypkg"], "jobs": [{"name": "a", "command": "true"}]}
    )

    result = run_pilot("validate", path, "--ship", extra, "--json", env=subprocess_env)

    assert result.returncode == 0, result.stderr
    code = json.loads(result.stdout)["code"]
    assert [f["path"] for f in code["files"]] == [
        "mypkg/__init__.py", "mypkg/a.py", "mypkg/b.py", "tool.sh",
    ]  # fmt: skip
    assert len(code["sha256"]) == 64 and code["size"] > 0
    text = run_pilot("validate", path, "--ship", extra, env=subprocess_env).stdout
    assert f"sha256 {code['sha256'][:16]}" in text and "mypkg/b.py" in text
