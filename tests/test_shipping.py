"""Building the code tarball: deterministic, named by its hash, leaving out what git ignores."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.errors import ShippingError
from executor.shipping.tarball import build, collect

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
NAMES = st.text(alphabet="abcdefgh_-.0123", min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..") and not n.endswith(".pyc") and n != "__pycache__"
)


def _prefix_free(tree: dict) -> dict:
    """Drop files whose path is also a directory of another file."""
    return {p: v for p, v in tree.items() if not any(o[: len(p)] == p and o != p for o in tree)}


# A tree: relative file path -> (content, executable).
TREES = st.dictionaries(
    st.lists(NAMES, min_size=1, max_size=3).map(tuple),
    st.tuples(st.binary(max_size=200), st.booleans()),
    min_size=1,
    max_size=12,
).map(_prefix_free)


def _write_tree(root: Path, tree: dict, *, reverse: bool = False, mtime: float = 0) -> Path:
    """Write ``tree`` under ``root/mypkg``."""
    package = root / "mypkg"
    package.mkdir(parents=True)
    for parts, (content, executable) in sorted(tree.items(), reverse=reverse):
        path = package.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o755 if executable else 0o640)
        if mtime:
            os.utime(path, (mtime, mtime))
    return package


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES)
def test_the_same_tree_gives_the_same_hash_wherever_and_whenever_it_is_written(
    tmp_path: Path, tree: dict
):
    scratch = tmp_path / str(time.monotonic_ns())
    first = _write_tree(scratch / "a", tree)
    # Written in the opposite order, at another time, elsewhere, with another umask.
    old_umask = os.umask(0o077)
    try:
        second = _write_tree(scratch / "b", tree, reverse=True, mtime=1_000_000_000)
    finally:
        os.umask(old_umask)

    one = build([first], scratch / "out-a")
    two = build([second], scratch / "out-b")

    assert one.sha256 == two.sha256
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.path.name == f"{one.sha256}.tar.gz"
    shutil.rmtree(scratch)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tree=TREES, choice=st.integers(min_value=0), position=st.integers(min_value=0))
def test_changing_one_byte_changes_the_hash(tmp_path: Path, tree: dict, choice: int, position: int):
    scratch = tmp_path / str(time.monotonic_ns())
    package = _write_tree(scratch / "src", tree)
    files = sorted(p for p in package.rglob("*") if p.is_file())
    before = build([package], scratch / "out-1").sha256

    target = files[choice % len(files)]
    content = bytearray(target.read_bytes() or b"\0")
    index = position % len(content)
    content[index] = (content[index] + 1) % 256
    target.write_bytes(bytes(content))

    assert build([package], scratch / "out-2").sha256 != before
    shutil.rmtree(scratch)


def test_each_source_appears_by_its_own_name_with_executable_bits_kept(tmp_path: Path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    script = tmp_path / "tools" / "run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o700)

    shipment = build([tmp_path / "mypkg", script], tmp_path / "out")

    with tarfile.open(shipment.path) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert set(members) == {"mypkg", "mypkg/__init__.py", "run.sh"}
    assert members["run.sh"].mode == 0o755
    assert members["mypkg/__init__.py"].mode == 0o644
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in members.values()} == {(0, 0, "", 315532800)}
    assert shipment.files == (("mypkg/__init__.py", 0), ("run.sh", script.stat().st_size))


def test_git_metadata_bytecode_and_gitignored_files_stay_home(tmp_path: Path):
    repo = tmp_path / "repo"
    package = repo / "src" / "mypkg"
    for relative in [
        "__init__.py", "core.py", "data/big.fits", "data/keep.fits", "build/out.o",
        "__pycache__/core.cpython-311.pyc", "stale.pyc", "notes/secret.txt", "notes/todo.txt",
    ]:  # fmt: skip
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(relative)
    (repo / ".git").mkdir()
    (repo / ".git" / "config").write_text("[core]")
    (package / "vendored").mkdir()
    (package / "vendored" / ".git").write_text("gitdir: elsewhere")  # a submodule's .git file
    # Rules at the repository's top, in the package, and in a subdirectory.
    (repo / ".gitignore").write_text("*.fits\nbuild/\n")
    (package / ".gitignore").write_text("!keep.fits\n")
    (package / "notes" / ".gitignore").write_text("secret.txt\n")

    names = {entry.name for entry in collect([package])}

    assert "mypkg/core.py" in names
    assert "mypkg/data/keep.fits" in names  # re-included by a deeper rule
    assert "mypkg/notes/todo.txt" in names
    for left_out in [
        "mypkg/data/big.fits", "mypkg/build", "mypkg/build/out.o", "mypkg/__pycache__",
        "mypkg/stale.pyc", "mypkg/notes/secret.txt", "mypkg/vendored/.git",
    ]:  # fmt: skip
        assert left_out not in names


def test_too_much_code_is_refused_naming_the_largest_files(tmp_path: Path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "catalog.parquet").write_bytes(b"x" * 3000)
    (package / "model.bin").write_bytes(b"x" * 2000)

    with pytest.raises(ShippingError) as error:
        build([package], tmp_path / "out", limit=4000)

    message = str(error.value)
    assert "more than the" in message and "limit" in message
    assert message.index("mypkg/catalog.parquet") < message.index("mypkg/model.bin")
    assert ".gitignore" in message and "code_limit" in message
    assert not list((tmp_path / "out").glob("*.tar.gz")) if (tmp_path / "out").exists() else True


def test_links_inside_are_shipped_and_links_outside_are_refused(tmp_path: Path):
    package = tmp_path / "mypkg"
    (package / "sub").mkdir(parents=True)
    (package / "real.py").write_text("x = 1\n")
    (package / "sub" / "alias.py").symlink_to("../real.py")
    assert any(
        e.name == "mypkg/sub/alias.py" and e.link == "../real.py" for e in collect([package])
    )

    (package / "escape").symlink_to("/etc")
    with pytest.raises(ShippingError, match=r"escape is a link to /etc, outside"):
        collect([package])


def test_two_sources_with_one_name_and_missing_sources_are_refused(tmp_path: Path):
    for side in ("a", "b"):
        (tmp_path / side / "mypkg").mkdir(parents=True)
    with pytest.raises(ShippingError, match="would both appear as 'mypkg'"):
        collect([tmp_path / "a" / "mypkg", tmp_path / "b" / "mypkg"])
    with pytest.raises(ShippingError, match="does not exist"):
        collect([tmp_path / "nowhere"])
