"""Elastic pilots on the real test Slurm cluster: pilot against Parsl's ``htex_auto_scale``.

    sudo scripts/local-slurm.sh start        # a one-node cluster (8 CPUs)
    python benchmarks/elastic_slurm.py       # about 6 minutes
    python benchmarks/elastic_slurm.py --short 5 --tail 20   # shorter phases

A phased workflow: a wide level of ``--width`` short jobs (``sleep --short``), a long
serial tail of ``--tail-jobs`` jobs (``sleep --tail`` each, one after another), and
another wide level. Both contenders run it on the same cluster with the same pilot
shape: one worker and one core per pilot, at most ``--max-blocks`` pilots, idle pilots
released after ``--idle`` seconds, one pilot started at once:

- *pilot*: ``pilot submit`` with its elastic policy (``queue_wait: 0``, ``max_queued``
  ``--max-blocks``), a site file written from ``slurm-local``;
- *parsl*: plain Parsl, one ``bash_app`` per job with futures as dependencies, a
  HighThroughputExecutor on a ``SlurmProvider``, ``strategy="htex_auto_scale"``,
  ``max_idletime=--idle``.

Both are measured the same way, from outside: a thread polls ``squeue`` every 0.5 s and
integrates the running pilots (allocated core-seconds, until they leave the queue);
busy core-seconds are the jobs' runtimes; waste is allocated minus busy; makespan is
the first job's start to the last job's end, from the jobs' own timestamps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCAL_SITE = ROOT / "executor" / "sites" / "configs" / "slurm-local.yaml"


class QueueMeter:
    """Integrates running pilot jobs (``parsl.*`` in ``squeue``) over time."""

    def __init__(self) -> None:
        self.core_seconds = 0.0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _running(self) -> int:
        out = subprocess.run(
            ["squeue", "--noheader", "--states=RUNNING", "--format=%j %C"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("parsl."))

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            cores = self._running()
            now = time.monotonic()
            self.core_seconds += cores * (now - last)
            self.peak = max(self.peak, cores)
            last = now
            self._stop.wait(0.5)

    def __enter__(self) -> QueueMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Pilots still in the queue when the run returns are allocated too: wait them out.
        deadline = time.monotonic() + 120
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.5)
        self._stop.set()
        self._thread.join()


def phases(args: argparse.Namespace) -> list[dict]:
    """The workflow's jobs: name, command seconds, parents."""
    jobs = [{"name": f"a{i}", "seconds": args.short, "after": []} for i in range(args.width)]
    previous = [job["name"] for job in jobs]
    for i in range(args.tail_jobs):
        jobs.append({"name": f"t{i}", "seconds": args.tail, "after": previous})
        previous = [f"t{i}"]
    jobs += [{"name": f"b{i}", "seconds": args.short, "after": previous} for i in range(args.width)]
    return jobs


def stamp_command(job: dict, stamps: Path) -> str:
    """Sleep, writing start and end times (the jobs' own timestamps)."""
    out = stamps / job["name"]
    return f"date +%s.%N > {out}.start; sleep {job['seconds']}; date +%s.%N > {out}.end"


def job_span(stamps: Path) -> tuple[float, float, float]:
    """(first start, last end, busy seconds) from the stamp files."""
    starts = {p.stem: float(p.read_text()) for p in stamps.glob("*.start")}
    ends = {p.stem: float(p.read_text()) for p in stamps.glob("*.end")}
    busy = sum(ends[name] - starts[name] for name in ends)
    return min(starts.values()), max(ends.values()), busy


def run_pilot(args: argparse.Namespace, work: Path) -> dict:
    site = yaml.safe_load(LOCAL_SITE.read_text())
    site.update(cores_per_node=1, idle_timeout=args.idle, queue_wait=0, max_queued=args.max_blocks)
    site["pools"]["default"].update(
        workers=1, init_blocks=1, min_blocks=0, max_blocks=args.max_blocks
    )
    (work / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    stamps = work / "pilot-stamps"
    stamps.mkdir()
    jobs = [
        {"name": job["name"], "command": stamp_command(job, stamps), "after": job["after"]}
        for job in phases(args)
    ]
    (work / "workflow.yaml").write_text(yaml.safe_dump({"name": "phased", "jobs": jobs}))
    env = {**os.environ, "PILOT_HOME": str(work / "pilot-home")}
    with QueueMeter() as meter:
        result = subprocess.run(
            [sys.executable, "-m", "executor", "submit", str(work / "workflow.yaml"),
             "--site", str(work / "site.yaml")],
            capture_output=True, text=True, env=env, cwd=work,
        )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"pilot failed:\n{result.stdout}\n{result.stderr}")
    return summary(meter, stamps)


def run_parsl(args: argparse.Namespace, work: Path) -> dict:
    import parsl
    from parsl.app.app import bash_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import SlurmProvider

    site = yaml.safe_load(LOCAL_SITE.read_text())
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="slurm", address="127.0.0.1", max_workers_per_node=1, cores_per_worker=1,
                heartbeat_period=5, heartbeat_threshold=10,
                provider=SlurmProvider(
                    partition=site["partition"], nodes_per_block=1, cores_per_node=1,
                    init_blocks=1, min_blocks=0, max_blocks=args.max_blocks,
                    walltime=str(site["walltime"]), exclusive=False, worker_init="",
                    launcher=SingleNodeLauncher(), cmd_timeout=30,
                ),
            )
        ],
        strategy="htex_auto_scale", max_idletime=args.idle, run_dir=str(work / "parsl-runinfo"),
    )  # fmt: skip
    stamps = work / "parsl-stamps"
    stamps.mkdir()

    @bash_app
    def job(command: str, inputs: list = ()) -> str:  # noqa: B006 - Parsl's dependency list
        return command

    with QueueMeter() as meter:
        parsl.load(config)
        try:
            futures: dict[str, object] = {}
            for spec in phases(args):
                inputs = [futures[parent] for parent in spec["after"]]
                futures[spec["name"]] = job(stamp_command(spec, stamps), inputs=inputs)
            for future in futures.values():
                future.result()  # type: ignore[attr-defined]
        finally:
            parsl.dfk().cleanup()
            parsl.clear()
    return summary(meter, stamps)


def summary(meter: QueueMeter, stamps: Path) -> dict:
    first, last, busy = job_span(stamps)
    return {
        "allocated": meter.core_seconds, "busy": busy,
        "waste": max(0.0, meter.core_seconds - busy), "makespan": last - first,
        "peak": meter.peak,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=12, help="jobs in each wide level")
    parser.add_argument("--short", type=float, default=10, help="seconds of a wide-level job")
    parser.add_argument("--tail-jobs", type=int, default=3, help="jobs in the serial tail")
    parser.add_argument("--tail", type=float, default=40, help="seconds of a tail job")
    parser.add_argument("--max-blocks", type=int, default=4, help="pilots at most")
    parser.add_argument("--idle", type=float, default=10, help="idle seconds before release")
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate the two this many times; show medians"
    )
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    runs: dict[str, list[dict]] = {"pilot": [], "parsl htex_auto_scale": []}
    with tempfile.TemporaryDirectory(prefix="elastic-slurm-") as tmp:
        # Alternated, so that a change in the machine's load touches both alike.
        for round_ in range(args.repeat):
            for name, run in (("pilot", run_pilot), ("parsl htex_auto_scale", run_parsl)):
                work = Path(tmp) / f"{name.split()[0]}-{round_}"
                work.mkdir()
                print(f"running {name} ({round_ + 1}/{args.repeat}) ...", file=sys.stderr)
                runs[name].append(run(args, work))
                print(f"  {runs[name][-1]}", file=sys.stderr, flush=True)
    rows = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    print(
        f"\nphased workflow: {args.width} x {args.short:g}s, tail {args.tail_jobs} x "
        f"{args.tail:g}s, {args.width} x {args.short:g}s; 1 core per pilot, at most "
        f"{args.max_blocks}, idle release {args.idle:g}s; median of {args.repeat} run(s) each\n"
    )
    print("| strategy | allocated core-s | busy core-s | waste core-s | makespan s | peak pilots |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['allocated']:.0f} | {row['busy']:.0f} | {row['waste']:.0f} | "
            f"{row['makespan']:.1f} | {row['peak']:g} |"
        )
    pilot, parsl_row = rows["pilot"], rows["parsl htex_auto_scale"]
    print(
        f"\npilot / parsl: waste {pilot['waste'] / max(parsl_row['waste'], 1e-9):.2f}x "
        f"(target <= 0.5x), makespan {pilot['makespan'] / parsl_row['makespan']:.2f}x "
        "(target <= 1.1x)"
    )


if __name__ == "__main__":
    main()
