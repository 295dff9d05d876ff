"""The run loop: hand ready jobs to Parsl, collect outcomes, retry, block, cancel.

This is the only module that talks to the Parsl DataFlowKernel. The driver keeps the
ready queue itself (:class:`executor.policy.schedule.Schedule`) and gives Parsl a bounded
number of jobs at a time, so a 200,000-job graph never becomes 200,000 futures.
Every state change is committed to the store before it is shown to anyone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from executor.driver.bundles import BundlesInFlight
from executor.driver.context import RunContext, job_spec
from executor.driver.delivery import code_never_arrived, plan_delivery
from executor.driver.elastic import ElasticScaler
from executor.driver.parsl_session import ParslSession, outcomes_of, worker_lost
from executor.driver.pilots import PilotTracker
from executor.driver.settling import Settler
from executor.driver.shown import ShownStates
from executor.driver.start_locally import LocalStart
from executor.driver.work_forecast import WorkForecast
from executor.errors import SiteError
from executor.model.graph import JobGraph
from executor.model.states import FailureClass, JobState, RunState
from executor.policy.crashes import (
    BYSTANDER_DETAIL,
    SUSPECT_DETAIL,
    LostBundle,
    triage_lost_bundle,
)
from executor.policy.packing import (
    PackingPolicy,
    RuntimeEstimates,
    bundle_slots,
    free_room,
    most_that_fit,
    plan_submission,
)
from executor.policy.pools import PoolConfig, misfit_message, select_pool
from executor.policy.run_end import final_run_state
from executor.policy.schedule import Schedule
from executor.sites.base import SiteConfig
from executor.store.queries import HEARTBEAT_INTERVAL, running_attempts
from executor.store.recorder import RunRecorder, lose_running_attempts
from executor.worker.outcome import LoggedOutcome, StartRecord, failed, is_start
from executor.worker.outcome_log import OutcomeReader
from executor.worker.spec import JobSpec

logger = logging.getLogger(__name__)

# How long a cancel waits for running jobs to report that they stopped.
CANCEL_GRACE_SECONDS = 8.0
# How long Parsl's own shutdown may take before the driver kills its processes itself.
PARSL_SHUTDOWN_SECONDS = 30.0
# How often, while bundles run, the driver reads the jobs that finished inside them.
OUTCOME_POLL_SECONDS = 0.5
REATTACHED = "reattached after a restart: its task was still out on the site"


Progress = Callable[[dict[str, dict[str, int]]], None]


class Driver:
    """Runs one run of a graph on a site until every job is final, or it is cancelled.

    Use as a context manager: entering starts Parsl and the first pilots, leaving
    stops them, whatever happened in between.

    Parameters
    ----------
    graph, site, context
        What to run, where, and the run's directories.
    recorder
        The store writer for this run.
    attempts_so_far
        Attempts each job already had (a restart continues the numbering).
    estimates
        Mean runtime per label measured by earlier runs of the workflow (and by this
        run before a restart), so packing starts from the first submission.
    done_per_label
        Succeeded jobs per label that are not in ``graph`` (a restart rebuilds only
        the unfinished part), for the progress counts.
    session
        Parsl, already started (a restart starts it before loading its graph).
    on_progress
        Called with per-label state counts after each batch of changes is committed.
    """

    def __init__(
        self,
        graph: JobGraph,
        site: SiteConfig,
        context: RunContext,
        recorder: RunRecorder,
        *,
        attempts_so_far: dict[str, int] | None = None,
        on_progress: Progress | None = None,
        estimates: dict[str, float] | None = None,
        done_per_label: dict[str, int] | None = None,
        session: ParslSession | None = None,
    ):
        self.graph = graph
        self.site = site
        self.context = context
        self.recorder = recorder
        self.schedule = Schedule(graph)
        self.on_progress = on_progress
        self._attempts = dict(attempts_so_far or {})
        self._in_flight: dict[str, tuple[int, str]] = {}  # job -> (attempt, pool) in Parsl
        self._estimates = RuntimeEstimates(estimates)
        self._packing = PackingPolicy(
            target_seconds=site.packing_target, max_jobs=site.packing_max_jobs
        )
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        delivery, runtime_package = plan_delivery(site, context.shipment, context.run_dir)
        self._bundles = BundlesInFlight(
            [p.name for p in site.pools], self._done, delivery, runtime_package
        )
        # Jobs that finished inside bundles still running (on a shared filesystem). What a
        # previous driver of this run left there was read by the restart: skip it.
        self._outcomes = OutcomeReader(context.run_dir) if site.shared_filesystem else None
        if self._outcomes is not None:
            self._outcomes.read_new()
        self._cancel = threading.Event()
        # Bundles each pool may hold at once (the packing policy's bundle slots).
        self._capacity = {p.name: bundle_slots(site.workers(p), p.max_blocks) for p in site.pools}
        self._waiting = dict.fromkeys(self._capacity, 0)  # ready, turned down for room
        self._pool_of_shape: dict[tuple[int, int | None], PoolConfig] = {}  # (cores, memory)
        # What the store says, and so what progress shows: every unfinished job is
        # pending until run() records the initially ready ones.
        self._shown = ShownStates(graph, self.schedule.state, done_per_label)
        self._settler = Settler(
            graph, self.schedule, recorder, site.pools, self._estimates, self._record,
            self._cancel.is_set, self.request_cancel,
        )  # fmt: skip
        self.counts = self._shown.counts
        self._session = session  # Parsl, if the caller started it already
        self._dfk: Any = None
        self._executors: dict[str, Any] = {}
        self._pilots: PilotTracker | None = None
        self._scaler: ElasticScaler | None = None
        self._local_start: LocalStart | None = None  # start_locally's workers, while used
        self._work = WorkForecast(
            graph, self.schedule.state, self._bundles, self._estimates.as_mapping,
            lambda name: self._pool_for(name).name, horizon=site.forecast_horizon(),
            # Without an outcome log no start is seen: count sent jobs as started.
            started=lambda name: self._outcomes is None or self._shown.started(name),
        )  # fmt: skip

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> Driver:
        if self.context.cancel_marker.exists():
            self.context.cancel_marker.unlink()
        self._start_parsl()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_parsl()
        if self._pilots is not None:
            self._pilots.poll(final=True)  # how each pilot ended, after Parsl cancelled it

    def _start_parsl(self) -> None:
        if self._session is None:
            self._session = ParslSession(self.site, self.context.run_dir, PARSL_SHUTDOWN_SECONDS)
        if self._session.dfk is None:
            self._session.start()
        self._dfk = self._session.dfk
        self._executors = self._session.executors
        self._bundles.connect(self._session.apps)
        self._pilots = PilotTracker(
            self.recorder.store, self.context.run_id, list(self._executors.values())
        )
        self._pilots.poll()
        self._scaler = ElasticScaler(self.site, self._executors, self._pilots)
        if self.site.start_locally:
            self._local_start = LocalStart(self.site, self._executors, self._bundles.load_via)

    def _stop_parsl(self) -> None:
        """Stop Parsl and every pilot (see :func:`executor.driver.parsl_session.stop_parsl`)."""
        if self._session is not None:
            self._session.stop()
        self._dfk = None

    def _parsl_broken(self) -> bool:
        return self._session is not None and self._session.broken()

    def check_parsl(self) -> None:
        """Raise :class:`SiteError` if a pool can no longer run anything."""
        if self._session is not None:
            self._session.check()

    # -- the loop -------------------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        """Ask the loop to stop: safe from signal handlers and other threads."""
        self._cancel.set()
        self._done.put(None)  # wake the loop; SimpleQueue.put is safe in a signal handler

    def run(self) -> RunState:
        """Run to the end; return the run's final state (also recorded in the store)."""
        logger.info(
            "run %s: %d job(s) to run on site %r (pools: %s)", self.context.run_id,
            len(self.graph), self.site.name, ", ".join(p.name for p in self.site.pools),
        )  # fmt: skip
        self._adopt_left_running()
        for name in self.schedule.initially_ready():
            self._record(name, JobState.READY)
        last_heartbeat = time.monotonic()
        while not self.schedule.finished and not self._cancel.is_set():
            self._submit_ready()
            # The first bundles reach Parsl before this first commit (tens of thousands
            # of ready jobs after a restart take a while to write): workers start sooner.
            self._commit()
            if self._scaler is not None:  # pilots up and down with the work (elastic.py)
                demand = {
                    pool: load + self._waiting[pool] for pool, load in self._bundles.load.items()
                }
                self._scaler.step(self._work.views, demand)
                if self._local_start is not None:
                    self._local_start.step()
            if self._pilots is not None:
                self._pilots.poll()
            self._collect(timeout=OUTCOME_POLL_SECONDS if self._bundles else HEARTBEAT_INTERVAL)
            self._commit()
            if self.context.cancel_marker.exists():  # `pilot cancel` from another host
                self.request_cancel()
            self.check_parsl()
            if time.monotonic() - last_heartbeat > HEARTBEAT_INTERVAL / 2:
                self.recorder.heartbeat()
                last_heartbeat = time.monotonic()
        if self._cancel.is_set() and not self.schedule.finished:
            self._stop_everything()
        final = final_run_state(
            self.schedule.state, aborted=self._settler.abort is not None,
            cancel_requested=self._cancel.is_set(),
        )  # fmt: skip
        self.recorder.run_state(final, message=self._settler.abort)
        self._report_progress()
        abort = f": {self._settler.abort}" if self._settler.abort else ""
        logger.info("run %s ended %s%s", self.context.run_id, final, abort)
        return final

    def _adopt_left_running(self) -> None:
        """After a restart, take over the bundles a dead driver left running on the site
        (Globus Compute tasks), instead of running their jobs again; those that finished
        meanwhile return at once. Attempts the site kept for this and no task holds
        any more are lost (they run again)."""
        adoptable = {
            pool: reattach
            for pool, executor in self._executors.items()
            if (reattach := getattr(executor, "reattach", None)) is not None
        }
        if not adoptable:
            return
        # Only attempts the restart kept running: not one a cancel already recorded.
        running = running_attempts(self.recorder.store, self.context.run_id)
        adopted: list[tuple[str, int]] = []
        for pool, reattach in adoptable.items():
            for members, future in reattach():
                ours = [(n, a) for n, a in members if (n, a) in running]
                taken = set(self.schedule.take(name for name, _ in ours))
                members = [(n, a) for n, a in ours if n in taken]
                if not members:
                    continue
                specs = []
                for name, attempt in members:
                    self._in_flight[name] = (attempt, pool)
                    self._record(name, JobState.READY)  # the store has it pending
                    self._record(name, JobState.RUNNING, attempts=attempt, detail=REATTACHED)
                    specs.append(job_spec(
                        self.graph[name], self.context, attempt,
                        self._settler.memory(name) or self.site.pool(pool).memory,
                        self.site.memory_tolerance, shared_filesystem=self.site.shared_filesystem,
                    ))  # fmt: skip
                self._bundles.adopt(pool, members, specs, future)
                adopted += members
        lost = lose_running_attempts(
            self.recorder.store, self.context.run_id, keep=adopted,
            message="the driver stopped before this attempt reported back, and its task "
            "was not found on the site after the restart",
        )  # fmt: skip
        if adopted or lost:
            logger.info(
                "run %s: reattached to %d job(s) still out on the site; %d lost",
                self.context.run_id, len(adopted), lost,
            )  # fmt: skip

    def _pool_for(self, name: str) -> PoolConfig:
        job = self.graph[name]
        memory = self._settler.memory(name)
        shape = (job.cores, memory)
        pool = self._pool_of_shape.get(shape)
        if pool is None:
            pool = select_pool(self.site.pools, job.cores, memory)
            if pool is None:  # validated at submit; escalation checks before retrying
                raise SiteError(misfit_message(name, job.cores, memory, self.site.pools))
            self._pool_of_shape[shape] = pool
        return pool

    def _submit_ready(self) -> None:
        """Hand Parsl the bundles the packing policy plans for the ready jobs; requeue the rest."""
        if not self.schedule.ready_count or not any(
            free_room(self._capacity, self._bundles.load).values()
        ):
            return
        clustering = self.graph.clustering
        cluster_max = clustering.max_size if clustering is not None else None
        count = self.schedule.ready_count
        # With one pool, jobs beyond what the free slots can take this round stay in the
        # queue: taking all of thousands out and back at every round was, with many small
        # jobs, the driver's largest cost per job. With several, any job may fit its own.
        limit = count
        if len(self._capacity) == 1:
            fit = most_that_fit(self._capacity, self._bundles.load, self._packing, cluster_max)
            limit = min(count, fit)
        ready = []  # ReadyJob fields, as plain tuples: thousands of them a round
        alone = []
        for name in self.schedule.pop_ready(limit):
            job = self.graph[name]
            if name in self._settler.alone:
                alone.append((name, self._pool_for(name)))
                continue
            key = clustering.key(job) if clustering is not None else None
            ready.append((name, job.label, self._pool_for(name).name, key))
        # A crash suspect takes a bundle of its own (crashes.py), before anything else.
        room, left = free_room(self._capacity, self._bundles.load), []
        for name, own_pool in alone:
            if room[own_pool.name] > 0:
                room[own_pool.name] -= 1
                self._submit_bundle(own_pool, [name])
            else:
                left.append(name)
        self.schedule.put_back(left)
        plan = plan_submission(
            ready, slots=self._capacity, in_flight=self._bundles.load,
            estimates=self._estimates.as_mapping(), policy=self._packing,
            cluster_max=cluster_max, unseen=count - limit,
        )  # fmt: skip
        self._waiting = plan.waiting
        for pool, bundles in plan.bundles.items():
            for bundle in bundles:
                self._submit_bundle(self.site.pool(pool), bundle)
        self.schedule.put_back(plan.put_back)

    def _submit_bundle(self, pool: PoolConfig, names: list[str]) -> None:
        specs, members = [], []
        now = time.time()
        for name in names:
            attempt = self._attempts.get(name, 0) + 1
            self._attempts[name] = attempt
            self._in_flight[name] = (attempt, pool.name)
            members.append((name, attempt))
            self._record(name, JobState.RUNNING, attempts=attempt)
            memory = self._settler.memory(name) or pool.memory
            spec = job_spec(
                self.graph[name], self.context, attempt, memory, self.site.memory_tolerance,
                shared_filesystem=self.site.shared_filesystem,
            )  # fmt: skip
            spec["in_process"] = spec["in_process"] and name not in self._settler.alone
            self.recorder.attempt_submitted(
                name, attempt, now, pool=pool.name, memory=memory,
                stdout=spec["stdout"], stderr=spec["stderr"],
            )  # fmt: skip
            specs.append(spec)
        via = self._local_start.route(pool) if self._local_start is not None else ""
        self._bundles.send(pool.name, members, specs, via=via)

    def _collect(self, timeout: float) -> None:
        """Wait for a finished bundle (or a wake-up, or ``timeout``), then settle every job
        that finished since: those of finished bundles and those recorded inside running ones.
        """
        finished = []
        try:
            item = self._done.get(timeout=timeout)
            while True:
                if item is not None:
                    finished.append(item)
                item = self._done.get_nowait()
        except queue.Empty:
            pass
        # Read after taking the bundles: a worker records each job before its bundle
        # returns (or its pilot is lost), so a bundle-level failure never hides a job's
        # own outcome.
        if self._outcomes is not None:
            for record in self._outcomes.read_new():
                if is_start(record):
                    self._started(record)
                else:
                    self._settle_recorded(cast(LoggedOutcome, record))
        for bundle_id, future in finished:
            self._settle(bundle_id, future)

    def _started(self, record: StartRecord) -> None:
        """Record that an attempt started on a worker: its job shows running, not queued."""
        name, attempt = record["job"], record["attempt"]
        if self._in_flight.get(name, (None,))[0] == attempt and self._shown.start(name):
            self.recorder.attempt_started(name, attempt, record)

    def _settle_recorded(self, record: LoggedOutcome) -> None:
        """Settle a job that finished inside a bundle that is still running.

        A job killed by a signal its worker did not send waits for its bundle: the
        signal may be its pilot ending (Slurm signals every process of a job that
        reaches its walltime or is cancelled), and then the job is ``pilot_lost``,
        not failed. If the bundle returns, its result carries the same outcome.
        """
        name, attempt = record["job"], record["attempt"]
        if record["failure_class"] == FailureClass.SIGNAL.value:
            return
        if self._in_flight.get(name, (None,))[0] == attempt:
            del self._in_flight[name]
            self._settler.settle(name, attempt, record)

    def _settle(self, bundle_id: int, future: Any) -> None:
        """Record each job of a finished bundle on its own."""
        bundle = self._bundles.get(bundle_id)
        if bundle is None:
            return  # already given up on during a cancel
        members, specs = bundle.members, bundle.specs
        outcomes = outcomes_of(future, len(members))
        if isinstance(outcomes, dict):  # the node lacks shipped code: send it, same attempts
            missing = outcomes["code_missing"]
            # Cancelling: nothing is sent again, and its jobs end cancelled.
            if self._cancel.is_set() or self._bundles.resend_for_code(bundle_id, missing):
                return
            outcomes = [code_never_arrived(missing) for _ in members]
        self._bundles.finish(bundle_id)
        # Only a lost worker needs triage: the common case costs one check, no list.
        lost = self._triage(members, specs) if worker_lost(future) else LostBundle()
        for (name, attempt), outcome in zip(members, outcomes, strict=True):
            if self._in_flight.get(name, (None,))[0] == attempt:
                del self._in_flight[name]
                if name in lost.suspects:
                    self._settler.alone.add(name)
                    self._settler.settle(name, attempt, outcome, uncounted=SUSPECT_DETAIL)
                elif name in lost.bystanders:
                    self._settler.settle(name, attempt, outcome, uncounted=BYSTANDER_DETAIL)
                else:
                    self._settler.settle(name, attempt, outcome)

    def _triage(self, members: list[tuple[str, int]], specs: list[JobSpec]) -> LostBundle:
        """Which jobs of a bundle whose worker died may have killed it (crashes.py)."""
        unreported = [n for n, a in members if self._in_flight.get(n, (None,))[0] == a]
        in_worker = {spec["job"] for spec in specs if spec.get("in_process")}
        return triage_lost_bundle(
            unreported, worker_lost=True, in_worker=in_worker.__contains__,
            started=self._shown.started if self._outcomes is not None else None,
        )  # fmt: skip

    def _stop_everything(self) -> None:
        """Cancel: start nothing new, stop running jobs, record what happened to each."""
        for name in self.schedule.cancel_unstarted():
            self._record(name, JobState.CANCELLED)
        self.context.cancel_marker.touch()
        note = self.site.cancel_note()  # a site that cannot stop running jobs: no wait
        deadline = time.monotonic() + (0 if note else CANCEL_GRACE_SECONDS)
        while self._in_flight and time.monotonic() < deadline and not self._parsl_broken():
            self._collect(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
        self._bundles.forget_all()
        why = note or "the worker did not report back in time"
        for name, (attempt, _) in list(self._in_flight.items()):
            del self._in_flight[name]
            unreported = failed(FailureClass.CANCELLED.value, f"the run was cancelled; {why}")
            self.recorder.attempt_finished(name, attempt, unreported)
            self.schedule.cancel(name)
            self._record(name, JobState.CANCELLED)
        self._commit()

    # -- bookkeeping ----------------------------------------------------------------
    def _record(
        self, name: str, state: JobState, *, detail: str | None = None, attempts: int | None = None
    ) -> None:
        self._shown.move(name, state)
        self.recorder.job_state(name, state, detail=detail, attempts=attempts)

    def _commit(self) -> None:
        if self.recorder.pending:
            self.recorder.flush()
            self._report_progress()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress({label: dict(c) for label, c in self.counts.items()})
