"""Build the user's code into one deterministic tarball, named by its sha256.

``code: [./mypkg, ./scripts/run.sh]`` in a workflow lists directories and files;
each appears by its own name at the top of the unpacked tree, so ``import mypkg``
works on the worker and ``run.sh`` is on its ``PATH``. The same tree always gives
the same bytes, whatever the clock, owner or umask: entries are sorted, and
mtimes, owners and permissions are fixed (executable or not is all that is kept).

Left out: ``.git``, ``__pycache__``, ``*.pyc`` and whatever the ``.gitignore`` files
of the directory (and of its git repository above it) exclude. A tree larger than
the limit is refused, naming its largest files.

The worker's side (verify, unpack, cache) is :mod:`executor.worker.codecache`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.errors import ShippingError
from executor.model.units import format_bytes

# Uncompressed bytes a shipment may hold unless the workflow says otherwise (code_limit).
DEFAULT_LIMIT_BYTES = 100_000_000
# 1980-01-01, the earliest date zip can store: a fixed, plausible mtime for every entry.
FIXED_MTIME = 315532800
ALWAYS_EXCLUDED_NAMES = frozenset({".git", "__pycache__"})
ALWAYS_EXCLUDED_SUFFIXES = (".pyc",)


@dataclass(frozen=True)
class Entry:
    """One member of the tarball: where it goes, where it comes from, what it is."""

    name: str  # path inside the tarball, POSIX separators
    source: Path
    kind: str  # "file", "dir" or "link"
    size: int = 0
    executable: bool = False
    link: str = ""


@dataclass(frozen=True)
class Shipment:
    """A built tarball: its hash, where it is, and what it holds."""

    sha256: str
    path: Path
    size: int  # bytes of the compressed tarball
    content_bytes: int  # bytes of the files in it
    files: tuple[tuple[str, int], ...]  # (name in the tree, bytes), sorted
    sources: tuple[str, ...]

    def descriptor(self) -> dict[str, Any]:
        """What a worker needs to find or receive this tarball (see codecache)."""
        return {"sha256": self.sha256, "size": self.size}

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256, "path": str(self.path), "size": self.size,
            "content_bytes": self.content_bytes, "files": [list(f) for f in self.files],
            "sources": list(self.sources),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shipment:
        return cls(
            sha256=data["sha256"], path=Path(data["path"]), size=data["size"],
            content_bytes=data["content_bytes"], files=tuple(tuple(f) for f in data["files"]),
            sources=tuple(data["sources"]),
        )  # fmt: skip


def collect(sources: Sequence[Path]) -> list[Entry]:
    """Every entry to ship from ``sources``, sorted by name; nothing is read yet.

    Raises
    ------
    ShippingError
        A source is missing or unreadable, two sources share a name, or a link
        points outside its source directory.
    """
    entries: list[Entry] = []
    seen: dict[str, Path] = {}
    for source in sources:
        source = Path(source)
        top = source.name
        if top in seen:
            raise ShippingError(
                f"code: {seen[top]} and {source} would both appear as {top!r} on the worker; "
                "rename one, or ship their common parent directory"
            )
        seen[top] = source
        if source.is_symlink() or not source.exists():
            raise ShippingError(
                f"code: {source} does not exist (or is a link); list real directories or files"
            )
        if source.is_file():
            entries.append(_file_entry(top, source))
        else:
            entries.extend(_walk(source))
    entries.sort(key=lambda entry: entry.name)
    return entries


def _walk(root: Path) -> Iterable[Entry]:
    ignore = _Gitignore(root)
    yield Entry(name=root.name, source=root, kind="dir")
    for directory, dirnames, filenames in os.walk(root, onerror=_raise):
        here = Path(directory)
        relative_dir = here.relative_to(root)
        kept_dirs = []
        for name in sorted(dirnames):
            path = here / name
            relative = (relative_dir / name).as_posix()
            if name in ALWAYS_EXCLUDED_NAMES or ignore.excludes(path, is_dir=True):
                continue
            if path.is_symlink():
                yield _link_entry(root, path, relative)
                continue
            kept_dirs.append(name)
            yield Entry(name=f"{root.name}/{relative}", source=path, kind="dir")
        dirnames[:] = kept_dirs  # os.walk descends only into these
        for name in sorted(filenames):
            path = here / name
            relative = (relative_dir / name).as_posix()
            if (
                name in ALWAYS_EXCLUDED_NAMES  # a submodule's `.git` is a file
                or name.endswith(ALWAYS_EXCLUDED_SUFFIXES)
                or ignore.excludes(path, is_dir=False)
            ):
                continue
            if path.is_symlink():
                yield _link_entry(root, path, relative)
            else:
                yield _file_entry(f"{root.name}/{relative}", path)


def _file_entry(name: str, path: Path) -> Entry:
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ShippingError(
            f"code: {path} is not a regular file (a socket, pipe or device); "
            "remove it or add it to .gitignore"
        )
    if not os.access(path, os.R_OK):
        raise ShippingError(
            f"code: cannot read {path}; fix its permissions or add it to .gitignore"
        )
    return Entry(
        name=name, source=path, kind="file", size=info.st_size,
        executable=bool(info.st_mode & 0o111),
    )  # fmt: skip


def _link_entry(root: Path, path: Path, relative: str) -> Entry:
    target = os.readlink(path)
    landing = Path(os.path.normpath(path.parent.absolute() / target))
    root_abs = Path(os.path.normpath(root.absolute()))
    if not landing.is_relative_to(root_abs):
        raise ShippingError(
            f"code: {path} is a link to {target}, outside {root}; links are shipped only when "
            "they point inside the shipped directory: copy what it points to into "
            f"{root}, list it under code: itself, or add the link to .gitignore"
        )
    # Stored relative, so it points inside the tree wherever the tree is unpacked.
    relative_target = os.path.relpath(landing, Path(os.path.normpath(path.parent.absolute())))
    return Entry(name=f"{root.name}/{relative}", source=path, kind="link", link=relative_target)


def _raise(error: OSError) -> None:
    raise ShippingError(f"code: cannot read {error.filename}: {error.strerror}")


class _Gitignore:
    """The ``.gitignore`` rules that apply inside one shipped directory.

    Files are read from the enclosing git repository's top (if any) down to each
    directory; a deeper file's rules win, and the last matching rule wins, as in git.
    """

    def __init__(self, root: Path):
        self.root = root.absolute()
        top = _repository_top(self.root)
        self._specs: dict[Path, Any] = {}
        # Rules of the repository's directories above the shipped one (none when the
        # shipped directory is itself the top of a repository or submodule).
        above = _between(top, self.root.parent) if top and top != self.root else []
        self._above = [self._spec(d) for d in above]

    def _spec(self, directory: Path) -> tuple[Path, Any] | None:
        if directory not in self._specs:
            spec = None
            path = directory / ".gitignore"
            if path.is_file():
                import pathspec

                try:
                    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError as exc:
                    raise ShippingError(f"code: cannot read {path}: {exc.strerror}") from exc
                spec = pathspec.GitIgnoreSpec.from_lines(lines)
            self._specs[directory] = spec
        spec = self._specs[directory]
        return (directory, spec) if spec is not None else None

    def excludes(self, path: Path, *, is_dir: bool) -> bool:
        path = path.absolute()
        specs = [*self._above, *(self._spec(d) for d in _between(self.root, path.parent))]
        verdict = False
        for item in specs:
            if item is None:
                continue
            directory, spec = item
            relative = path.relative_to(directory).as_posix() + ("/" if is_dir else "")
            result = spec.check_file(relative)
            if result.include is not None:
                verdict = result.include
        return verdict


def _repository_top(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def _between(top: Path, bottom: Path) -> list[Path]:
    """``top``, then each directory down to ``bottom`` (inclusive)."""
    parts = bottom.relative_to(top).parts
    return [top.joinpath(*parts[:i]) for i in range(len(parts) + 1)]


def check_size(entries: Sequence[Entry], limit: int) -> int:
    """Return the total bytes of the files; refuse more than ``limit``, naming the largest."""
    total = sum(entry.size for entry in entries)
    if total > limit:
        largest = sorted(entries, key=lambda e: e.size, reverse=True)[:5]
        listing = ", ".join(f"{e.name} ({format_bytes(e.size)})" for e in largest if e.size)
        raise ShippingError(
            f"code: the shipped files hold {format_bytes(total)}, more than the "
            f"{format_bytes(limit)} limit; largest: {listing}. Move data out of the code "
            "directories, add it to .gitignore, or raise `code_limit:` in the workflow"
        )
    return total


def write_tarball(entries: Sequence[Entry], handle: Any) -> None:
    """Write ``entries`` as a gzipped tar whose bytes depend only on names and contents."""
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif entry.kind == "link":
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.link
                archive.addfile(info)
            else:
                info.mode = 0o755 if entry.executable else 0o644
                with open(entry.source, "rb") as content:
                    data = content.read()
                info.size = len(data)  # as read, even if the file changed since collect()
                archive.addfile(info, io.BytesIO(data))


def build(sources: Sequence[Path], into: Path, *, limit: int = DEFAULT_LIMIT_BYTES) -> Shipment:
    """Build the tarball of ``sources`` into ``into/<sha256>.tar.gz``; return its description.

    Building the same tree twice gives the same file, so a second build is free to
    replace the first.
    """
    entries = collect(sources)
    content_bytes = check_size(entries, limit)
    into.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=into, prefix=".code-", suffix=".tar.gz")
    try:
        with os.fdopen(fd, "wb") as handle:
            write_tarball(entries, handle)
        digest = hashlib.sha256(Path(temporary).read_bytes()).hexdigest()
        final = into / f"{digest}.tar.gz"
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Shipment(
        sha256=digest,
        path=final,
        size=final.stat().st_size,
        content_bytes=content_bytes,
        files=tuple((e.name, e.size) for e in entries if e.kind == "file"),
        sources=tuple(str(Path(s).absolute()) for s in sources),
    )


def save_manifest(shipment: Shipment, run_dir: Path) -> None:
    (run_dir / "code.json").write_text(json.dumps(shipment.to_dict(), indent=1))


def load_manifest(run_dir: Path) -> Shipment | None:
    """The shipment saved with a run (a restart ships the code as it was at submit)."""
    path = run_dir / "code.json"
    if not path.exists():
        return None
    return Shipment.from_dict(json.loads(path.read_text()))
