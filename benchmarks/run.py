"""Side-by-side benchmarks: pilot against plain Parsl on the same machine, in one run.

    python benchmarks/run.py --quick        # smaller sizes, a few minutes
    python benchmarks/run.py                # the sizes the targets are stated for

Each row runs both contenders back to back with the same number of workers and prints
their numbers and the ratio. Record results in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

WORKERS = 2


def pilot_run(graph, workdir: Path) -> dict:
    """Run a graph with pilot; return wall time and job span from the store."""
    import executor
    from executor.policy.pools import PoolConfig
    from executor.sites.local import LocalSite
    from executor.store import Store

    site = LocalSite(name="bench", pools=(PoolConfig(name="default", workers=WORKERS),))
    db = workdir / "monitoring.db"
    started = time.perf_counter()
    result = executor.run(graph, site=site, db=db)
    wall = time.perf_counter() - started
    with Store(db) as store:
        [span] = store.query(
            "SELECT min(start) AS first, max(end) AS last, count(*) AS n FROM attempts "
            "WHERE run_id = ? AND state = 'succeeded'",
            [result.run_id],
        )
    return {"wall": wall, "span": span["last"] - span["first"], "jobs": span["n"],
            "state": result.state.value}  # fmt: skip


def parsl_htex(workdir: Path):
    """A plain Parsl DataFlowKernel with the same local workers, blocks started at once."""
    from parsl.config import Config
    from parsl.dataflow.dflow import DataFlowKernel
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    htex = HighThroughputExecutor(
        label="htex", max_workers_per_node=WORKERS, address="127.0.0.1",
        provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=1),
    )  # fmt: skip
    dfk = DataFlowKernel(Config(executors=[htex], strategy="none", run_dir=str(workdir / "parsl"),
                                usage_tracking=0))  # fmt: skip
    htex.scale_out_facade(1)
    return dfk


def parsl_throughput(workdir: Path, n: int, kind: str) -> dict:
    from parsl.app.bash import BashApp
    from parsl.app.python import PythonApp

    dfk = parsl_htex(workdir)
    try:
        if kind == "bash":
            app = BashApp(_true_command, data_flow_kernel=dfk)
        else:
            app = PythonApp(_tiny_function, data_flow_kernel=dfk)
        app().result()  # workers up
        started = time.perf_counter()
        futures = [app() for _ in range(n)]
        for future in futures:
            future.result()
        span = time.perf_counter() - started
    finally:
        dfk.cleanup()
    return {"span": span, "jobs": n}


def _true_command():
    return "true"


def _tiny_function():
    return 1


def row_throughput(n: int, kind: str, scratch: Path) -> tuple[str, float, float, str]:
    import executor

    wf = executor.Workflow(f"{kind}-{n}")
    if kind == "bash":
        for i in range(n):
            wf.shell(f"true-{i}", "true", label="true")
    else:
        for i in range(n):
            wf.function(f"tiny-{i}", "tiny_jobs:tiny", args=[i], label="tiny")
    wf.workdir = HERE
    pilot = pilot_run(wf.build(), _fresh(scratch))
    parsl = parsl_throughput(_fresh(scratch), n, kind)
    ours, theirs = pilot["jobs"] / pilot["span"], parsl["jobs"] / parsl["span"]
    name = f"{n:,} tiny {'shell' if kind == 'bash' else 'python'} jobs (jobs/s)"
    return name, ours, theirs, f"pilot wall {pilot['wall']:.1f}s incl. startup"


# Plain Parsl as a script a user would write: the same executor, `n` bash apps, exit.
_PARSL_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {here!r})
from run import parsl_htex
from parsl.app.bash import BashApp
dfk = parsl_htex(Path({scratch!r}))
app = BashApp(lambda: {command!r}, data_flow_kernel=dfk)
futures = [app() for _ in range({n})]
for future in futures:
    future.result()
dfk.cleanup()
"""


def whole_processes(n: int, command: str, scratch: Path) -> tuple[float, float]:
    """Seconds from process start to exit for ``n`` jobs running ``command``: `pilot
    submit` of a YAML workflow, and the plain Parsl script."""
    wf = scratch / f"jobs-{n}.yaml"
    lines = ["name: many", "jobs:"]
    lines += [f"  - {{name: job-{i}, command: {command!r}, label: job}}" for i in range(n)]
    wf.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PILOT_HOME": str(_fresh(scratch))}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "executor", "submit", str(wf)], env=env, check=True,
                   capture_output=True, cwd=scratch)  # fmt: skip
    ours = time.perf_counter() - started
    script = _PARSL_SCRIPT.format(here=str(HERE), scratch=str(_fresh(scratch)), n=n,
                                  command=command)  # fmt: skip
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    return ours, time.perf_counter() - started


def row_submit_latency(scratch: Path) -> tuple[str, float, float, str]:
    """Time from `pilot submit` of a one-job workflow to process exit, vs a Parsl script."""
    ours, theirs = whole_processes(1, "echo hello", scratch)
    return "submit of 1 job to exit (s, lower is better)", ours, theirs, "target < 2 s"


def row_whole_process(n: int, scratch: Path) -> tuple[str, float, float, str]:
    """``n`` `true` jobs as a new user meets them: process start to exit, start-up included."""
    ours, theirs = whole_processes(n, "true", scratch)
    note = f"whole process: pilot {ours:.1f}s, parsl {theirs:.1f}s; target >= 4x (floor 3x)"
    return f"{n:,} `true` shell jobs, whole process (jobs/s)", n / ours, n / theirs, note


def row_montage(scratch: Path, scale: float) -> tuple[str, float, float, str]:
    """Makespan of the Montage trace, runtimes divided by ``scale``."""
    from executor.formats import load_workflow

    source = HERE.parent.parent / "shared" / "workflows" / "wfinstances" / \
        "montage-chameleon-dss-15d-001.json"  # fmt: skip
    graph = load_workflow(source, time_scale=scale)
    pilot = pilot_run(graph, _fresh(scratch))
    parsl = parsl_graph(graph, _fresh(scratch))
    # No schedule beats the longest chain, nor the total work spread over every worker.
    path = critical_path(graph)
    bound = max(path, sum(_seconds(job) for job in graph) / WORKERS)
    ratio = pilot["span"] / bound
    note = f"lower bound {bound:.1f}s (critical path {path:.2f}s); pilot/bound {ratio:.2f}"
    return f"Montage {len(graph)} tasks / {scale:g} makespan (s, lower is better)", \
        pilot["span"], parsl, note  # fmt: skip


def _seconds(job) -> float:
    return float(job.command[1]) if job.command and job.command[0] == "sleep" else 0.0


def critical_path(graph) -> float:
    finish: dict[str, float] = {}
    for name in graph.topological_order():
        finish[name] = _seconds(graph[name]) + max((finish[p] for p in graph.parents(name)),
                                                   default=0.0)  # fmt: skip
    return max(finish.values())


def parsl_graph(graph, workdir: Path) -> float:
    """Plain Parsl: one bash_app per job, dependencies as futures (the whole graph at once)."""
    from parsl.app.bash import BashApp

    dfk = parsl_htex(workdir)
    try:
        app = BashApp(_sleep_after, data_flow_kernel=dfk)
        app(0, inputs=[]).result()
        started = time.perf_counter()
        futures: dict[str, object] = {}
        for name in graph.topological_order():
            futures[name] = app(_seconds(graph[name]),
                                inputs=[futures[p] for p in graph.parents(name)])  # fmt: skip
        for future in futures.values():
            future.result()
        return time.perf_counter() - started
    finally:
        dfk.cleanup()


def _sleep_after(seconds, inputs=()):
    return f"sleep {seconds}"


def _layered(n: int):
    import executor

    wf = executor.Workflow("layered")
    width = n // 10
    for layer in range(10):
        for i in range(width):
            after = [f"j-{layer - 1}-{i}"] if layer else []
            wf.shell(f"j-{layer}-{i}", "true", label=f"layer{layer}", after=after)
    return wf.build()


_BIG_GRAPH = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {here!r})
from run import _layered, pilot_run
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = pilot_run(_layered({n}), Path({scratch!r}))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"kb": after - before, **result}}))
"""


def row_big_graph(n: int, scratch: Path) -> tuple[str, float, float, str]:
    """Driver peak memory per job and throughput for a layered graph of n tiny jobs."""
    code = _BIG_GRAPH.format(here=str(HERE), n=n, scratch=str(_fresh(scratch)))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    per_job = data["kb"] * 1024 / n
    rate = data["jobs"] / data["span"]
    return f"{n:,}-job layered graph: driver peak bytes/job", per_job, float("nan"), \
        f"target < 3,000 B/job; {rate:.0f} jobs/s"  # fmt: skip


def row_restart(n: int, scratch: Path, trials: int = 3) -> tuple[str, float, float, str]:
    """`pilot restart` of an n-job run that is 90% done: seconds until its first new job.

    The median of ``trials`` restarts of fresh copies (Parsl's start-up varies by a
    second here from one try to the next).
    """
    import statistics

    times = sorted(_restart_once(n, scratch) for _ in range(trials))
    return f"restart of a {n:,}-job run 90% done: s to first job", \
        statistics.median(times), float("nan"), \
        f"target < 5 s; {trials} tries: {', '.join(f'{t:.1f}' for t in times)}"  # fmt: skip


def _restart_once(n: int, scratch: Path) -> float:
    from executor.runs.start import start_run
    from executor.sites.local import LocalSite
    from executor.store import Store, locate

    home = _fresh(scratch)
    locations = locate(home / "monitoring.db")
    graph = _layered(n)
    with Store(locations.db) as store:
        context = start_run(graph, LocalSite(name="local"), store, locations)
        done = [(context.run_id, name) for name in graph.topological_order()[: n * 9 // 10]]
        store.write(lambda conn: (
            conn.executemany("UPDATE jobs SET state = 'succeeded', attempts = 1 "
                             "WHERE run_id = ? AND name = ?", done),
            conn.execute("UPDATE runs SET state = 'failed' WHERE id = ?", (context.run_id,)),
        ))  # fmt: skip
    started = time.time()
    driver = subprocess.Popen(
        [sys.executable, "-m", "executor", "restart", context.run_id, "--db", str(locations.db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    first = None
    with Store(locations.db) as store:
        while first is None and driver.poll() is None:
            rows = store.query(
                "SELECT min(start) AS t FROM attempts WHERE run_id = ? AND start IS NOT NULL",
                [context.run_id],
            )
            first = rows[0]["t"]
            time.sleep(0.05)
    driver.send_signal(2)
    driver.wait(timeout=60)
    return (first or float("nan")) - started


def row_shipped(n: int, scratch: Path) -> tuple[str, float, float, str]:
    """Tiny function jobs whose module is shipped (not on the workers' path) vs plain Parsl
    calling it from a shared directory; and what building the tarball cost."""
    import shutil

    import executor

    code = _fresh(scratch) / "benchpkg"
    code.mkdir()
    shutil.copy(HERE / "tiny_jobs.py", code / "tiny_jobs.py")
    (code / "__init__.py").write_text("")
    # Bulk, as a real package has: 500 modules of 4 kB each.
    for i in range(500):
        (code / f"module_{i}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 400)
    wf = executor.Workflow(f"shipped-{n}", code=[code], workdir=_fresh(scratch))
    for i in range(n):
        wf.function(f"tiny-{i}", "benchpkg.tiny_jobs:tiny", args=[i], label="tiny")
    started = time.perf_counter()
    from executor.shipping.tarball import build

    shipment = build([code], _fresh(scratch))
    build_seconds = time.perf_counter() - started
    pilot = pilot_run(wf.build(), _fresh(scratch))
    parsl = parsl_throughput(_fresh(scratch), n, "python")
    ours, theirs = pilot["jobs"] / pilot["span"], parsl["jobs"] / parsl["span"]
    return f"{n:,} tiny python jobs, code shipped (jobs/s)", ours, theirs, \
        f"tarball of {len(shipment.files)} files, {shipment.content_bytes / 1e6:.1f} MB: " \
        f"built in {build_seconds:.2f}s"  # fmt: skip


# Parsl's workers unpickle the bash_app by reference to this module: put it on their path.
_TRACED = """
import os, sys
from pathlib import Path
sys.path.insert(0, {here!r})
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [{here!r}, os.environ.get("PYTHONPATH")]))
import run
run.{function}(Path({workdir!r}), {n})
"""


def pilot_true_jobs(workdir: Path, n: int) -> None:
    import executor

    wf = executor.Workflow(f"true-{n}")
    for i in range(n):
        wf.shell(f"true-{i}", "true", label="true")
    pilot_run(wf.build(), workdir)


def parsl_true_jobs(workdir: Path, n: int) -> None:
    """Plain Parsl as its documentation shows: a bash_app with stdout and stderr files."""
    from parsl.app.bash import BashApp

    dfk = parsl_htex(workdir)
    logs = workdir / "logs"
    logs.mkdir()
    try:
        app = BashApp(_true_logged, data_flow_kernel=dfk)
        futures = [app(stdout=str(logs / f"{i}.out"), stderr=str(logs / f"{i}.err"))
                   for i in range(n)]  # fmt: skip
        for future in futures:
            future.result()
    finally:
        dfk.cleanup()


def _true_logged(stdout=None, stderr=None):
    return "true"


def traced_metadata_ops(function: str, n: int, scratch: Path) -> tuple[float, int, float]:
    """Run ``function`` under ``strace -f`` and count the system calls on paths under its
    working directory (creates, opens, stats, mkdirs, renames, unlinks).

    Returns the calls on each job's own files (``logs`` and below) per job, the calls on
    everything else (the run's own files and the polling of the outcome logs and the
    cancel marker, which grows with time, not jobs), and the traced run's seconds.
    """
    workdir = _fresh(scratch)
    trace = workdir.parent / f"{workdir.name}.strace"
    code = _TRACED.format(here=str(HERE), function=function, workdir=str(workdir), n=n)
    started = time.perf_counter()
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(trace),
                    sys.executable, "-c", code], check=True, capture_output=True)  # fmt: skip
    seconds = time.perf_counter() - started
    root = str(workdir) + os.sep
    per_job = other = 0
    for line in trace.read_text().splitlines():
        quoted = line.split('"')
        if len(quoted) > 1 and quoted[1].startswith(root):
            path = quoted[1].split(" ")[0]
            if f"{os.sep}logs{os.sep}" in path or path.endswith(f"{os.sep}logs"):
                per_job += 1
            else:
                other += 1
    return per_job / n, other, seconds


def row_metadata(n: int, scratch: Path) -> tuple[str, float, float, str]:
    """File-system metadata operations on each job's files in the run directory, for
    `true` jobs: pilot against a Parsl bash_app with stdout and stderr files."""
    import shutil

    if shutil.which("strace") is None:
        return "run-dir metadata ops per job (needs strace)", float("nan"), float("nan"), ""
    ours, ours_other, ours_seconds = traced_metadata_ops("pilot_true_jobs", n, scratch)
    theirs, theirs_other, theirs_seconds = traced_metadata_ops("parsl_true_jobs", n, scratch)
    return f"run-dir metadata ops per job, {n} `true` jobs", ours, theirs, \
        f"target <= 1; besides: pilot {ours_other} in {ours_seconds:.0f}s traced, parsl " \
        f"{theirs_other} in {theirs_seconds:.0f}s (polling, run files; strace -f)"  # fmt: skip


def _fresh(scratch: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=scratch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", default="", help="comma-separated row numbers, e.g. 1,4")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    big = 20_000 if args.quick else 200_000
    rows: list[tuple[str, Callable[[Path], tuple]]] = [
        ("1", lambda s: row_throughput(n, "bash", s)),
        ("2", lambda s: row_throughput(n, "python", s)),
        ("3", lambda s: row_montage(s, 1000.0)),
        ("4", row_submit_latency),
        ("5", lambda s: row_big_graph(big, s)),
        ("6", lambda s: row_restart(big, s)),
        ("7", lambda s: row_shipped(n, s)),
        ("8", lambda s: row_metadata(200 if args.quick else 1_000, s)),
        ("9", lambda s: row_whole_process(800 if args.quick else 8_000, s)),
    ]
    wanted = set(args.only.split(",")) if args.only else {key for key, _ in rows}
    # Parsl's bytecode was compiled when pip installed it; pilot's, in an editable
    # checkout with PYTHONDONTWRITEBYTECODE set, would be compiled afresh by every
    # process. Compile it once, as `pip install .` does, so both start alike.
    import compileall

    import executor

    compileall.compile_dir(str(Path(executor.__file__).parent), quiet=1)
    print(f"{'benchmark':58} {'pilot':>10} {'parsl':>10} {'ratio':>7}  note", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for key, row in rows:
            if key not in wanted:
                continue
            name, ours, theirs, note = row(Path(scratch))
            ratio = ours / theirs if theirs else float("nan")
            print(f"{key}. {name:55} {ours:10.2f} {theirs:10.2f} {ratio:7.2f}  {note}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
