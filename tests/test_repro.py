"""`pilot report`'s reproduce scripts: written in the run directory, one line to paste, and
running one fails as the attempt did (issue 19, item 5)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import pilot_cmd, run_pilot
from seed import seed_run

import executor
from executor.report import repro
from executor.store import Store

COLUMNS = 80
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real local run whose jobs fail three ways: exit 3, a raise, a walltime."""
    # A long directory name, so the script's path is wider than the terminal.
    root = tmp_path_factory.mktemp("reproduce-scripts-of-a-run-whose-paths-are-long")
    home, workdir = root / "pilot-home", root / "work"
    workdir.mkdir()
    (workdir / "tasks.py").write_text(
        "def explode(n, *, why):\n    raise ValueError(f'boom {n} {why}')\n"
    )
    wf = executor.Workflow("repro", workdir=str(workdir))
    wf.shell("three", 'echo "in $PWD as $PILOT_JOB_NAME/$PILOT_ATTEMPT" >&2; exit 3')
    wf.function("raises", "tasks:explode", args=[7], kwargs={"why": "on purpose"})
    wf.shell("slow", "sleep 30", walltime=1)
    env = {**os.environ, "PILOT_HOME": str(home)}
    env.pop("PILOT_DB", None)
    saved = {key: os.environ.get(key) for key in ("PILOT_HOME", "PILOT_DB")}
    os.environ.update(PILOT_HOME=str(home))
    os.environ.pop("PILOT_DB", None)
    try:
        result = executor.run(wf)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    report = run_pilot("report", result.run_id, "--json", env=env)
    assert report.returncode == 0, report.stderr
    groups = {g["example"]["job"]: g for g in json.loads(report.stdout)["failure_groups"]}
    yield {"run_id": result.run_id, "run_dir": result.run_dir, "env": env, "groups": groups}


def _run_script(group: dict[str, Any], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", group["reproduce_script"]], capture_output=True, text=True, timeout=timeout,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")},
    )  # fmt: skip


def test_each_group_has_an_executable_script_inside_the_run_dir(failed_run) -> None:
    assert set(failed_run["groups"]) == {"three", "raises", "slow"}
    repro_dir = (Path(failed_run["run_dir"]) / "repro").resolve()
    for name, group in failed_run["groups"].items():
        script = Path(group["reproduce_script"])
        assert script.resolve().parent == repro_dir
        assert script.name == f"{name}.attempt-1.sh"
        assert os.access(script, os.X_OK)
        # `reproduce` stays the key to paste: one line, the script's full path.
        assert group["reproduce"] == f"bash {script}" and "\n" not in group["reproduce"]


def test_a_shell_script_exits_as_the_job_did(failed_run) -> None:
    group = failed_run["groups"]["three"]
    done = _run_script(group)
    assert done.returncode == 3
    # Where and as what pilot ran it: the workdir, the PILOT_* variables.
    workdir = Path(failed_run["run_dir"]).parent.parent.parent / "work"
    assert done.stderr.strip() == f"in {workdir} as three/1"


def test_a_function_script_calls_the_function(failed_run) -> None:
    done = _run_script(failed_run["groups"]["raises"])
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: boom 7 on purpose" in done.stderr


def test_a_timeout_script_is_stopped_at_the_walltime(failed_run) -> None:
    script = Path(failed_run["groups"]["slow"]["reproduce_script"])
    assert "timeout --kill-after=2 1 bash -c 'sleep 30'" in script.read_text()
    start = time.monotonic()
    done = _run_script(failed_run["groups"]["slow"], timeout=20)
    assert done.returncode == 124  # timeout(1)'s status when the time ran out
    assert time.monotonic() - start < 10


def _in_terminal(argv: list[str], env: dict[str, str], columns: int) -> str:
    """What ``argv`` prints to a terminal ``columns`` wide (a pty), colours stripped."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**env, "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    with subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env) as process:
        os.close(slave)
        chunks = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
        process.wait(timeout=30)
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def test_the_printed_command_is_one_line_and_pastes(failed_run) -> None:
    group = failed_run["groups"]["three"]
    assert len(group["reproduce"]) > COLUMNS  # would be wrapped, were it wrapped
    text = _in_terminal(pilot_cmd("report", failed_run["run_id"]), failed_run["env"], COLUMNS)

    lines = [line.strip() for line in text.splitlines()]
    assert group["reproduce"] in lines, text
    assert "  reproduce:" in text
    # Pasting that line into bash runs the script: the job's exit code.
    pasted = subprocess.run(["bash", "-c", group["reproduce"]], capture_output=True, timeout=60)
    assert pasted.returncode == 3


def test_hostile_job_names_stay_inside_the_run_dir(tmp_path: Path) -> None:
    names = ["has space", "it's \"quoted\"", "../../escape", "..", ".hidden", "a/b", "x" * 300,
             "ok_name-1.2"]  # fmt: skip
    with Store(tmp_path / "monitoring.db") as store:
        run = seed_run(store, tmp_path / "runs", "run-h", jobs=[
            {"name": name, "label": "l", "state": "failed", "start": 1, "runtime": 1,
             "exit_code": 3}
            for name in names
        ])  # fmt: skip
    repro_dir = (tmp_path / "runs" / "run-h" / "repro").resolve()
    paths = set()
    for name in names:
        path = repro.write_script(run, {"command": "exit 3"}, {"job": name, "attempts": 1})
        assert path is not None and path.resolve().parent == repro_dir
        paths.add(path)
        assert subprocess.run(["bash", str(path)], timeout=30).returncode == 3
    assert len(paths) == len(names)  # unique
    assert repro.script_name("ok_name-1.2", 1) == "ok_name-1.2.attempt-1.sh"
    # A valid name can hold "_": the mangled "has_space" differs from a real job's.
    assert repro.script_name("has space", 1) != repro.script_name("has_space", 1)
    assert sorted(p.name for p in repro_dir.iterdir()) == sorted(p.name for p in paths)


def test_an_out_of_memory_script_applies_the_attempts_limit(tmp_path: Path) -> None:
    run = {"id": "r", "run_dir": str(tmp_path), "workdir": str(tmp_path)}
    example = {"job": "hog", "attempts": 2, "failure_class": "out_of_memory", "memory_mb": 600}
    text = repro.script_text(run, {"command": "true"}, example, memory_tolerance=0.5)
    assert f"ulimit -v {900 * 1024}\n" in text  # 600MB + 50%, in KiB
    assert "not RSS" in text
    # A failure of another kind keeps the job's own limits out of the way.
    other = repro.script_text(run, {"command": "true", "walltime": 5},
                              {**example, "failure_class": "exit_code"})  # fmt: skip
    assert "ulimit" not in other and "timeout" not in other
    # An allocation past the limit fails in the reproduction, one well under it does not.
    path = repro.write_script(
        run, {"command": [sys.executable, "-c", "b = bytearray(2 * 1024**3)"]}, example
    )
    assert path is not None
    assert subprocess.run(["bash", str(path)], capture_output=True, timeout=60).returncode == 1


def test_a_function_script_imports_the_shipped_code_first(tmp_path: Path) -> None:
    from executor.shipping.tarball import build, save_manifest

    source, workdir, run_dir = tmp_path / "src", tmp_path / "work", tmp_path / "run"
    for directory in (source, workdir, run_dir):
        directory.mkdir()
    (source / "shipped_mod.py").write_text("def where():\n    return 'shipped'\n")
    (workdir / "shipped_mod.py").write_text("def where():\n    return 'workdir'\n")
    save_manifest(build([source / "shipped_mod.py"], run_dir / "code"), run_dir)
    run = {"id": "r", "run_dir": str(run_dir), "workdir": str(workdir)}
    spec = {"function": "shipped_mod:where", "args": [], "kwargs": {}}
    path = repro.write_script(run, spec, {"job": "f", "attempts": 1})
    assert path is not None
    done = subprocess.run(
        ["bash", str(path)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PILOT_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, '"shipped"\n'), done.stderr
