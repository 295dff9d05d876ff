"""A stand-in for the Globus Compute service and its endpoints, for tests.

The hosted service cannot be reached from here. This module replaces only what talks
to it: :class:`StandinExecutor` is a real ``globus_compute_sdk.Executor`` (Parsl's
``GlobusComputeExecutor`` type-checks that) whose ``Client`` and result watcher are
swapped for ones that read and write a directory, the "service". Everything else is the
SDK's own code: function registration, the submitter thread that batches tasks,
``Batch`` and ``ComputeSerializer`` (arguments and results are serialized exactly as
for the real service), ``reload_tasks`` and the task-status loading behind it.

An endpoint is a daemon (:mod:`globus_endpoint`, started by :class:`StandinEndpoint`)
that outlives the driver. It claims tasks from the service directory and hands each
to one of its long-lived worker processes, which run

- as another Unix user (:data:`REMOTE_USER`, created with ``useradd`` when missing),
- with the system's Python (not the driver's interpreter, which that user cannot read)
  and the SDK's site-packages, without ``site`` (so pilot's editable install is not
  importable: ``import executor`` fails there),
- in a private directory of their own, with a clean environment,
- with no access to the driver's files: the service directory and every test's run
  directory sit under pytest's private (0700) temporary directory.

Limits enforced as the service does: 10 MB per serialized task and per request
(``GlobusAPIError`` 413 ``TASK_PAYLOAD_TOO_LARGE``, which stops the SDK's submitter
thread as the real one does) and 10 MB per result (``MaxResultSizeExceeded`` raised on
the endpoint, reported as ``TaskExecutionFailed``).

Not done (see docs/globus.md): authentication, the AMQP result stream (results are
polled), the 20-requests-per-10-seconds rate limit, dropping results after 30 minutes,
multi-user endpoint templating (``user_endpoint_config`` is recorded, not applied), and
the endpoint engine's Parsl worker pool (tasks are not wrapped by Parsl there).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from globus_compute_sdk import Executor
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk.batch import Batch, create_user_runtime
from globus_compute_sdk.sdk.executor import _RESULT_WATCHERS
from globus_compute_sdk.serialize import ComputeSerializer
from globus_endpoint import (
    OFFLINE_AFTER,
    PAYLOAD_LIMIT,
    POLL_SECONDS,
    REMOTE_USER,
    Service,
    StandinEndpoint,
)

__all__ = [
    "PAYLOAD_LIMIT",
    "REMOTE_USER",
    "SERVICE_VARIABLE",
    "StandinClient",
    "StandinEndpoint",
    "StandinExecutor",
    "StandinResultWatcher",
    "make_executor",
]

#: The environment variable naming the service directory for :func:`make_executor`.
SERVICE_VARIABLE = "PILOT_GLOBUS_STANDIN"


def payload_too_large(size: int, what: str) -> Exception:
    """The error the web service answers an oversized submission with (HTTP 413)."""
    import globus_sdk
    import requests

    response = requests.Response()
    response.status_code = 413
    response.reason = "Payload Too Large"
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps(
        {
            "code": "TASK_PAYLOAD_TOO_LARGE",
            "error": "Payload Too Large",
            "message": f"{what} of {size} bytes exceeds the limit of {PAYLOAD_LIMIT} bytes",
        }
    ).encode()
    response.request = requests.Request("POST", "https://compute.api.globus.org/v3/").prepare()
    response.url = response.request.url
    return globus_sdk.GlobusAPIError(response)


class _WebClientV2:
    """What ``Executor.reload_tasks`` asks of ``client._compute_web_client.v2``."""

    def __init__(self, service: Service):
        self._service = service

    def get_task_group(self, task_group_id: Any) -> dict:
        members = self._service.root / "groups" / str(task_group_id)
        tasks = sorted(p.name for p in members.iterdir()) if members.is_dir() else []
        return {"taskgroup_id": str(task_group_id), "tasks": [{"id": t} for t in tasks]}

    def get_task_batch(self, task_ids: Any) -> SimpleNamespace:
        results = {}
        for task_id in task_ids:
            done = self._service.result(str(task_id))
            if done is None:
                results[str(task_id)] = {"status": "waiting-for-ep", "completion_t": None}
            elif done["status"] == "success":
                results[str(task_id)] = done
            else:
                results[str(task_id)] = {**done, "exception": done["exception"]}
        return SimpleNamespace(data={"results": results})


class StandinClient:
    """The parts of ``globus_compute_sdk.Client`` the Executor uses, over a :class:`Service`."""

    def __init__(self, service: Service):
        self.service = service
        self.fx_serializer = ComputeSerializer()
        self._compute_web_client = SimpleNamespace(v2=_WebClientV2(service))

    def register_function(self, function: Any, **_options: Any) -> str:
        function_id = str(uuid.uuid4())
        path = self.service.root / "functions" / function_id
        self.service.write(path, self.fx_serializer.serialize(function))
        return function_id

    def create_batch(
        self,
        task_group_id: Any = None,
        resource_specification: dict | None = None,
        user_endpoint_config: dict | None = None,
        create_websocket_queue: bool = False,
        result_serializers: list[str] | None = None,
    ) -> Any:
        return Batch(
            task_group_id,
            resource_specification=resource_specification,
            user_endpoint_config=user_endpoint_config,
            request_queue=create_websocket_queue,
            serializer=self.fx_serializer,
            user_runtime=create_user_runtime(),
            result_serializers=result_serializers,
        )

    def batch_run(self, endpoint_id: Any, batch: Any) -> dict:
        self._maybe_fail()
        data = batch.prepare()
        request_size = len(json.dumps(data))
        for payloads in data["tasks"].values():
            for payload in payloads:
                if len(payload) > PAYLOAD_LIMIT:
                    raise payload_too_large(len(payload), "a task")
        if request_size > PAYLOAD_LIMIT:
            raise payload_too_large(request_size, "a request")
        group = data.get("task_group_id") or str(uuid.uuid4())
        endpoint = str(endpoint_id)
        received: dict[str, list[str]] = {}
        for function_id, payloads in data["tasks"].items():
            for payload in payloads:
                task_id = str(uuid.uuid4())
                (self.service.root / "groups" / group).mkdir(parents=True, exist_ok=True)
                (self.service.root / "groups" / group / task_id).touch()
                task = {
                    "task_id": task_id, "function_id": function_id, "payload": payload,
                    "task_group_id": group, "endpoint_id": endpoint,
                    "resource_specification": data.get("resource_specification"),
                    "user_endpoint_config": data.get("user_endpoint_config"),
                    "result_serializers": data.get("result_serializers"),
                    "submitted": time.time(),
                }  # fmt: skip
                self.service.write(self.service.root / "queue" / endpoint / f"{task_id}.json", task)
                received.setdefault(function_id, []).append(task_id)
        return {
            "tasks": received,
            "task_group_id": group,
            "request_id": str(uuid.uuid4()),
            "endpoint_id": endpoint,
        }

    def _maybe_fail(self) -> None:
        """Fail this request if the test asked for it (``fail-requests`` holds a count)."""
        import requests

        flag = self.service.root / "fail-requests"
        with self.service.lock():
            try:
                left = int(flag.read_text())
            except (FileNotFoundError, ValueError):
                return
            if left <= 1:
                flag.unlink()
            else:
                flag.write_text(str(left - 1))
        raise requests.ConnectionError("stand-in: the connection to the service was reset")

    def get_endpoint_status(self, endpoint_uuid: Any) -> dict:
        path = self.service.root / "endpoints" / f"{endpoint_uuid}.json"
        try:
            beat = self.service.read(path)
        except (FileNotFoundError, ValueError):
            return {"status": "offline", "details": {}}
        online = time.time() - beat["time"] < OFFLINE_AFTER
        return {"status": "online" if online else "offline", "details": beat}


class StandinResultWatcher(threading.Thread):
    """The SDK's ``_ResultWatcher`` interface, polling the service's results."""

    class ShuttingDownError(Exception):
        pass

    def __init__(self, task_group_id: Any, client: StandinClient):
        super().__init__(name="StandinResultWatcher", daemon=True)
        self.task_group_id = task_group_id
        self.client = client
        self._lock = threading.Lock()
        self._open: dict[str, Any] = {}
        self._closed = False
        self._stop_now = threading.Event()
        self._registry = _RESULT_WATCHERS
        _RESULT_WATCHERS[task_group_id] = self

    def watch_for_task_results(self, executor: Any, futures: list) -> int:
        with self._lock:
            if self._closed:
                raise self.ShuttingDownError("StandinResultWatcher is shutting down")
            added = 0
            for future in futures:
                if future.task_id and not future.done() and future.task_id not in self._open:
                    future._metadata["executor_id"] = id(executor)
                    self._open[future.task_id] = future
                    added += 1
        return added

    def get_open_futures(self, executor: Any = None) -> dict:
        with self._lock:
            return {
                task_id: future
                for task_id, future in self._open.items()
                if executor is None or future._metadata.get("executor_id") == id(executor)
            }

    def run(self) -> None:
        deserialize = self.client.fx_serializer.deserialize
        while not self._stop_now.wait(POLL_SECONDS):
            with self._lock:
                waiting = list(self._open.items())
            for task_id, future in waiting:
                done = self.client.service.result(task_id)
                if done is None:
                    continue
                with self._lock:
                    self._open.pop(task_id, None)
                if future.done():
                    continue
                if done["status"] == "success":
                    try:
                        future.set_result(deserialize(done["result"]))
                    except Exception as exc:
                        future.set_exception(exc)
                else:
                    future.set_exception(
                        TaskExecutionFailed(done["exception"], str(done["completion_t"]))
                    )
            if self._closed and not self._open:
                break

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                for future in self._open.values():
                    future.cancel()
                self._open.clear()
        if self._registry.get(self.task_group_id) is self:
            self._registry.pop(self.task_group_id, None)
        if wait and self.is_alive():
            self.join()


class StandinExecutor(Executor):
    """A real SDK ``Executor`` whose service is a :class:`Service` directory."""

    def __init__(self, endpoint_id: Any = None, *, service: Path | str, **kwargs: Any):
        super().__init__(endpoint_id=endpoint_id, client=StandinClient(Service(service)), **kwargs)

    def _get_result_watcher(self) -> Any:
        watcher = _RESULT_WATCHERS.get(self.task_group_id)
        # One watcher per task group, as in the SDK; but each test's service is another
        # "service", and a task group id the SDK remembers from another test's is not its.
        if (
            not isinstance(watcher, StandinResultWatcher)
            or not watcher.is_alive()
            or watcher.client.service.root != self.client.service.root
        ):
            watcher = StandinResultWatcher(self.task_group_id, self.client)
            watcher.start()
        return watcher


def make_executor(endpoint_id: str, **kwargs: Any) -> Any:
    """The ``executor_factory`` of a test site: the service is ``$PILOT_GLOBUS_STANDIN``."""
    return StandinExecutor(endpoint_id, service=os.environ[SERVICE_VARIABLE], **kwargs)
