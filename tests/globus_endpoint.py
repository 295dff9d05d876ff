"""The Globus Compute stand-in's service directory and endpoint daemons (for tests).

See :mod:`globus_standin` for what the stand-in is. This module is also the endpoint
daemon's program (``python globus_endpoint.py serve ...``, started by
:class:`StandinEndpoint`), so it imports neither the SDK nor pilot: the daemon only
moves tasks between the service directory and its workers, which deserialize and run
them as :data:`REMOTE_USER`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Who runs the endpoint's workers.
REMOTE_USER = "pilotremote"
#: Bytes one serialized task, one request and one serialized result may hold.
PAYLOAD_LIMIT = 10 * 1024 * 1024
#: An endpoint whose daemon has not written its heartbeat this long is offline.
OFFLINE_AFTER = 2.0
HEARTBEAT_SECONDS = 0.3
POLL_SECONDS = 0.05


# -- the service: a directory --------------------------------------------------------
class Service:
    """The service's state: plain files under ``root``, renamed into place.

    ``functions/<id>`` serialized functions; ``queue/<endpoint>/<task>.json`` tasks not
    yet claimed, ``claimed/<endpoint>/`` those an endpoint runs; ``results/<task>.json``;
    ``groups/<task group>/<task>`` a task group's members; ``endpoints/<id>.json`` each
    endpoint daemon's heartbeat.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        for name in ("functions", "queue", "claimed", "results", "groups", "endpoints"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def write(self, path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        scratch.write_text(json.dumps(data))
        os.replace(scratch, path)

    def read(self, path: Path) -> Any:
        return json.loads(path.read_text())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The service's lock, across processes (for a test's injected faults)."""
        with open(self.root / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def result(self, task_id: str) -> dict | None:
        try:
            return self.read(self.root / "results" / f"{task_id}.json")
        except FileNotFoundError:
            return None


# -- an endpoint: a daemon with workers of another user ----------------------------
def ensure_remote_user() -> pwd.struct_passwd:
    """The endpoint's Unix user, created (without a home) when missing."""
    try:
        return pwd.getpwnam(REMOTE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", REMOTE_USER],
            check=True, capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(REMOTE_USER)


def endpoint_python() -> str:
    """The endpoint's interpreter: the system's, of the driver's Python version.

    The driver's own interpreter may live where the remote user cannot read (pyenv under
    ``/root``); the venv's site-packages holds only pure-Python and version-specific
    wheels, which the system Python of the same minor version loads.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"the stand-in endpoint needs /usr/bin/{version}")


# What the endpoint's workers import (the SDK's serializer and errors, and what those
# import): an endpoint has its own installation, so they get a copy of their own, which
# also works when the driver's virtualenv sits where the remote user cannot read.
ENDPOINT_PACKAGES = (
    "globus_compute_sdk", "globus_compute_common", "globus_sdk", "dill", "pika", "requests",
    "urllib3", "idna", "certifi", "charset_normalizer", "jwt", "cryptography",
    "_cffi_backend", "pydantic", "pydantic_core", "annotated_types", "typing_extensions",
    "typing_inspection", "packaging", "tblib",
)  # fmt: skip


def install_endpoint_packages(target: Path) -> Path:
    """Copy :data:`ENDPOINT_PACKAGES` (and their ``dist-info``) into ``target``."""
    import importlib.util

    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    for name in ENDPOINT_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        if source.is_dir():
            shutil.copytree(source, target / source.name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / source.name)
    for info in purelib.glob("*.dist-info"):
        dist = info.name.split("-")[0].lower().replace("-", "_")
        if dist in ENDPOINT_PACKAGES or dist.replace("pyjwt", "jwt") in ENDPOINT_PACKAGES:
            shutil.copytree(info, target / info.name, dirs_exist_ok=True)
    (target / ".complete").touch()
    return target


# Each worker: one long-lived process, one JSON task per line on stdin, one reply per
# line on the descriptor that was stdout (stdout itself goes to the worker's log).
_WORKER = r"""
import json, os, sys, traceback
sys.path.append(sys.argv[1])
pretend, limit = json.loads(sys.argv[2]), int(sys.argv[3])
from globus_compute_sdk.serialize import ComputeSerializer
from globus_compute_sdk.errors import MaxResultSizeExceeded
for name, version in pretend.items():
    __import__(name).__version__ = version
serde = ComputeSerializer()
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
for line in sys.stdin:
    task = json.loads(line)
    try:
        function = serde.deserialize(task["function"])
        args, kwargs = (serde.deserialize(b) for b in serde.unpack_buffers(task["payload"]))
        value = function(*args, **kwargs)
        strategies = task.get("result_serializers")
        if strategies:
            data = serde.serialize_from_list(value, strategies)
        else:
            data = serde.serialize(value)
        if len(data) > limit:
            raise MaxResultSizeExceeded(len(data), limit)
        reply = {"status": "success", "result": data}
    except BaseException:
        reply = {"status": "failed", "exception": traceback.format_exc()}
    replies.write(json.dumps(reply) + "\n")
    replies.flush()
"""


class _Slot(threading.Thread):
    """One worker process of an endpoint and the thread that feeds it tasks."""

    def __init__(self, daemon: _EndpointDaemon, number: int):
        super().__init__(name=f"slot-{number}", daemon=True)
        self.endpoint = daemon
        self.number = number
        self.process: subprocess.Popen | None = None

    def _start_worker(self) -> subprocess.Popen:
        user = ensure_remote_user()
        home = self.endpoint.home
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home / "tmp"),
               "LANG": "C.UTF-8", "USER": REMOTE_USER}  # fmt: skip
        log = open(home / f"worker-{self.number}.log", "ab")  # noqa: SIM115 - the child's
        try:
            return subprocess.Popen(
                [endpoint_python(), "-I", "-S", "-c", _WORKER, self.endpoint.site_packages,
                 json.dumps(self.endpoint.pretend), str(PAYLOAD_LIMIT)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=home, env=env,
                user=user.pw_uid, group=user.pw_gid, extra_groups=[], text=True,
            )  # fmt: skip
        finally:
            log.close()

    def run(self) -> None:
        while not self.endpoint.stopping.is_set():
            claimed = self.endpoint.claim()
            if claimed is None:
                time.sleep(POLL_SECONDS)
                continue
            path, task = claimed
            self.endpoint.finish(path, task, self._run(task))

    def _run(self, task: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = self._start_worker()
        function = self.endpoint.service.read(
            self.endpoint.service.root / "functions" / task["function_id"]
        )
        request = {"function": function, "payload": task["payload"],
                   "result_serializers": task.get("result_serializers")}  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = self.process.wait()
            self.process = None
            return {"status": "failed", "exception": (
                "Traceback (most recent call last):\n"
                f"parsl.executors.high_throughput.errors.WorkerLost: Task failure due to loss "
                f"of worker {self.number} (exit code {code})\n"
            )}  # fmt: skip
        return json.loads(line)


class _EndpointDaemon:
    def __init__(self, service: Service, endpoint_id: str, home: Path, workers: int, pretend):
        self.service = service
        self.endpoint_id = endpoint_id
        self.home = home
        self.pretend = pretend
        self.site_packages = str(home / "site-packages")  # StandinEndpoint.start copied it
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.queue = service.root / "queue" / endpoint_id
        self.claimed = service.root / "claimed" / endpoint_id
        self.queue.mkdir(parents=True, exist_ok=True)
        self.claimed.mkdir(parents=True, exist_ok=True)
        # Tasks a previous daemon of this endpoint claimed but never finished run again.
        for left in self.claimed.glob("*.json"):
            os.replace(left, self.queue / left.name)
        self.slots = [_Slot(self, n) for n in range(workers)]

    def claim(self) -> tuple[Path, dict] | None:
        with self._lock:
            waiting = sorted(self.queue.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
            for path in waiting:
                target = self.claimed / path.name
                try:
                    os.replace(path, target)
                except FileNotFoundError:
                    continue
                return target, self.service.read(target)
        return None

    def finish(self, path: Path, task: dict, reply: dict) -> None:
        reply["completion_t"] = time.time()
        reply["task_id"] = task["task_id"]
        self.service.write(self.service.root / "results" / f"{task['task_id']}.json", reply)
        path.unlink(missing_ok=True)

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        for slot in self.slots:
            slot.start()
        beat = self.service.root / "endpoints" / f"{self.endpoint_id}.json"
        while not self.stopping.is_set():
            self.service.write(beat, {"time": time.time(), "pid": os.getpid()})
            self.stopping.wait(HEARTBEAT_SECONDS)
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()


class StandinEndpoint:
    """Start, pause and stop one endpoint daemon (a context manager).

    Parameters
    ----------
    service
        The service directory (shared with the executors' clients).
    workers
        Worker processes: tasks the endpoint runs at once.
    pretend
        Module versions the workers claim (``{"dill": "0.3.8"}``), to fake a mismatch.
    """

    def __init__(
        self,
        service: Path | str,
        *,
        endpoint_id: str | None = None,
        workers: int = 2,
        pretend: dict[str, str] | None = None,
    ):
        self.service = Service(service)
        self.endpoint_id = endpoint_id or str(uuid.uuid4())
        self.workers = workers
        self.pretend = pretend or {}
        self.home: Path | None = None
        self.process: subprocess.Popen | None = None

    def start(self) -> StandinEndpoint:
        user = ensure_remote_user()
        if self.home is None:
            # Outside pytest's private tree: the remote user must reach it; nothing else can.
            self.home = Path(tempfile.mkdtemp(prefix="pilot-standin-endpoint-"))
            (self.home / "tmp").mkdir()
            for path in (self.home, self.home / "tmp"):
                os.chown(path, user.pw_uid, user.pw_gid)
                os.chmod(path, 0o700)
            packages = install_endpoint_packages(self.home / "site-packages")
            for path in (packages, *packages.rglob("*")):
                os.chown(path, user.pw_uid, user.pw_gid)
        beat = self.service.root / "endpoints" / f"{self.endpoint_id}.json"
        beat.unlink(missing_ok=True)
        with open(self.service.root / f"endpoint-{self.endpoint_id}.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "serve", str(self.service.root), self.endpoint_id,
                 str(self.home), str(self.workers), json.dumps(self.pretend)],
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not beat.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in endpoint did not start: see {self.service.root}")
            time.sleep(POLL_SECONDS)
        return self

    def pause(self) -> None:
        """Stop answering (SIGSTOP): no heartbeat, no task claimed, no result written."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGCONT)
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
            # The workers run as another user in the daemon's session: none may outlive it.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process = None

    def close(self) -> None:
        self.stop()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def __enter__(self) -> StandinEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _serve(argv: list[str]) -> None:
    root, endpoint_id, home, workers, pretend = argv
    daemon = _EndpointDaemon(
        Service(root), endpoint_id, Path(home), int(workers), json.loads(pretend)
    )
    try:
        daemon.serve()
    except Exception:
        traceback.print_exc()
        raise


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    _serve(sys.argv[2:])
