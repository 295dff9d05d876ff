"""One pool's Parsl executor on Globus Compute: bundles to endpoints, logs back.

A subclass of Parsl's ``GlobusComputeExecutor`` (so the DataFlowKernel drives it like
any executor) over one or several SDK ``Executor`` objects, one per endpoint:

- **Routing.** Each bundle goes to an endpoint chosen by smooth weighted round robin
  among those in the rotation. An endpoint whose status has not been ``online`` for
  ``offline_after`` seconds leaves the rotation and its bundles still out are sent
  again to the others (a late result of the first copy is ignored); it rejoins once
  online. With no endpoint left, the pool goes into Parsl's bad state, which the
  driver reports (the run stops; ``pilot restart`` reattaches later).
- **What is sent.** A pilot bundle call is wrapped in the source of
  :mod:`executor.sites.globus_remote`, run by ``eval``: only the built-in ``eval`` is
  pickled by reference, so neither pilot nor Parsl must match on the endpoint. A task
  over the service's limit fails here, with a message, never as an HTTP 413 in the
  SDK's submitter thread (which stops for good); the limit holds per request too, so a
  task goes through the SDK executor whose batch size its size allows.
- **What comes back.** Each job's log tails come back in its outcome and are written to
  the run directory here, at the paths ``pilot logs`` reads.
- **Journal.** Each task id is appended with its endpoint, task group and jobs to
  ``globus-tasks.jsonl`` (beside Parsl's run directories), and marked when its result
  arrives: :meth:`PilotGlobusExecutor.reattach` reloads what a crashed driver left.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsl.executors import GlobusComputeExecutor

from executor.errors import SiteError
from executor.sites import globus_remote
from executor.sites.globus_journal import JOURNAL, unfinished_by_group

logger = logging.getLogger(__name__)

# The first line of a log whose head was cut on the endpoint.
CUT_NOTE = (
    "[pilot: {cut} earlier bytes of this log were cut on the endpoint; the last {kept} are kept]\n"
)
#: What a cancel means here (the service cannot stop a task that has started).
CANCEL_NOTE = (
    "Globus Compute cannot stop tasks already running: they finish on the endpoint, "
    "and their results are ignored"
)
# The SDK coalesces up to `batch_size` queued tasks into one request, and the service's
# limit holds for each request too: tasks go through the SDK executor whose batch of
# tasks their size fills at most this much of the limit (batches of 128, 64, ... 1).
REQUEST_FILL = 0.9
MAX_BATCH = 128
# A task whose SDK executor failed to send it is sent again, at most this often.
SEND_ATTEMPTS = 3
TICK_SECONDS = 0.5


@dataclass
class Endpoint:
    """One endpoint as a pool uses it: an SDK executor per batch size, made as needed."""

    endpoint_id: str
    weight: float
    sdk: Any  # globus_compute_sdk.Executor, batches of MAX_BATCH (the SDK's default)
    make: Callable[..., Any]  # another SDK executor for it (batch_size, task_group_id)
    by_batch: dict[int, Any] = field(default_factory=dict)
    in_rotation: bool = True
    last_seen: float = field(default_factory=time.monotonic)
    credit: float = 0.0

    def executor_for(self, size: int, limit: int) -> Any:
        """The SDK executor whose requests of this many tasks stay under ``limit``."""
        batch = MAX_BATCH
        while batch > 1 and batch * size > limit * REQUEST_FILL:
            batch //= 2
        if batch == MAX_BATCH:
            return self.sdk
        if batch not in self.by_batch:
            group = self.sdk.task_group_id
            self.by_batch[batch] = self.make(batch_size=batch, task_group_id=group)
        return self.by_batch[batch]

    def executors(self) -> list[Any]:
        return [self.sdk, *self.by_batch.values()]

    def renew(self) -> None:
        """Fresh SDK executors, in the same task group, for ones that stopped."""
        group = self.sdk.task_group_id
        for stale in self.executors():
            # Not its result watcher: the task group's, which watches the others' tasks too.
            stale.shutdown(wait=False, cancel_futures=True)
        self.sdk = self.make(task_group_id=group)
        self.by_batch = {}

    @property
    def stopped(self) -> bool:
        """Whether an SDK executor of this endpoint stopped (its submitter thread died)."""
        return any(getattr(e, "_stopped", False) for e in self.executors())


@dataclass
class _Task:
    function: Any
    args: tuple
    kwargs: dict
    size: int
    outer: Future
    members: list[tuple[str, int]]
    endpoint: Endpoint | None = None
    inner: Any = None
    journaled: Any = None  # the inner future whose task id the journal holds
    sends: int = 0
    via: Any = None  # the SDK executor of the latest send


class PilotGlobusExecutor(GlobusComputeExecutor):
    """A pool's executor over its endpoints (see the module's docstring).

    Parameters
    ----------
    endpoints, label
        The pool's endpoints (weights, SDK executors), and its name.
    remote_options
        What :func:`executor.sites.globus_remote.run_remote` is told (scratch dir,
        log tail, result budget); ``runtime`` is set from each call.
    payload_limit
        Bytes one serialized task may take (the service's limit).
    check_interval, offline_after
        Seconds between endpoint status checks, and without ``online`` before an
        endpoint leaves the rotation.
    """

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        label: str,
        remote_options: dict[str, Any],
        payload_limit: int,
        check_interval: float = 30.0,
        offline_after: float = 300.0,
    ):
        super().__init__(executor=endpoints[0].sdk, label=label)
        self.endpoints = endpoints
        self.remote_options = dict(remote_options)
        self.payload_limit = payload_limit
        self.check_interval = check_interval
        self.offline_after = offline_after
        self._lock = threading.RLock()
        self._tasks: list[_Task] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._last_check = 0.0
        self.bad_state_is_set = False
        self.executor_exception: Exception | None = None

    # -- what pilot's scaling asks of an executor: an endpoint has no blocks ---------
    @property
    def status_facade(self) -> dict:
        return {}

    def scale_out_facade(self, blocks: int) -> list[str]:
        return []

    def connected_managers(self) -> list[dict[str, Any]]:
        return []

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name=f"globus-{self.label}")
        self._watcher.daemon = True
        self._watcher.start()

    def shutdown(self) -> None:
        """Stop sending; bundles still out are cancelled here and finish on the endpoint."""
        self._stopping.set()
        self._journal_new_ids()  # a cancel stops at once: journal what is out, for a restart
        with self._lock:
            for task in self._tasks:
                task.outer.cancel()
            self._tasks.clear()
        for endpoint in self.endpoints:
            for sdk in endpoint.executors():
                stop_sdk_executor(sdk)
        if self._watcher is not None:
            self._watcher.join(timeout=10)

    @property
    def journal(self) -> Path | None:
        """Beside Parsl's numbered run directories, so each restart of a run finds it."""
        run_dir = getattr(self, "run_dir", None)
        return Path(run_dir).parent / JOURNAL if run_dir and run_dir != "." else None

    # -- sending ---------------------------------------------------------------------
    def submit(self, func: Callable, resource_specification: dict, *args: Any, **kwargs: Any):
        """Send one task; the future's result is the bundle's outcomes, logs stored."""
        function, args, kwargs, members = self._remote_call(func, args, kwargs)
        outer: Future = Future()
        size = self._serialized_size(args, kwargs)
        if size > self.payload_limit:
            outer.set_exception(
                SiteError(
                    f"pool {self.label!r}: a bundle of {len(members)} job(s) is {size} bytes "
                    f"serialized, over Globus Compute's limit of {self.payload_limit} bytes "
                    "per task; lower packing_max_jobs in the site file, or pass large "
                    "inputs as files"
                )
            )
            return outer
        task = _Task(function, args, kwargs, size, outer, members)
        with self._lock:
            self._tasks.append(task)
            self._send(task)
        return outer

    def _remote_call(self, func: Callable, args: tuple, kwargs: dict):
        """A pilot bundle as a call of ``eval`` wrapped in globus_remote; others unchanged."""
        from executor.worker.bundle import run_bundle

        inner = getattr(func, "__wrapped__", func)  # under Parsl's wrap_error
        if inner is eval and len(args) == 2 and isinstance(args[1], dict) and "specs" in args[1]:
            call, runtime = dict(args[1]), True
        elif inner is run_bundle:
            call = {"specs": args[0], "code": args[1] if len(args) > 1 else None}
            runtime = False
        else:
            return func, args, kwargs, []
        options = {**self.remote_options, "runtime": runtime}
        namespace = {"source": _remote_source(), "space": {}, "call": call, "options": options}
        members = [(spec["job"], spec["attempt"]) for spec in call["specs"]]
        return eval, (globus_remote.RUN, namespace), {}, members

    def _serialized_size(self, args: tuple, kwargs: dict) -> int:
        serializer = self.endpoints[0].sdk.serializer
        return len(serializer.serialize(args)) + len(serializer.serialize(kwargs))

    def _pick(self, exclude: Endpoint | None = None) -> Endpoint | None:
        """Smooth weighted round robin over the endpoints in the rotation."""
        candidates = [e for e in self.endpoints if e.in_rotation and e is not exclude]
        if not candidates:
            return None
        total = sum(e.weight for e in candidates)
        for endpoint in candidates:
            endpoint.credit += endpoint.weight
        chosen = max(candidates, key=lambda e: e.credit)
        chosen.credit -= total
        return chosen

    def _send(self, task: _Task, exclude: Endpoint | None = None) -> bool:
        endpoint = self._pick(exclude)
        if endpoint is None:
            return False
        task.sends += 1
        try:
            via = endpoint.executor_for(task.size, self.payload_limit)
            inner = via.submit(task.function, *task.args, **task.kwargs)
        except RuntimeError as exc:  # this SDK executor stopped: its submitter thread died
            if task.sends < SEND_ATTEMPTS:
                endpoint.renew()
                return self._send(task)
            self._out_of_rotation(endpoint, f"its SDK executor stopped ({exc})")
            return False
        task.endpoint, task.inner, task.via = endpoint, inner, via
        inner.add_done_callback(lambda f, t=task: self._landed(t, f))
        return True

    # -- results ---------------------------------------------------------------------
    def _landed(self, task: _Task, inner: Any) -> None:
        with self._lock:
            if task.inner is not inner or task.outer.done():
                return  # a copy sent elsewhere since, or cancelled: ignore this result
            if inner.cancelled() and self._stopping.is_set():
                return
            # Cancelled by the SDK (its executor stopped with the task queued), or failed
            # to be sent (the request failed, not the task): the SDK executor that had it
            # stops for good (its submitter thread dies), so send it again through new ones.
            error = None if inner.cancelled() else inner.exception()
            lost = inner.cancelled() or (error is not None and _transient(error))
            if lost and task.sends < SEND_ATTEMPTS:
                why = error or "the SDK cancelled it"
                logger.warning("pool %s: sending a bundle again after %r", self.label, why)
                if task.endpoint is not None and task.via in task.endpoint.executors():
                    task.endpoint.renew()
                if self._send(task):
                    return
            if inner.cancelled():
                error = SiteError(f"pool {self.label!r}: the SDK kept cancelling a bundle")
            self._tasks.remove(task)
            sent = self._sent_record(task) if task.journaled is not inner else None
        if sent is not None:  # it came back before the watcher's next look
            self._journal(sent)
        self._journal({"event": "done", "task_id": getattr(inner, "task_id", None)})
        if error is not None:
            task.outer.set_exception(error)
            return
        result = inner.result()
        try:
            if isinstance(result, list):
                store_logs(result)
        except OSError as exc:  # the run directory is the driver's own: report, never lose
            logger.error("pool %s: could not store the logs of a bundle: %s", self.label, exc)
        task.outer.set_result(result)

    # -- the watcher: task ids to the journal, endpoints in and out of the rotation ----
    def _watch(self) -> None:
        while not self._stopping.wait(TICK_SECONDS):
            try:
                self._journal_new_ids()
                if time.monotonic() - self._last_check >= self.check_interval:
                    self._last_check = time.monotonic()
                    self._check_endpoints()
            except Exception:  # the boundary with the SDK: keep watching
                logger.exception("pool %s: checking endpoints failed", self.label)

    def _journal_new_ids(self) -> None:
        with self._lock:
            fresh = [t for t in self._tasks if t.inner is not None and t.journaled is not t.inner]
            records = [record for record in map(self._sent_record, fresh) if record]
        for record in records:
            self._journal(record)

    def _sent_record(self, task: _Task) -> dict[str, Any] | None:
        """The journal's line for the task's latest send, once the service named it."""
        task_id = getattr(task.inner, "task_id", None)
        if not task_id or task.endpoint is None:
            return None
        task.journaled = task.inner
        group = task.inner._metadata.get("task_group_uuid")
        return {
            "event": "sent", "task_id": str(task_id), "pool": self.label,
            "endpoint_id": task.endpoint.endpoint_id,
            "task_group_id": str(group) if group else None,
            "members": task.members, "time": time.time(),
        }  # fmt: skip

    def _check_endpoints(self) -> None:
        now = time.monotonic()
        for endpoint in self.endpoints:
            if _online(endpoint):
                endpoint.last_seen = now
                if not endpoint.in_rotation:
                    if endpoint.stopped:
                        endpoint.renew()
                    logger.warning(
                        "pool %s: endpoint %s answers again: back in the rotation",
                        self.label, endpoint.endpoint_id,
                    )  # fmt: skip
                    endpoint.in_rotation = True
                    self.bad_state_is_set, self.executor_exception = False, None
            elif endpoint.in_rotation and now - endpoint.last_seen > self.offline_after:
                self._out_of_rotation(
                    endpoint, f"it has not been online for {now - endpoint.last_seen:.0f}s"
                )

    def _out_of_rotation(self, endpoint: Endpoint, why: str) -> None:
        with self._lock:
            endpoint.in_rotation = False
            stranded = [t for t in self._tasks if t.endpoint is endpoint]
            logger.warning(
                "pool %s: endpoint %s leaves the rotation: %s; %d bundle(s) sent to it go "
                "to the other endpoints", self.label, endpoint.endpoint_id, why, len(stranded),
            )  # fmt: skip
            if not any(e.in_rotation for e in self.endpoints):
                ids = ", ".join(e.endpoint_id for e in self.endpoints)
                self.executor_exception = SiteError(
                    f"no Globus Compute endpoint of pool {self.label!r} answers ({ids}; the "
                    f"last: {why}); check the endpoints (`globus-compute-endpoint list` on "
                    "their hosts), then `pilot restart` the run to reattach to its tasks"
                )
                self.bad_state_is_set = True
                return
            for task in stranded:
                self._send(task, exclude=endpoint)

    # -- restart -----------------------------------------------------------------------
    def reattach(self) -> list[tuple[list[tuple[str, int]], Future]]:
        """Futures of the tasks a previous driver of this run left unfinished.

        Each is ``(members, future)``: the bundle's ``(job, attempt)`` pairs and a future
        of its outcomes (logs stored when they arrive), as :meth:`submit` returns.
        Finished tasks whose results the service still holds complete at once.
        """
        by_group = unfinished_by_group(self.journal, self.label) if self.journal else {}
        found = []
        for (endpoint_id, group), records in by_group.items():
            endpoint = next((e for e in self.endpoints if e.endpoint_id == endpoint_id), None)
            if endpoint is None:
                logger.warning(
                    "pool %s: endpoint %s is no longer in the site", self.label, endpoint_id
                )
                continue
            futures = {str(f.task_id): f for f in endpoint.sdk.reload_tasks(group)}
            for record in records:
                inner = futures.get(record["task_id"])
                if inner is None:
                    continue
                members = [tuple(m) for m in record["members"]]
                task = _Task(eval, (), {}, 0, Future(), members, endpoint, inner, inner)
                with self._lock:
                    self._tasks.append(task)
                inner.add_done_callback(lambda f, t=task: self._landed(t, f))
                found.append((members, task.outer))
        return found

    def _journal(self, record: dict[str, Any]) -> None:
        path = self.journal
        if path is None or not record.get("task_id"):
            return
        with self._lock, path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def store_logs(outcomes: list[dict[str, Any]]) -> None:
    """Write the log tails that came back in ``outcomes`` where the driver keeps logs."""
    for outcome in outcomes:
        logs = outcome.pop("remote_logs", None) or {}
        for stream, tail in logs.items():
            path = outcome.get(stream)
            if not path:
                continue
            text = tail.get("text", "")
            if tail.get("cut"):
                text = CUT_NOTE.format(cut=tail["cut"], kept=len(text.encode())) + text
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)


def stop_sdk_executor(sdk: Any) -> None:
    """Stop an SDK executor and its result watcher without waiting for tasks out.

    As Parsl's ``GlobusComputeExecutor.shutdown`` does, except that no watcher is
    started just to be stopped (``_get_result_watcher`` would connect one).
    """
    from globus_compute_sdk.sdk.executor import _RESULT_WATCHERS

    sdk.shutdown(wait=False, cancel_futures=True)
    watcher = _RESULT_WATCHERS.get(sdk.task_group_id)
    if watcher is not None:
        watcher.shutdown(wait=False, cancel_futures=True)


def _online(endpoint: Endpoint) -> bool:
    try:
        status = endpoint.sdk.client.get_endpoint_status(endpoint.endpoint_id)
    except Exception as exc:  # the service did not answer: as good as offline
        logger.debug("endpoint %s status: %r", endpoint.endpoint_id, exc)
        return False
    return isinstance(status, dict) and status.get("status") == "online"


def _transient(error: BaseException) -> bool:
    """A failure to deliver the task, not of the task: worth sending again elsewhere."""
    if type(error).__name__ == "TaskExecutionFailed":
        return False
    status = getattr(error, "http_status", None)
    return not (isinstance(status, int) and 400 <= status < 500)


_SOURCE: dict[str, str] = {}


def _remote_source() -> str:
    if "source" not in _SOURCE:
        from importlib import resources

        _SOURCE["source"] = (
            resources.files("executor.sites").joinpath("globus_remote.py").read_text()
        )
    return _SOURCE["source"]
