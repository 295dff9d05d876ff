"""The worker side runs on the standard library alone: no PyYAML, psutil or Parsl.

Every Parsl worker imports :mod:`executor.worker`; it must run jobs where pilot's
dependencies are missing, and load nothing of the driver's side. (Where pilot itself
is missing, the shipped runtime runs instead: see test_delivery.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from executor.driver.context import RunContext, job_spec
from executor.model.graph import Job
from executor.worker.outcome import FIELDS

ROOT = Path(__file__).resolve().parent.parent

# Runs in `python -I -S` (no site-packages, no PYTHONPATH): only the project root and
# the standard library are importable.
_PROGRAM = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
present = [n for n in ("yaml", "psutil", "parsl") if importlib.util.find_spec(n) is not None]
if present:
    sys.exit(f"{present} importable here: the test proves nothing")
from executor.worker.bundle import run_bundle
outcomes = run_bundle(json.load(sys.stdin))
print(json.dumps({"outcomes": outcomes, "modules": sorted(sys.modules)}))
"""


def _worker_side(name: str) -> bool:
    return name in ("executor", "executor._version") or name.startswith("executor.worker")


def _standard(name: str) -> bool:
    return name == "__main__" or name.partition(".")[0] in sys.stdlib_module_names


def test_a_bundle_runs_with_the_standard_library_alone_and_loads_nothing_else(tmp_path: Path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "jobs.py").write_text("def double(x):\n    return 2 * x\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    environment_file = run_dir / "environment.json"
    environment_file.write_text(json.dumps({"PATH": os.environ["PATH"]}))
    context = RunContext(
        run_id="r", run_dir=run_dir, workdir=workdir, environment_file=environment_file
    )
    double = {"label": "x", "function": "jobs:double", "args": (21,)}
    jobs = [
        (Job(name="shell", label="x", command="echo $PILOT_JOB_NAME"), None),
        (Job(name="in-process", **double), None),
        # A memory limit: its own process, watched by reading /proc (no psutil).
        (Job(name="own-process", memory=500, **double), 500),
    ]
    specs = [job_spec(job, context, 1, memory, 0.1) for job, memory in jobs]
    assert [spec["in_process"] for spec in specs] == [False, True, False]

    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _PROGRAM, str(ROOT)],
        input=json.dumps(specs), capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    outcomes = answer["outcomes"]
    assert [o["state"] for o in outcomes] == ["succeeded"] * 3, outcomes
    assert all(tuple(outcome) == FIELDS for outcome in outcomes)
    assert Path(outcomes[0]["stdout"]).read_text() == "shell\n"
    assert outcomes[1]["result"] == outcomes[2]["result"] == "42"
    foreign = [m for m in answer["modules"] if not (_standard(m) or _worker_side(m))]
    assert foreign == []
