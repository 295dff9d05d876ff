"""The Globus Compute stand-in itself: does it hold what the real service and endpoints do?

Tasks run as another Unix user with no access to the driver's files; payloads go through
the SDK's own serializer and limits; task groups outlive the submitting process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("globus_compute_sdk")

from globus_standin import (  # noqa: E402 - after the skip
    PAYLOAD_LIMIT,
    REMOTE_USER,
    StandinEndpoint,
    StandinExecutor,
)
from helpers import wait_for  # noqa: E402

if os.geteuid() != 0:
    pytest.skip(
        "the stand-in runs its workers as another user: needs root", allow_module_level=True
    )

HERE = Path(__file__).resolve().parent

# What a task sees of its world, as a Python expression evaluated on the endpoint.
LOOK_AROUND = """(lambda os, json: {
    "uid": os.getuid(), "user": os.environ.get("USER"), "cwd": os.getcwd(),
    "environment": sorted(os.environ),
    "driver_file": (lambda p: (open(p).read() if os.access(p, os.R_OK) else "unreadable"))(path),
    "pilot": __import__("importlib.util").util.find_spec("executor") is not None,
})(__import__("os"), __import__("json"))"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("globus") / "service"


@pytest.fixture(scope="module")
def endpoint(service: Path):
    with StandinEndpoint(service, workers=2) as started:
        yield started


@pytest.fixture
def gce(service: Path, endpoint: StandinEndpoint):
    executor = StandinExecutor(endpoint.endpoint_id, service=service)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_the_standin_is_a_real_sdk_executor_that_parsl_accepts(gce):
    from globus_compute_sdk import Executor
    from parsl.executors import GlobusComputeExecutor

    assert isinstance(gce, Executor)
    parsl_executor = GlobusComputeExecutor(executor=gce, label="standin")
    assert parsl_executor.submit(eval, {}, "6 * 7").result(timeout=120) == 42


def test_tasks_run_as_another_user_in_their_own_directory_without_the_drivers_files(
    gce, endpoint: StandinEndpoint, tmp_path: Path
):
    secret = tmp_path / "driver-only.txt"
    secret.write_text("the driver's")
    seen = gce.submit(eval, LOOK_AROUND, {"path": str(secret)}).result(timeout=120)
    assert seen["user"] == REMOTE_USER and seen["uid"] != os.getuid()
    assert seen["cwd"] == str(endpoint.home)
    assert seen["environment"] == ["HOME", "LANG", "PATH", "TMPDIR", "USER"]
    assert seen["driver_file"] == "unreadable"
    assert seen["pilot"] is False  # pilot's code is not importable there


def test_arguments_and_results_travel_through_the_sdks_serializer(gce, service: Path):
    from globus_compute_sdk.serialize import ComputeSerializer

    data = bytes(range(256)) * 10
    future = gce.submit(eval, "(len(blob), blob[-3:])", {"blob": data})
    assert future.result(timeout=120) == (2560, bytes([253, 254, 255]))
    # What the service stored is the SDK's own packed buffers, readable by its serializer.
    stored = json.loads((service / "results" / f"{future.task_id}.json").read_text())
    assert ComputeSerializer().deserialize(stored["result"]) == (2560, bytes([253, 254, 255]))


def test_a_task_over_the_payload_limit_is_refused_as_the_service_does(service, endpoint):
    import globus_sdk

    gce = StandinExecutor(endpoint.endpoint_id, service=service)
    future = gce.submit(eval, "len(blob)", {"blob": b"x" * (PAYLOAD_LIMIT + 1)})
    with pytest.raises(globus_sdk.GlobusAPIError) as caught:
        future.result(timeout=120)
    assert caught.value.http_status == 413 and caught.value.code == "TASK_PAYLOAD_TOO_LARGE"
    # As with the real SDK, the executor's submitter thread is gone: nothing more goes.
    wait_for(lambda: gce._stopped, timeout=30, what="the SDK executor to stop")
    with pytest.raises(RuntimeError, match="shutdown"):
        gce.submit(eval, "1")


def test_a_result_over_the_limit_fails_on_the_endpoint(gce):
    from globus_compute_sdk.errors import TaskExecutionFailed

    future = gce.submit(eval, "b'x' * (limit + 1)", {"limit": PAYLOAD_LIMIT})
    with pytest.raises(TaskExecutionFailed, match="MaxResultSizeExceeded"):
        future.result(timeout=120)


def test_an_exception_comes_back_with_the_remote_traceback(gce):
    from globus_compute_sdk.errors import TaskExecutionFailed

    with pytest.raises(TaskExecutionFailed, match="ZeroDivisionError"):
        gce.submit(eval, "1 / 0").result(timeout=120)


def test_tasks_keep_running_across_a_driver_restart(service: Path, endpoint: StandinEndpoint):
    """A process submits a slow task and dies; another reloads the task group and gets
    the result, and the task ran once."""
    marker = endpoint.home / "runs.txt"
    submitter = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(HERE)!r})
        from globus_standin import StandinExecutor
        gce = StandinExecutor({endpoint.endpoint_id!r}, service={str(service)!r})
        code = "[open(marker, 'a').write('ran\\\\n'), __import__('time').sleep(2)] and 'done'"
        future = gce.submit(eval, code, {{"marker": {str(marker)!r}}})
        while not future.task_id:
            time.sleep(0.05)
        print(gce.task_group_id, future.task_id, flush=True)
        os._exit(0)  # a crash: no shutdown, nothing waited for
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", submitter], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    group, task_id = done.stdout.split()
    again = StandinExecutor(endpoint.endpoint_id, service=service, task_group_id=group)
    try:
        futures = {f.task_id: f for f in again.reload_tasks()}
        assert futures[task_id].result(timeout=120) == "done"
    finally:
        again.shutdown(wait=False, cancel_futures=True)
    assert marker.read_text() == "ran\n"


def test_an_endpoint_that_stops_answering_shows_offline(service: Path):
    with StandinEndpoint(service, workers=1) as endpoint:
        gce = StandinExecutor(endpoint.endpoint_id, service=service)
        try:
            status = gce.client.get_endpoint_status(endpoint.endpoint_id)
            assert status["status"] == "online"
            endpoint.pause()
            wait_for(
                lambda: gce.client.get_endpoint_status(endpoint.endpoint_id)["status"] == "offline",
                timeout=30, what="the endpoint to show offline",
            )  # fmt: skip
            endpoint.resume()
            wait_for(
                lambda: gce.client.get_endpoint_status(endpoint.endpoint_id)["status"] == "online",
                timeout=30, what="the endpoint to show online again",
            )  # fmt: skip
        finally:
            gce.shutdown(wait=False, cancel_futures=True)
