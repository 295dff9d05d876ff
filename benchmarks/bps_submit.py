"""``bps submit`` of one 30-quantum graph with pilot and with the stock Parsl plugin.

    pip install 'pilot-executor[bps]' lsst-ctrl-bps-parsl
    python benchmarks/bps_submit.py                  # 3 tasks x 10 detectors = 30 quanta
    python benchmarks/bps_submit.py --tasks 5 --detectors 6

A real Butler repository (SQLite registry, posix datastore) with a chain of
``lsst.pipe.base.tests.simpleQGraph.AddTask`` tasks, the same for both contenders, on
this machine with two worker cores each. Each contender runs ``bps submit`` to the end
of the run, into its own output run: pilot with ``pilot: {wait: true}`` (so that the
command, like the Parsl plugin's, returns when the run has ended), the Parsl plugin
with its ``Local`` site (``cores: 2``). Times are wall times of the whole command,
quantum graph generation included (the same work for both); the outputs are checked.
pilot's detached submit is timed too: until the command returns, and until the run
has ended.

The stock Parsl site fails on Parsl 2026.10 (it passes ``checkpoint_mode``, which
that Parsl no longer has): :class:`ParslLocal` is that site without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))  # the Butler helpers the tests use

CORES = 2

try:
    from lsst.ctrl.bps.parsl.sites import Local as _StockLocal
except ImportError:  # the plugin is optional; the pilot rows still run
    _StockLocal = object  # type: ignore[assignment,misc]


class ParslLocal(_StockLocal):  # type: ignore[misc,valid-type]
    """The Parsl plugin's ``Local`` site, without ``checkpoint_mode`` (gone in Parsl 2026.10)."""

    def get_parsl_config(self):
        import parsl.config
        from lsst.ctrl.bps.parsl.configuration import get_bps_config_value

        return parsl.config.Config(
            executors=self.get_executors(),
            monitoring=self.get_monitor(),
            retries=get_bps_config_value(self.site, "retries", int, 1),
            run_dir=get_bps_config_value(self.site, "run_dir", str, "runinfo"),
        )


def _submit(root: Path, config: Path, env: dict[str, str]) -> tuple[float, str]:
    from bps_butler import bps, run_id_of

    started = time.perf_counter()
    result = bps("submit", str(config), cwd=root, env=env, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"bps submit failed ({config.name}):\n{result.stdout}\n{result.stderr}")
    return wall, run_id_of(result.stdout)


def _check(root: Path, run: str, tasks: int, detectors: int) -> bool:
    from bps_butler import ADDEND, INPUT, outputs

    expected = [value + ADDEND * tasks for value in INPUT]
    return outputs(root, run, f"add_dataset{tasks}") == {d: expected for d in range(detectors)}


def pilot_row(root: Path, pipeline: Path, env: dict, tasks: int, detectors: int, wait: bool):
    from bps_butler import write_config

    from executor.bps.service import PilotService

    run = f"u/tester/addtasks/pilot_{'wait' if wait else 'detached'}"
    config = write_config(root, pipeline, output_run=run, service="executor.bps.PilotService",
                          extra={"pilot": {"wait": wait}})  # fmt: skip
    started = time.perf_counter()
    returned, run_id = _submit(root, config, env)
    if not wait:
        os.environ["PILOT_HOME"] = env["PILOT_HOME"]
        service = PilotService({})
        while service.get_status(run_id)[0].name in ("RUNNING", "PENDING", "READY", "UNREADY"):
            time.sleep(0.2)
    ended = time.perf_counter() - started
    return {"returned": returned, "ended": ended, "ok": _check(root, run, tasks, detectors)}


def parsl_row(root: Path, pipeline: Path, env: dict, tasks: int, detectors: int):
    from bps_butler import write_config

    run = "u/tester/addtasks/parsl"
    config = write_config(root, pipeline, output_run=run,
                          service="lsst.ctrl.bps.parsl.ParslService",
                          extra={"site": {"local": {"class": "bps_submit.ParslLocal",
                                                    "cores": CORES}}})  # fmt: skip
    env = {**env, "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])}
    wall, _ = _submit(root, config, env)
    return {"returned": wall, "ended": wall, "ok": _check(root, run, tasks, detectors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3, help="AddTasks in the chain")
    parser.add_argument("--detectors", type=int, default=10, help="quanta per task")
    args = parser.parse_args()
    from bps_butler import bps_environment, make_repo

    quanta = args.tasks * args.detectors
    with tempfile.TemporaryDirectory(prefix="bps-bench-") as tmp:
        root = Path(tmp)
        pipeline = make_repo(root, tasks=args.tasks, detectors=args.detectors)
        env = bps_environment("executor.bps.PilotService", root / "pilot-home")
        # Two worker cores for pilot as for Parsl: a local site file with one pool.
        sites = root / "site_configs"
        sites.mkdir()
        (sites / "local.yaml").write_text(
            f"backend: local\npools:\n  default: {{cores: {CORES}, workers: {CORES}}}\n"
        )
        rows = {
            "pilot (wait: true)": pilot_row(root, pipeline, env, args.tasks, args.detectors, True),
            "pilot (detached)": pilot_row(root, pipeline, env, args.tasks, args.detectors, False),
        }
        try:
            import lsst.ctrl.bps.parsl  # noqa: F401

            rows["ctrl_bps_parsl (Local)"] = parsl_row(
                root, pipeline, env, args.tasks, args.detectors
            )
        except ImportError:
            print("lsst-ctrl-bps-parsl is not installed: no Parsl row", file=sys.stderr)
    print(f"\n{quanta} quanta ({args.tasks} AddTasks x {args.detectors} detectors), "
          f"{CORES} worker cores, bps submit wall times:\n")  # fmt: skip
    print("| plugin | submit returned, s | run ended, s | outputs |\n|---|---:|---:|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['returned']:.1f} | {row['ended']:.1f} | "
              f"{'ok' if row['ok'] else 'WRONG'} |")  # fmt: skip


if __name__ == "__main__":
    main()
