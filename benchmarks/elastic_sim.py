"""Elastic scaling in simulation: pilot's policy against Parsl's ``htex_auto_scale``.

    python benchmarks/elastic_sim.py                 # both workflows, both strategies
    python benchmarks/elastic_sim.py --jobs 20000    # a smaller trace
    python benchmarks/elastic_sim.py --queue-wait 600 --walltime 1800

A discrete-event simulation: a simulated clock and provider (pilots wait in a queue for
a lognormal time, then run ``--workers`` workers until their walltime; at most
``--nodes`` at once) run a job graph with either strategy, called every ``--tick``
simulated seconds with the same limits:

- *pilot*: :func:`executor.policy.elastic.decide` on what the driver would know (ready
  jobs by label estimate, running jobs' expected ends, :func:`forecast` of the rest
  every ``--forecast-every`` s), applied as the driver would (submit, drain, release);
- *parsl*: Parsl's ``htex_auto_scale`` (``parsl/jobs/strategy.py``): scale out to cover
  the outstanding (ready and running) tasks, scale in blocks idle ``max_idletime``,
  everything once no task is left; unaware of walltimes (a job cut by one is retried).

Workflows: (1) phased: a wide level of short jobs, a long serial tail, a wide level;
(2) a WfInstances trace from ``../shared/workflows/wfinstances`` replicated to
``--jobs`` jobs (a synthetic layered graph when none is there). Estimates per label are
the mean of the label's true runtimes (what earlier runs would have measured); true
runtimes vary around them.

Waste is allocated but idle worker-seconds (a pilot is allocated from its start to
its release, its walltime or the end of the run), plus work lost to walltime kills.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from executor.policy.elastic import (  # noqa: E402
    PilotPhase,
    PilotView,
    PoolLimits,
    ReadyWork,
    RunningWork,
    ScalingInput,
    WorkView,
    decide,
    forecast,
    queue_wait_estimate,
)
from executor.policy.lookahead import RECENT_PILOTS  # noqa: E402

TRACES = HERE.parent.parent / "shared" / "workflows" / "wfinstances"
DEFAULT_TRACE = "1000genome-chameleon-22ch-250k-001.json"


@dataclass
class Trace:
    """A job graph as arrays: true and expected runtimes, parents, in topological order."""

    name: str
    runtime: list[float]
    expected: list[float]
    parents: list[list[int]]

    def __len__(self) -> int:
        return len(self.runtime)


def _estimates(labels: list[str], runtime: list[float]) -> list[float]:
    by_label: dict[str, list[float]] = {}
    for label, seconds in zip(labels, runtime, strict=True):
        by_label.setdefault(label, []).append(seconds)
    mean = {label: statistics.fmean(values) for label, values in by_label.items()}
    return [mean[label] for label in labels]


def phased(width: int, rng: random.Random) -> Trace:
    """Wide level of 30 s jobs → 8-job chain of 300 s jobs → wide level of 60 s jobs."""
    labels, parents = [], []
    labels += ["wide1"] * width
    parents += [[] for _ in range(width)]
    first_tail = len(labels)
    for i in range(8):
        labels.append("tail")
        parents.append(list(range(width)) if i == 0 else [first_tail + i - 1])
    last_tail = len(labels) - 1
    labels += ["wide2"] * width
    parents += [[last_tail] for _ in range(width)]
    base = {"wide1": 30.0, "tail": 300.0, "wide2": 60.0}
    runtime = [base[label] * rng.lognormvariate(0, 0.2) for label in labels]
    return Trace(f"phased {len(labels):,} jobs", runtime, _estimates(labels, runtime), parents)


def replicated(path: Path, jobs: int, time_scale: float) -> Trace:
    """A WfInstances trace, copied side by side until it has ``jobs`` jobs."""
    from executor.formats import load_workflow

    graph = load_workflow(path, time_scale=time_scale)
    order = graph.topological_order()
    index = {name: i for i, name in enumerate(order)}
    one_runtime = [float(graph[n].command[1]) if graph[n].command else 0.0 for n in order]
    one_labels = [graph[n].label for n in order]
    one_parents = [[index[p] for p in graph.parents(n)] for n in order]
    copies = max(1, math.ceil(jobs / len(order)))
    runtime, labels, parents = [], [], []
    for c in range(copies):
        offset = c * len(order)
        runtime += one_runtime
        labels += one_labels
        parents += [[offset + p for p in ps] for ps in one_parents]
    del runtime[jobs:], labels[jobs:], parents[jobs:]
    name = f"{path.stem} x{copies} = {len(runtime):,} jobs"
    return Trace(name, runtime, _estimates(labels, runtime), parents)


def synthetic(jobs: int, rng: random.Random) -> Trace:
    """Ten layers, each job after one or two of the layer before; runtimes by layer."""
    width = jobs // 10
    labels, parents, runtime = [], [], []
    for layer in range(10):
        for i in range(width):
            labels.append(f"layer{layer}")
            parents.append([] if layer == 0 else sorted({(layer - 1) * width + i,
                           (layer - 1) * width + rng.randrange(width)}))  # fmt: skip
            runtime.append((20.0 + 40 * (layer % 3)) * rng.lognormvariate(0, 0.3))
    return Trace(f"synthetic {len(labels):,} jobs", runtime, _estimates(labels, runtime), parents)


@dataclass
class Config:
    nodes: int
    workers: int
    walltime: float | None
    queue_wait: float
    idle_timeout: float
    max_queued: int
    tick: float
    forecast_every: float
    seed: int


@dataclass(eq=False)
class Pilot:
    block_id: str
    workers: int
    submitted: float
    phase: str = "queued"  # queued, running, draining, ended
    started: float | None = None
    ends: float | None = None
    idle_since: float | None = None
    busy: set[int] = field(default_factory=set)
    end: float | None = None


class Sim:
    """The simulated run: clock, provider, HTEx-like dispatch, and the bookkeeping."""

    def __init__(self, trace: Trace, config: Config):
        self.trace, self.config = trace, config
        self.rng = random.Random(config.seed)
        n = len(trace)
        self.children: list[list[int]] = [[] for _ in range(n)]
        for child, parents in enumerate(trace.parents):
            for parent in parents:
                self.children[parent].append(child)
        self.waiting = [len(p) for p in trace.parents]
        self.state = [0] * n  # 0 pending, 1 ready, 2 running, 3 done
        self.ready: deque[int] = deque()
        self.ready_by_runtime: dict[float, int] = {}
        self.running: dict[int, float] = {}  # job -> expected end
        self.done = 0
        self.events: list[tuple[float, int, str, object]] = []
        self.seq = 0
        self.now = 0.0
        self.pilots: dict[str, Pilot] = {}
        self.open: dict[str, Pilot] = {}  # running, not draining, with a free worker
        self.waits: list[tuple[float, int, float]] = []  # (submitted, order, wait)
        self.submitted = self.peak_queued = self.killed = 0
        self.busy_seconds = self.lost_seconds = 0.0
        for job in range(n):
            if not self.waiting[job]:
                self._make_ready(job)

    def at(self, when: float, kind: str, data: object = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, data))

    def _make_ready(self, job: int) -> None:
        self.state[job] = 1
        self.ready.append(job)
        e = self.trace.expected[job]
        self.ready_by_runtime[e] = self.ready_by_runtime.get(e, 0) + 1

    def submit(self, count: int) -> None:
        for _ in range(count):
            pilot = Pilot(f"b{len(self.pilots)}", self.config.workers, self.now)
            self.pilots[pilot.block_id] = pilot
            self.submitted += 1
            wait = self.config.queue_wait * self.rng.lognormvariate(0, 0.5)
            self.at(self.now + wait, "start", pilot)

    def release(self, pilot: Pilot) -> None:
        """End a pilot now: a queued one is cancelled, a running one must be idle."""
        assert not pilot.busy, "released a busy pilot"
        pilot.phase, pilot.end = "ended", self.now
        self.open.pop(pilot.block_id, None)

    def drain(self, pilot: Pilot) -> None:
        pilot.phase = "draining"
        self.open.pop(pilot.block_id, None)

    def live(self, *phases: str) -> list[Pilot]:
        return [p for p in self.pilots.values() if p.phase in phases]

    def _dispatch(self) -> None:
        ready, open_ = self.ready, self.open
        while ready and open_:
            pilot = next(iter(open_.values()))
            job = ready.popleft()
            e = self.trace.expected[job]
            self.ready_by_runtime[e] -= 1
            self.state[job] = 2
            self.running[job] = self.now + e
            pilot.busy.add(job)
            pilot.idle_since = None
            if len(pilot.busy) >= pilot.workers:
                del open_[pilot.block_id]
            end = self.now + self.trace.runtime[job]
            if pilot.ends is None or end < pilot.ends:
                self.at(end, "done", (pilot, job))

    def _finish(self, pilot: Pilot, job: int) -> None:
        pilot.busy.discard(job)
        del self.running[job]
        self.busy_seconds += self.trace.runtime[job]
        self.state[job] = 3
        self.done += 1
        for child in self.children[job]:
            self.waiting[child] -= 1
            if not self.waiting[child]:
                self._make_ready(child)
        if not pilot.busy:
            pilot.idle_since = self.now
        if pilot.phase == "running":
            self.open[pilot.block_id] = pilot

    def _walltime(self, pilot: Pilot) -> None:
        if pilot.phase == "ended":
            return
        for job in pilot.busy:  # cut by the walltime: its work is lost, it runs again
            started = self.running.pop(job) - self.trace.expected[job]
            self.lost_seconds += self.now - started
            self.killed += 1
            self._make_ready(job)
        pilot.busy.clear()
        pilot.phase, pilot.end = "ended", self.now
        self.open.pop(pilot.block_id, None)

    def run(self, strategy: Callable[[Sim], None]) -> dict:
        self.at(0.0, "tick")
        while self.done < len(self.trace):
            if not self.events:
                raise RuntimeError("simulation stalled: no events and work left")
            self.now, _, kind, data = heapq.heappop(self.events)
            if kind == "done":
                pilot, job = data  # type: ignore[misc]
                if job in pilot.busy:
                    self._finish(pilot, job)
            elif kind == "start":
                pilot = data  # type: ignore[assignment]
                if pilot.phase == "queued":
                    pilot.phase, pilot.started, pilot.idle_since = "running", self.now, self.now
                    order = int(pilot.block_id[1:])  # submission order, ties included
                    bisect.insort(self.waits, (pilot.submitted, order, self.now - pilot.submitted))
                    if self.config.walltime is not None:
                        pilot.ends = self.now + self.config.walltime
                        self.at(pilot.ends, "walltime", pilot)
                    self.open[pilot.block_id] = pilot
            elif kind == "walltime":
                self._walltime(data)  # type: ignore[arg-type]
            elif kind == "tick":
                strategy(self)
                self.peak_queued = max(self.peak_queued, len(self.live("queued")))
                self.at(self.now + self.config.tick, "tick")
            self._dispatch()
        return self._metrics()

    def _metrics(self) -> dict:
        allocated = 0.0
        for pilot in self.pilots.values():
            if pilot.started is not None:
                end = pilot.end if pilot.end is not None else self.now
                allocated += pilot.workers * (min(end, self.now) - pilot.started)
        idle = allocated - self.busy_seconds - self.lost_seconds
        return {"makespan": self.now, "allocated": allocated, "idle": idle,
                "lost": self.lost_seconds, "submitted": self.submitted,
                "peak_queued": self.peak_queued, "killed": self.killed}  # fmt: skip


class Elastic:
    """pilot's policy, fed what the driver knows and applied as the driver would."""

    def __init__(self, config: Config):
        self.limits = PoolLimits(
            min_blocks=0, max_blocks=config.nodes, workers=config.workers,
            walltime=config.walltime, idle_timeout=config.idle_timeout,
            max_queued=config.max_queued, queue_wait_default=config.queue_wait,
        )  # fmt: skip
        self.every = config.forecast_every
        self.next_forecast = 0.0
        self.soon: tuple = ()
        self.forecast_seconds: list[float] = []
        self.pending: list[int] = []

    def _forecast(self, sim: Sim) -> None:
        trace, state, now = sim.trace, sim.state, sim.now
        started = time.perf_counter()
        # Jobs still pending, in topological order: the list only shrinks.
        self.pending = [j for j in self.pending or range(len(trace)) if state[j] == 0]
        parents, expected = trace.parents, trace.expected
        pending = ((j, "pool", expected[j], [p for p in parents[j] if state[p] != 3])
                   for j in self.pending)  # fmt: skip
        views = forecast(
            now, running=((j, "pool", end) for j, end in sim.running.items()),
            ready=((j, "pool", trace.expected[j]) for j in sim.ready),
            pending=pending,  # type: ignore[arg-type]  # ints as job names
            horizon=2 * max(self.queue_wait(sim) or 0.0, self.limits.queue_wait_default),
            buckets=24,
        )  # fmt: skip
        self.forecast_seconds.append(time.perf_counter() - started)
        self.soon = views["pool"].soon if "pool" in views else ()

    @staticmethod
    def queue_wait(sim: Sim) -> float | None:
        """What the driver would measure: recent starts, and the pilots still queued."""
        recent = sim.waits[-RECENT_PILOTS:]
        if not recent:
            return None
        since = recent[0][:2]  # pilots submitted after the oldest of them, still queued
        queued = [sim.now - p.submitted for p in sim.live("queued")
                  if (p.submitted, int(p.block_id[1:])) > since]  # fmt: skip
        return queue_wait_estimate([wait for _, _, wait in recent], queued)

    def __call__(self, sim: Sim) -> None:
        now = sim.now
        if now >= self.next_forecast:
            self._forecast(sim)
            self.next_forecast = now + self.every
        running = sum(max(0.0, end - now) for end in sim.running.values())
        work = WorkView(
            ready=ReadyWork(tuple(sorted((r, n) for r, n in sim.ready_by_runtime.items() if n))),
            soon=tuple(s for s in self.soon if s.at > now),
            running=RunningWork(len(sim.running), running),
        )
        phases = {"queued": PilotPhase.QUEUED, "running": PilotPhase.RUNNING,
                  "draining": PilotPhase.DRAINING}  # fmt: skip
        views = tuple(
            PilotView(
                p.block_id,
                phases[p.phase],
                p.workers,
                len(p.busy),
                p.submitted,
                p.started,
                p.idle_since,
                p.ends,
            )  # fmt: skip
            for p in sim.pilots.values()
            if p.phase != "ended"
        )
        decision = decide(ScalingInput(now=now, work=work, pilots=views, limits=self.limits,
                                       queue_wait=self.queue_wait(sim)))  # fmt: skip
        for block in decision.drain:
            sim.drain(sim.pilots[block])
        for block in decision.release + decision.cancel:
            sim.release(sim.pilots[block])
        sim.submit(decision.submit)


class ParslAutoScale:
    """Parsl's ``htex_auto_scale`` strategy (parallelism 1), as in parsl/jobs/strategy.py."""

    def __init__(self, config: Config):
        self.max_blocks, self.workers = config.nodes, config.workers
        self.max_idletime = config.idle_timeout
        self.idle_since: float | None = None

    def __call__(self, sim: Sim) -> None:
        now = sim.now
        tasks = len(sim.ready) + len(sim.running)
        blocks = sim.live("queued", "running")
        slots = len(blocks) * self.workers
        if tasks and self.idle_since is not None:
            self.idle_since = None
        if tasks == 0:
            if blocks:
                if self.idle_since is None:
                    self.idle_since = now
                if now - self.idle_since > self.max_idletime:
                    for pilot in blocks:
                        if not pilot.busy:
                            sim.release(pilot)
        elif slots < tasks:
            if len(blocks) < self.max_blocks:
                excess = math.ceil((tasks - slots) / self.workers)
                sim.submit(min(excess, self.max_blocks - len(blocks)))
        elif slots > tasks:
            excess = min(math.floor((slots - tasks) / self.workers), len(blocks))
            idle = sorted((p for p in blocks if p.phase == "running" and not p.busy
                           and now - (p.idle_since or now) > self.max_idletime),
                          key=lambda p: p.idle_since or now)  # fmt: skip
            for pilot in idle[:excess]:
                sim.release(pilot)


def simulate(trace: Trace, config: Config, kind: str) -> dict:
    strategy: Callable[[Sim], None] = Elastic(config) if kind == "pilot" else ParslAutoScale(config)
    started = time.perf_counter()
    result = Sim(trace, config).run(strategy)
    result["wall"] = time.perf_counter() - started
    if isinstance(strategy, Elastic) and strategy.forecast_seconds:
        result["forecast_ms"] = 1000 * max(strategy.forecast_seconds)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = parser.add_argument
    add("--jobs", type=int, default=200_000, help="jobs in the replicated trace (200,000)")
    add("--width", type=int, default=20_000, help="jobs per wide level, phased workflow")
    add("--trace", default=DEFAULT_TRACE, help=f"WfInstances file in {TRACES}")
    add("--time-scale", type=float, default=1.0, help="divide the trace's runtimes by this")
    add("--nodes", type=int, default=1000, help="pilots at once, at most (max_blocks)")
    add("--workers", type=int, default=8, help="workers per pilot")
    add("--walltime", type=float, default=3600.0, help="pilot walltime, s (0: none)")
    add("--queue-wait", type=float, default=180.0, help="median queue wait of a pilot, s")
    add("--idle-timeout", type=float, default=120.0, help="idle_timeout / max_idletime, s")
    add(
        "--max-queued",
        default="100,1000",
        help="pilot's backlog bound; a comma-separated list runs one row each (100,1000)",
    )
    add("--tick", type=float, default=10.0, help="seconds between strategy calls")
    add("--forecast-every", type=float, default=60.0, help="seconds between forecasts")
    add("--seed", type=int, default=1)
    add("--only", choices=["phased", "trace"], help="run one workflow")
    args = parser.parse_args(argv)
    backlogs = [int(value) for value in args.max_queued.split(",")]
    config = Config(
        nodes=args.nodes, workers=args.workers, walltime=args.walltime or None,
        queue_wait=args.queue_wait, idle_timeout=args.idle_timeout, max_queued=backlogs[0],
        tick=args.tick, forecast_every=args.forecast_every, seed=args.seed,
    )  # fmt: skip
    rng = random.Random(args.seed)
    traces = []
    if args.only in (None, "phased"):
        traces.append(phased(args.width, rng))
    if args.only in (None, "trace"):
        path = TRACES / args.trace
        traces.append(replicated(path, args.jobs, args.time_scale) if path.is_file()
                      else synthetic(args.jobs, rng))  # fmt: skip

    from rich.console import Console
    from rich.table import Table

    walltime = f"{args.walltime:g} s" if args.walltime else "none"
    table = Table(title=f"Elastic scaling, simulated: {args.nodes} nodes x {args.workers} "
                  f"workers, median queue wait {args.queue_wait:g} s, walltime {walltime}, "
                  f"idle timeout {args.idle_timeout:g} s")  # fmt: skip
    columns = ("workflow", "strategy", "waste core-h", "waste %", "killed", "lost core-h",
               "makespan s", "pilots", "peak queued", "sim s")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    contenders = [("pilot", backlog) for backlog in backlogs] + [("parsl", None)]
    notes = []
    for trace in traces:
        for i, (kind, backlog) in enumerate(contenders):
            run_config = replace(config, max_queued=backlog or config.max_queued)
            r = simulate(trace, run_config, kind)
            waste = r["idle"] + r["lost"]
            name = f"pilot, max_queued {backlog}" if kind == "pilot" else "parsl htex_auto_scale"
            table.add_row(
                trace.name if i == 0 else "", name, f"{waste / 3600:,.1f}",
                f"{100 * waste / r['allocated']:.1f}" if r["allocated"] else "-",
                f"{r['killed']:,}", f"{r['lost'] / 3600:,.1f}", f"{r['makespan']:,.0f}",
                f"{r['submitted']:,}", f"{r['peak_queued']:,}", f"{r['wall']:.1f}",
            )  # fmt: skip
            if i == 0 and "forecast_ms" in r:
                notes.append(f"{trace.name}: slowest forecast call {r['forecast_ms']:.0f} ms")
        table.add_section()
    console = Console(width=max(Console().width, 150))
    console.print(table)
    bound = [f"{t.name}: lower bound on makespan {lower_bound(t, config):,.0f} s" for t in traces]
    for note in notes + bound:
        console.print(note)


def lower_bound(trace: Trace, config: Config) -> float:
    """No schedule beats the longest chain, nor all the work on every worker at once."""
    finish = [0.0] * len(trace)
    for job, parents in enumerate(trace.parents):  # parents come first
        finish[job] = trace.runtime[job] + max((finish[p] for p in parents), default=0.0)
    return max(max(finish), sum(trace.runtime) / (config.nodes * config.workers))


if __name__ == "__main__":
    main()
