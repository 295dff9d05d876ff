"""Many small jobs, cheaply: logs created only when written, the worker's environment
and module code reused between in-process jobs, and Parsl's processes booted lean.

Behaviour only (what exists, what a job sees); the timings are in benchmarks/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for

from executor.worker import bundle as worker
from executor.worker import outcome_log

ROOT = Path(__file__).resolve().parent.parent


def _spec(tmp_path: Path, job: str, command: str | None = None, **extra) -> dict:
    logs = tmp_path / "run" / "logs" / job
    return {
        "run_id": "r", "run_dir": str(tmp_path / "run"), "job": job, "attempt": 1,
        "kind": "shell", "command": command, "function": None, "args": [], "kwargs": {},
        "environment": {}, "environment_file": None, "workdir": str(tmp_path / "work"),
        "walltime": None, "stdout": str(logs / "attempt-1.out"),
        "stderr": str(logs / "attempt-1.err"), "cancel_path": str(tmp_path / "run" / "cancel"),
        "memory": None, "memory_tolerance": 0.1, "in_process": False,
        "outcome_log": str(tmp_path / "run"), **extra,
    }  # fmt: skip


def _function(tmp_path: Path, job: str, function: str, *args, in_process=True, **extra) -> dict:
    return _spec(tmp_path, job, kind="function", function=function, args=list(args),
                 in_process=in_process, memory=None if in_process else 500, **extra)  # fmt: skip


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    (tmp_path / "run").mkdir()
    return tmp_path / "work"


def _created(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


# -- logs: created only when a job writes ------------------------------------------------
def test_jobs_that_write_nothing_create_nothing_in_the_run_directory(tmp_path, work) -> None:
    (work / "quiet.py").write_text("def value(x):\n    return {'x': x}\n")
    specs = [_spec(tmp_path, f"true-{i}", "true") for i in range(20)]
    specs += [_function(tmp_path, f"in-{i}", "quiet:value", i) for i in range(20)]
    specs.append(_function(tmp_path, "own", "quiet:value", 7, in_process=False))

    outcomes = worker.run_bundle(specs)

    assert [o["state"] for o in outcomes] == ["succeeded"] * len(specs)
    assert all(o["stdout"] is None and o["stderr"] is None for o in outcomes)
    assert json.loads(outcomes[20]["result"]) == {"x": 0}
    assert json.loads(outcomes[-1]["result"]) == {"x": 7}  # handed back without a file
    # 41 jobs, two entries in all: this process's outcome log and its directory.
    run_dir = tmp_path / "run"
    assert _created(run_dir) == [
        outcome_log.DIRECTORY,
        *(f"{outcome_log.DIRECTORY}/{p.name}" for p in (run_dir / "outcomes").iterdir()),
    ]


def test_a_job_gets_a_log_for_each_stream_it_wrote_to_and_only_those(tmp_path, work) -> None:
    (work / "talk.py").write_text(
        "import sys\ndef shout(x):\n    print('to stderr', x, file=sys.stderr)\n    return x\n"
    )
    specs = [
        _spec(tmp_path, "out", "echo hello"),
        _spec(tmp_path, "err", "bash -c 'echo oops >&2; exit 3'"),
        _function(tmp_path, "fn", "talk:shout", 5),
        _function(tmp_path, "fn-own", "talk:shout", 6, in_process=False),
    ]

    out, err, fn, own = worker.run_bundle(specs)

    assert Path(out["stdout"]).read_text() == "hello\n" and out["stderr"] is None
    assert out["stdout"] == specs[0]["stdout"]  # where the driver said it would be
    assert err["stdout"] is None and Path(err["stderr"]).read_text() == "oops\n"
    assert err["exit_code"] == 3
    assert fn["stdout"] is None and Path(fn["stderr"]).read_text() == "to stderr 5\n"
    assert own["stdout"] is None and Path(own["stderr"]).read_text() == "to stderr 6\n"
    assert not (tmp_path / "run" / "logs" / "err" / "attempt-1.out").exists()


_LIVE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from executor.worker.bundle import run_bundle
print(json.dumps(run_bundle(json.load(sys.stdin))))
"""


@pytest.mark.parametrize("kind", ["shell", "in-process"])
def test_a_running_jobs_output_reaches_its_log_while_it_runs(tmp_path, work, kind) -> None:
    gate = tmp_path / "gate"
    if kind == "shell":
        spec = _spec(tmp_path, "live", f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; "
                     "echo second")  # fmt: skip
    else:
        (work / "slow.py").write_text(
            "import os, time\n"
            "def run(gate):\n"
            "    print('first', flush=True)\n"
            "    while not os.path.exists(gate):\n"
            "        time.sleep(0.05)\n"
            "    print('second')\n"
        )
        spec = _function(tmp_path, "live", "slow:run", str(gate))
    log = Path(spec["stdout"])
    # In a process of its own: an in-process job needs the main thread of its worker.
    given = tmp_path / "specs.json"
    given.write_text(json.dumps([spec]))
    with open(given) as specs:
        running = subprocess.Popen(
            [sys.executable, "-c", _LIVE, str(ROOT)], stdin=specs, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    try:
        wait_for(lambda: log.exists() and log.read_text() == "first\n", timeout=60,
                 what="the first line in the run directory's log while the job runs")  # fmt: skip
        assert running.poll() is None
        gate.touch()
        output, _ = running.communicate(timeout=60)
    finally:
        gate.touch()
        if running.poll() is None:
            running.kill()
            running.communicate()
    assert running.returncode == 0
    [outcome] = json.loads(output)
    assert outcome["state"] == "succeeded"
    assert log.read_text() == "first\nsecond\n"


def test_the_outcome_reader_follows_appends_and_new_worker_files(tmp_path) -> None:
    reader = outcome_log.OutcomeReader(tmp_path)
    assert reader.read_new() == []  # no directory yet
    assert outcome_log.append(str(tmp_path), {"job": "a", "attempt": 1})
    assert [r["job"] for r in reader.read_new()] == ["a"]
    other = tmp_path / outcome_log.DIRECTORY / "node-2-99.jsonl"  # another worker, at once
    other.write_bytes(b'{"job": "b", "attempt": 1}\n{"job": "c", "att')
    assert [r["job"] for r in reader.read_new()] == ["b"]
    assert outcome_log.append(str(tmp_path), {"job": "d", "attempt": 1})
    with open(other, "ab") as handle:
        handle.write(b'empt": 1}\n')
    assert sorted(r["job"] for r in reader.read_new()) == ["c", "d"]
    assert reader.read_new() == []
    reader.close()


# -- in-process function jobs: cheap, and still isolated -----------------------------
def test_the_environment_a_job_changes_is_restored_for_the_next(tmp_path, work) -> None:
    (work / "env.py").write_text(
        "import os\n"
        "def spoil():\n"
        "    os.environ['SPOILED'] = '1'\n"
        "    os.environ.pop('KEPT', None)\n"
        "    os.environ['PATH'] = '/nowhere'\n"
        "def look():\n"
        "    return {k: os.environ.get(k) for k in ('SPOILED', 'KEPT', 'PATH', 'OWN')}\n"
    )
    base = {"KEPT": "yes", "PATH": os.environ["PATH"]}
    environment_file = tmp_path / "run" / "environment.json"
    environment_file.write_text(json.dumps(base))
    common = {"environment_file": str(environment_file)}
    before = dict(os.environ)
    specs = [
        _function(tmp_path, "look-1", "env:look", **common),
        _function(tmp_path, "spoil", "env:spoil", **common),
        _function(tmp_path, "look-2", "env:look", **common, environment={"OWN": "mine"}),
        _function(tmp_path, "spoil-again", "env:spoil", **common),
    ]

    outcomes = worker.run_bundle(specs)

    looks = [json.loads(outcomes[i]["result"]) for i in (0, 2)]
    assert looks[0] == {"SPOILED": None, "KEPT": "yes", "PATH": os.environ["PATH"], "OWN": None}
    assert looks[1] == {**looks[0], "OWN": "mine"}
    assert dict(os.environ) == before  # the worker's own, whatever the jobs did


def test_module_state_never_leaks_and_an_edited_module_is_used_at_once(tmp_path, work) -> None:
    module = work / "counter.py"
    counter = "COUNT = {}\ndef bump():\n    global COUNT\n    COUNT += 1\n    return COUNT\n"
    module.write_text(counter.format(0))
    first = worker.run_bundle([_function(tmp_path, f"bump-{i}", "counter:bump") for i in range(3)])
    assert [o["result"] for o in first] == ["1", "1", "1"]  # a fresh module for each job

    # Same size, new content: the kept code must not be used for it.
    module.write_text(counter.format(5))
    stamp = time.time() + 10
    os.utime(module, (stamp, stamp))
    again = worker.run_bundle([_function(tmp_path, "bump-edited", "counter:bump")])
    assert again[0]["result"] == "6"
    assert "counter" not in sys.modules


def test_a_module_that_fails_to_import_fails_its_job_and_the_next_import_works(
    tmp_path, work
) -> None:
    (work / "broken.py").write_text("raise RuntimeError('half written')\n")
    (work / "fine.py").write_text("def ok():\n    return 'ok'\n")
    broken, fine = worker.run_bundle([
        _function(tmp_path, "broken", "broken:anything"),
        _function(tmp_path, "fine", "fine:ok"),
    ])  # fmt: skip
    assert broken["failure_class"] == "could_not_start"
    assert broken["error_type"] == "RuntimeError"
    assert fine["result"] == '"ok"'


# -- Parsl's own processes boot without what they never use -----------------------------
_PROBE = """
import multiprocessing, sys

def loaded(_):
    import parsl.providers  # noqa: F401 - what a worker pool imports
    return sorted(m for m in ("kubernetes", "globus_compute_sdk", "boto3") if m in sys.modules)

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.map(loaded, [0])[0]
    parent = loaded(0)
    import kubernetes  # the script's own import (not Parsl's) still works
    print(parent, child, kubernetes.__name__)
"""


@pytest.mark.skipif(
    importlib.util.find_spec("kubernetes") is None, reason="needs the kubernetes extra installed"
)
def test_parsl_processes_start_without_the_optional_packages_they_never_use(tmp_path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(_PROBE)
    done = subprocess.run(
        [sys.executable, "-m", "executor.worker.lean_parsl", str(script)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[]", "kubernetes"]


_TYPE_PROBE = """
import multiprocessing, sys, typeguard

def checks(_):
    sys.path.insert(0, HERE)
    from jobcode import own  # a job's own module, decorated with @typechecked

    from parsl.utils import get_all_checkpoints
    try:
        get_all_checkpoints(rundir=12345)  # an int where Parsl annotates str
        parsl = "unchecked"
    except typeguard.TypeCheckError:
        parsl = "checked"
    try:
        own("a string")
        mine = "unchecked"
    except typeguard.TypeCheckError:
        mine = "checked"
    return f"parsl:{parsl} own:{mine}"

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.map(checks, [0])[0]
    print(checks(0), child)
"""


def test_parsl_processes_skip_parsls_import_time_type_checks_and_keep_everyone_elses(
    tmp_path,
) -> None:
    """typeguard recompiles each of Parsl's decorated functions at import (about half of
    a lean Parsl process's import time); a job's own decorations still check."""
    script = tmp_path / "type_probe.py"  # not types.py: the script's directory leads sys.path
    script.write_text(f"HERE = {str(tmp_path)!r}\n" + _TYPE_PROBE)
    (tmp_path / "jobcode.py").write_text(
        "import typeguard\n\n@typeguard.typechecked\ndef own(x: int) -> int:\n    return x\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "executor.worker.lean_parsl", str(script)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["parsl:unchecked", "own:checked"] * 2
    plain = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert plain.stdout.split() == ["parsl:checked", "own:checked"] * 2, plain.stderr
