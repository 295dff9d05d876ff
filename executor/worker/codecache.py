"""The worker's side of shipping: a per-node cache of code trees, keyed by sha256.

A tarball built by :mod:`executor.shipping.tarball` reaches a worker either as a path (sites
with a shared filesystem: it sits in the run directory) or as bytes carried with a
bundle, possibly in chunks (sites without one). Either way it is verified against
its sha256 *before* anything is unpacked, checked member by member (absolute paths,
``..``, links leading outside, device files and setuid bits are refused, then
extracted with Python's ``data`` filter as a second line of defence), and unpacked
once per node: under a lock, into a temporary directory renamed into place, so
concurrent workers unpack it once and a half-unpacked tree is never used.

This module imports only the standard library and nothing from pilot: it is also
sent as source text to workers that do not have pilot installed (see
:mod:`executor.shipping.runtime`), and used there to unpack pilot's own worker runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # for the type checker only: this module must import nothing of pilot's
    from .outcome import CodeMissing, Outcome
    from .spec import JobSpec

# Where trees are unpacked; otherwise a private directory under the system temp dir.
CACHE_VARIABLE = "PILOT_CACHE"


class CodeUnavailable(Exception):
    """Shipped code could not be verified or unpacked here; the message says why."""


def cache_root() -> str:
    """This node's cache directory, created private (0700) and checked to be ours.

    A directory in a shared temp dir could have been created by another user to
    plant code; one that is not ours, or that others can write, is refused.
    """
    root = os.environ.get(CACHE_VARIABLE) or os.path.join(
        tempfile.gettempdir(), f"pilot-cache-{os.getuid()}"
    )
    os.makedirs(root, mode=0o700, exist_ok=True)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise CodeUnavailable(
            f"the code cache {root} is not a directory owned by you; "
            f"remove it or set {CACHE_VARIABLE} to a private directory"
        )
    if info.st_mode & 0o022:
        raise CodeUnavailable(
            f"the code cache {root} can be written by others (mode {info.st_mode & 0o777:o}); "
            f"run `chmod 700 {root}` or set {CACHE_VARIABLE} to a private directory"
        )
    return root


def ready_trees(shipments: list[dict[str, Any]]) -> dict[str, str] | CodeMissing:
    """Make every shipment available here; return ``{sha256: tree}``.

    A shipment is ``{"sha256", "size", "path"?, "chunk_size"?, "chunks"?: {index: bytes}}``.
    When one cannot be made whole here yet (no shared path, chunks missing), return
    instead ``{"code_missing": {sha256: [chunk indices this node has]}}``: the driver
    then sends the bundle again with the missing chunks.
    """
    root = cache_root()
    trees: dict[str, str] = {}
    missing: dict[str, list[int]] = {}
    for shipment in shipments:
        sha = _checked_hash(shipment["sha256"])
        final = os.path.join(root, sha)
        if os.path.isdir(final) and not _intact(root, sha):
            _discard(root, sha)
        if not os.path.isdir(final):
            for index, data in (shipment.get("chunks") or {}).items():
                _store_chunk(root, sha, int(index), data)
            blob = _whole(root, shipment)
            if blob is None:
                missing[sha] = _chunks_present(root, sha)
                continue
            try:
                unpack(blob, sha, root)
            except CodeUnavailable:
                # A damaged chunk must not poison this node: the next try fetches anew.
                shutil.rmtree(os.path.join(root, sha + ".parts"), ignore_errors=True)
                raise
        trees[sha] = final
    if missing:
        return {"code_missing": missing}
    return trees


def _whole(root: str, shipment: dict[str, Any]) -> bytes | None:
    """The tarball's bytes, from the shared path or from every chunk; ``None`` if not yet."""
    path = shipment.get("path")
    if path:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError:
            pass  # not shared after all: fall back to chunks sent by the driver
    size, chunk_size = shipment["size"], shipment.get("chunk_size") or shipment["size"]
    count = max(1, -(-size // chunk_size))
    parts = os.path.join(root, shipment["sha256"] + ".parts")
    if len(_chunks_present(root, shipment["sha256"])) < count:
        return None
    pieces = []
    for index in range(count):
        with open(os.path.join(parts, str(index)), "rb") as handle:
            pieces.append(handle.read())
    return b"".join(pieces)


def _store_chunk(root: str, sha: str, index: int, data: bytes) -> None:
    parts = os.path.join(root, sha + ".parts")
    os.makedirs(parts, mode=0o700, exist_ok=True)
    target = os.path.join(parts, str(index))
    if os.path.exists(target):
        return
    fd, temporary = tempfile.mkstemp(dir=parts, prefix=".chunk-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, target)  # a reader sees a whole chunk or none


def _chunks_present(root: str, sha: str) -> list[int]:
    try:
        names = os.listdir(os.path.join(root, sha + ".parts"))
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def unpack(blob: bytes, sha256: str, root: str | None = None) -> str:
    """Verify ``blob`` against ``sha256`` and unpack it into the cache (once); return the tree.

    Raises
    ------
    CodeUnavailable
        The bytes do not match the hash, or the archive holds an unsafe member.
    """
    return _unpack_once(blob, sha256, root or cache_root())[0]


def _unpack_once(blob: bytes, sha256: str, root: str) -> tuple[str, bool]:
    """Unpack under the node's lock; return the tree and whether this call unpacked it."""
    sha = _checked_hash(sha256)
    final = os.path.join(root, sha)
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha:
        raise CodeUnavailable(
            f"shipped code is corrupt: expected sha256 {sha}, received {actual}; "
            "nothing was unpacked"
        )
    with _locked(os.path.join(root, sha + ".lock")):
        if os.path.isdir(final):  # another worker of this node finished first
            return final, False
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
            members = archive.getmembers()
            for member in members:
                check_member(member)
            staging = tempfile.mkdtemp(dir=root, prefix=f".{sha[:16]}-")
            try:
                _extract(archive, members, staging)
                _make_read_only(staging)
                _write_listing(root, sha, members)
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    shutil.rmtree(os.path.join(root, sha + ".parts"), ignore_errors=True)
    return final, True


# Trees found whole by this process: checked once, not at every bundle.
_INTACT: set[str] = set()


def _write_listing(root: str, sha: str, members: list[tarfile.TarInfo]) -> None:
    """Record what the tree holds, to notice later when part of it has gone."""
    import json

    listing = [[m.name, m.size if m.isfile() else -1] for m in members]
    with open(os.path.join(root, sha + ".files"), "w") as handle:
        json.dump(listing, handle)


def _intact(root: str, sha: str) -> bool:
    """Whether the cached tree still holds every file, at its size.

    Temp-dir cleaners (systemd-tmpfiles, tmpwatch) delete old files one by one; a
    tree they thinned out must be unpacked again, not used.
    """
    if sha in _INTACT:
        return True
    import json

    try:
        with open(os.path.join(root, sha + ".files")) as handle:
            listing = json.load(handle)
        for name, size in listing:
            info = os.lstat(os.path.join(root, sha, name))
            if size >= 0 and info.st_size != size:
                return False
    except (OSError, ValueError, TypeError):
        return False
    _INTACT.add(sha)
    return True


def _discard(root: str, sha: str) -> None:
    """Take a damaged tree out of use at once (a rename), then delete it."""
    with _locked(os.path.join(root, sha + ".lock")):
        final = os.path.join(root, sha)
        if not os.path.isdir(final) or _intact(root, sha):
            return  # another worker already replaced it
        doomed = tempfile.mkdtemp(dir=root, prefix=f".{sha[:16]}-damaged-")
        os.rename(final, os.path.join(doomed, "tree"))
    shutil.rmtree(doomed, ignore_errors=True)


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse anything pilot's own builder never writes and an attacker would."""
    name = member.name
    problem = None
    if not name or name.startswith("/") or posixpath.isabs(name):
        problem = "has an absolute path"
    elif ".." in name.split("/"):
        problem = "climbs out of the tree with '..'"
    elif member.isdev() or member.isfifo():
        problem = "is a device or pipe"
    elif member.islnk():
        problem = "is a hard link"
    elif member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        problem = "has a setuid, setgid or sticky bit"
    elif member.issym():
        target = member.linkname
        landing = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if posixpath.isabs(target) or landing == ".." or landing.startswith("../"):
            problem = f"is a link to {target!r}, outside the tree"
    elif not (member.isfile() or member.isdir()):
        problem = "is not a file, directory or link"
    if problem:
        raise CodeUnavailable(f"refusing to unpack shipped code: {name!r} {problem}")


def _extract(archive: tarfile.TarFile, members: list[tarfile.TarInfo], into: str) -> None:
    if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
        try:
            archive.extractall(into, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise CodeUnavailable(f"refusing to unpack shipped code: {exc}") from exc
    else:
        archive.extractall(into, members=members)  # noqa: S202 - members checked above


def _make_read_only(tree: str) -> None:
    """Files become read-only so a job cannot change the code the next job runs.

    Directories stay writable by their owner: Python writes ``__pycache__`` there,
    which makes the next import from the cache faster.
    """
    for directory, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, mode & ~0o222)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _checked_hash(sha256: str) -> str:
    # A hash becomes a path component: anything but 64 hex digits could name another path.
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise CodeUnavailable(f"not a sha256 hash: {sha256!r}")
    return sha256


# -- using a tree ---------------------------------------------------------------------
def with_code_on_paths(env: dict[str, str], trees: list[str]) -> dict[str, str]:
    """Put the trees first on ``PYTHONPATH`` and ``PATH``; name the first in ``PILOT_CODE``."""
    if not trees:
        return env
    for variable in ("PYTHONPATH", "PATH"):
        current = env.get(variable)
        env[variable] = os.pathsep.join([*trees, current] if current else trees)
    env["PILOT_CODE"] = trees[0]
    return env


# -- on workers without pilot ---------------------------------------------------------
def bootstrap(
    specs: list[JobSpec], code: list[dict[str, Any]], package: str
) -> list[Outcome] | CodeMissing:
    """Run a bundle with pilot's worker runtime taken from the shipped code itself.

    Called on a worker that has only Python (and its executor software): this
    module's source arrives with the bundle (see :mod:`executor.shipping.runtime`), unpacks
    the runtime tarball ``package`` like any other shipment, and hands over to it.
    """
    import importlib
    import sys

    # Only the runtime here: this copy of the module is new at every bundle, while the
    # runtime's own copy (which readies the user's code) lives as long as the worker.
    runtime_items = [item for item in code if item.get("runtime")]
    ready = ready_trees(runtime_items)
    if "code_missing" in ready:
        return cast("CodeMissing", ready)
    runtime = ready[runtime_items[0]["sha256"]]
    if runtime not in sys.path:
        sys.path.append(runtime)  # last: it holds only the runtime, never shadows user code
    worker = importlib.import_module(package + ".bundle")
    return worker.run_bundle(specs, code)
