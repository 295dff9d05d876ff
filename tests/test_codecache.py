"""The worker's code cache: verify before unpacking, refuse unsafe archives, unpack once."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import tarfile
from pathlib import Path

import pytest

from executor.shipping.tarball import build
from executor.worker import codecache
from executor.worker.codecache import CodeUnavailable, ready_trees, unpack


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PILOT_CACHE", str(root))
    return root


def _tarball(*members: tuple[tarfile.TarInfo, bytes | None]) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    blob = buffer.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


def _package(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WHO = 'shipped'\n")
    (package / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (package / "tool.sh").chmod(0o755)
    return package


ATTACKS = {
    "absolute path": ([(_member("/tmp/pwned"), b"x")], "absolute path"),
    "dot-dot": ([(_member("../pwned"), b"x")], "'..'"),
    "dot-dot inside": ([(_member("mypkg/../../pwned"), b"x")], "'..'"),
    "link to an absolute path": (
        [(_member("etc", tarfile.SYMTYPE, link="/etc"), None)],
        "outside the tree",
    ),
    "link climbing out": (
        [(_member("mypkg/up", tarfile.SYMTYPE, link="../../.."), None)],
        "outside the tree",
    ),
    "write through an outside link": (
        [
            (_member("out", tarfile.SYMTYPE, link="/tmp"), None),
            (_member("out/pwned"), b"x"),
        ],
        "outside the tree",
    ),
    "hard link": ([(_member("passwd", tarfile.LNKTYPE, link="/etc/passwd"), None)], "hard link"),
    "character device": ([(_member("tty", tarfile.CHRTYPE), None)], "device"),
    "block device": ([(_member("disk", tarfile.BLKTYPE), None)], "device"),
    "fifo": ([(_member("pipe", tarfile.FIFOTYPE), None)], "device or pipe"),
    "setuid": ([(_member("mypkg/su", mode=0o4755), b"#!/bin/sh\n")], "setuid"),
    "setgid": ([(_member("mypkg/sg", mode=0o2755), b"#!/bin/sh\n")], "setuid, setgid"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_each_traversal_attack_is_refused_and_nothing_is_unpacked(cache: Path, attack: str):
    members, reason = ATTACKS[attack]
    blob, sha = _tarball(*members)

    with pytest.raises(CodeUnavailable, match="refusing to unpack shipped code") as error:
        unpack(blob, sha)

    assert reason in str(error.value)
    assert not (cache / sha).exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    assert not Path("/tmp/pwned").exists()


def test_bytes_that_do_not_match_the_hash_are_refused_before_unpacking(tmp_path, cache: Path):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    blob = bytearray(shipment.path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF

    with pytest.raises(CodeUnavailable, match="corrupt: expected sha256"):
        unpack(bytes(blob), shipment.sha256)

    assert not (cache / shipment.sha256).exists()


def test_a_tree_is_unpacked_read_only_and_found_again_by_hash(tmp_path, cache: Path):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    descriptor = {**shipment.descriptor(), "path": str(shipment.path)}

    trees = ready_trees([descriptor])

    tree = Path(trees[shipment.sha256])
    assert tree == cache / shipment.sha256
    assert (tree / "mypkg" / "__init__.py").read_text() == "WHO = 'shipped'\n"
    assert not os.stat(tree / "mypkg" / "__init__.py").st_mode & 0o222
    assert os.access(tree / "mypkg" / "tool.sh", os.X_OK)
    shipment.path.unlink()  # found by hash now: the source is not read again
    assert ready_trees([descriptor]) == trees


def _unpack_at_once(args: tuple[bytes, str, str]) -> bool:
    blob, sha, root = args
    codecache.BARRIER.wait(timeout=30)
    return codecache._unpack_once(blob, sha, root)[1]


def test_two_workers_unpacking_at_once_unpack_once(tmp_path, cache: Path):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    cache.mkdir(mode=0o700)
    blob = shipment.path.read_bytes()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)

    def remember(barrier=barrier):
        codecache.BARRIER = barrier

    with context.Pool(4, initializer=remember) as pool:
        unpacked_here = pool.map(_unpack_at_once, [(blob, shipment.sha256, str(cache))] * 4)

    assert sorted(unpacked_here) == [False, False, False, True]
    assert (cache / shipment.sha256 / "mypkg" / "__init__.py").exists()
    leftovers = [p.name for p in cache.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_half_unpacked_tree_is_never_used(tmp_path, cache: Path, monkeypatch):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    blob = shipment.path.read_bytes()

    def crash(tree: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(codecache, "_make_read_only", crash)
    with pytest.raises(OSError, match="disk full"):
        unpack(blob, shipment.sha256)
    assert not (cache / shipment.sha256).exists()
    monkeypatch.undo()
    monkeypatch.setenv("PILOT_CACHE", str(cache))

    tree = Path(unpack(blob, shipment.sha256))
    assert (tree / "mypkg" / "__init__.py").exists()


def test_chunks_arriving_in_any_order_are_assembled_then_verified(tmp_path, cache: Path):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    blob = shipment.path.read_bytes()
    size = max(1, len(blob) // 3 + 1)
    chunks = {i: blob[i * size : (i + 1) * size] for i in range(-(-len(blob) // size))}
    base = {"sha256": shipment.sha256, "size": len(blob), "chunk_size": size}

    assert ready_trees([base]) == {"code_missing": {shipment.sha256: []}}
    assert ready_trees([{**base, "chunks": {2: chunks[2]}}]) == {
        "code_missing": {shipment.sha256: [2]}
    }
    trees = ready_trees([{**base, "chunks": {0: chunks[0], 1: chunks[1]}}])

    assert Path(trees[shipment.sha256], "mypkg", "__init__.py").exists()
    assert not (cache / f"{shipment.sha256}.parts").exists()


def test_a_cache_directory_others_can_write_or_that_is_not_ours_is_refused(
    tmp_path, cache, monkeypatch
):
    cache.mkdir(mode=0o700)
    cache.chmod(0o777)
    with pytest.raises(CodeUnavailable, match="can be written by others"):
        codecache.cache_root()
    cache.chmod(0o700)
    if os.getuid() == 0:  # only root can give a directory away
        os.chown(cache, 65534, 65534)
        with pytest.raises(CodeUnavailable, match="not a directory owned by you"):
            codecache.cache_root()
    link = tmp_path / "link"
    link.symlink_to(cache)
    monkeypatch.setenv("PILOT_CACHE", str(link))
    with pytest.raises(CodeUnavailable, match="not a directory owned by you"):
        codecache.cache_root()


def test_a_hash_that_is_not_a_hash_never_becomes_a_path(cache: Path):
    with pytest.raises(CodeUnavailable, match="not a sha256"):
        ready_trees([{"sha256": "../../etc", "size": 1}])


def test_shell_jobs_see_the_tree_first_on_their_paths():
    env = codecache.with_code_on_paths({"PATH": "/usr/bin", "PYTHONPATH": "/lib"}, ["/c/abc"])
    assert env == {"PATH": "/c/abc:/usr/bin", "PYTHONPATH": "/c/abc:/lib", "PILOT_CODE": "/c/abc"}


def test_a_damaged_chunk_is_dropped_so_the_next_try_can_fetch_it_again(tmp_path, cache: Path):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    blob = shipment.path.read_bytes()
    size = len(blob) // 2 + 1
    base = {"sha256": shipment.sha256, "size": len(blob), "chunk_size": size}
    damaged = bytes([blob[0] ^ 0xFF]) + blob[1:size]

    with pytest.raises(CodeUnavailable, match="corrupt"):
        ready_trees([{**base, "chunks": {0: damaged, 1: blob[size:]}}])

    assert ready_trees([base]) == {"code_missing": {shipment.sha256: []}}
    trees = ready_trees([{**base, "chunks": {0: blob[:size], 1: blob[size:]}}])
    assert Path(trees[shipment.sha256], "mypkg", "__init__.py").exists()


def test_a_tree_thinned_out_by_a_temp_cleaner_is_unpacked_again(tmp_path, cache: Path):
    shipment = build([_package(tmp_path)], tmp_path / "out")
    descriptor = {**shipment.descriptor(), "path": str(shipment.path)}
    tree = Path(ready_trees([descriptor])[shipment.sha256])
    codecache._INTACT.clear()  # as in a new worker process
    (tree / "mypkg" / "tool.sh").unlink()  # what systemd-tmpfiles does to old files

    again = Path(ready_trees([descriptor])[shipment.sha256])

    assert again == tree and (tree / "mypkg" / "tool.sh").exists()
    assert [p.name for p in cache.iterdir() if "damaged" in p.name] == []
