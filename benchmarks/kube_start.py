"""Seconds from ``pilot submit`` to the first job's end: Kubernetes pods next to the local site.

    python benchmarks/kube_start.py              # 3 repetitions each, about a minute
    python benchmarks/kube_start.py --reps 5 --cold-delay 10

Runs against the Kubernetes API STAND-IN of the tests (``tests/kube_standin.py``: pods are
local processes in namespaces of their own; needs root), so it measures pilot's own path
(API calls, the certificate Secret, the worker pool's boot and connection, shipping the
runtime to the pod) and not a cluster's. Three ways, one ``echo`` job each:

- *local*: the local site (worker processes on this host);
- *k8s, scheduled at once*: the pod is scheduled and its image present at once;
- *k8s, cold*: the pod stays ``Pending`` (``Unschedulable``) for ``--cold-delay`` seconds,
  standing in for scheduling and an image pull on a cold node, then starts.

Each time is from starting ``pilot submit`` to the job's recorded end (monitoring.db).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from kube_standin import KubeStandIn  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_end(home: Path, run_id: str) -> float:
    import sqlite3

    with sqlite3.connect(home / "monitoring.db") as db:
        (end,) = db.execute("SELECT MIN(end) FROM attempts WHERE run_id = ?", [run_id]).fetchone()
    return float(end)


def submit(home: Path, workflow: Path, site: Path | None) -> float:
    """One run; seconds from the submit to the first job's end."""
    env = {**os.environ, "PILOT_HOME": str(home)}
    env.pop("PILOT_DB", None)
    command = [sys.executable, "-m", "executor", "submit", str(workflow)]
    command += ["--site", str(site)] if site else []
    started = time.time()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stdout}\n{done.stderr}")
    return first_end(home, done.stdout.split()[1]) - started


def kube_site(directory: Path, kube: KubeStandIn) -> Path:
    data = {
        "backend": "kubernetes", "kubeconfig": str(kube.kubeconfig), "image": "python:3.11",
        "address": "127.0.0.1", "worker_port": free_port(), "poll_interval": 1,
        "pools": {"default": {"cores": 1, "memory": "500MB", "workers": 1}},
    }  # fmt: skip
    path = directory / "bench-k8s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cold(kube: KubeStandIn, delay: float, stop: threading.Event) -> None:
    """Keep each new pod Pending for ``delay`` seconds after it appears."""
    while not stop.is_set():
        if kube.pods() and kube.unschedulable:
            stop.wait(delay)
            kube.unschedulable = False
        stop.wait(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cold-delay", type=float, default=5.0)
    args = parser.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    names = ["local", "k8s, scheduled at once", f"k8s, cold ({args.cold_delay:g} s pending)"]
    results: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        workflow = root / "workflow.yaml"
        workflow.write_text(yaml.safe_dump({"name": "first", "jobs": [
            {"name": "hello", "command": "echo hello"}]}))  # fmt: skip
        with KubeStandIn(root / "kube", hide=[root / "home"]) as kube:
            site = kube_site(root, kube)
            for rep in range(args.reps):
                home = root / "home" / str(rep)
                results["local"].append(submit(home, workflow, None))
                results["k8s, scheduled at once"].append(submit(home, workflow, site))
                stop = threading.Event()
                kube.unschedulable = True
                watcher = threading.Thread(target=cold, args=(kube, args.cold_delay, stop))
                watcher.start()
                try:
                    results[names[2]].append(submit(home, workflow, site))
                finally:
                    stop.set()
                    watcher.join()
                    kube.unschedulable = False
    print(f"submit -> first job's end, seconds ({args.reps} runs each; Kubernetes: the stand-in)")
    print(f"{'site':34} {'median':>7} {'min':>7} {'max':>7}")
    for name, times in results.items():
        print(f"{name:34} {statistics.median(times):7.2f} {min(times):7.2f} {max(times):7.2f}")


if __name__ == "__main__":
    main()
