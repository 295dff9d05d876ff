"""Which journal a monitoring database can safely use on the filesystem it lives on.

WAL keeps readers from ever blocking writers, but it coordinates processes through a
memory-mapped ``-shm`` file, which is unsafe when processes on different hosts share
the file over a network filesystem (https://www.sqlite.org/wal.html, "all processes
using a database must be on the same host computer"). On such filesystems pilot falls
back to SQLite's rollback journal, which relies on POSIX locks only.
"""

from __future__ import annotations

import os
from pathlib import Path

# Filesystem types (as /proc/mounts names them) shared between hosts.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph",
        "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.beegfs", "afs", "panfs",
        "pvfs2", "orangefs", "9p", "ncpfs", "fuse.cephfs", "wekafs", "fuse.juicefs",
    }
)  # fmt: skip

MOUNTS = Path("/proc/mounts")


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes (\040 ...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str | os.PathLike, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (e.g. ``ext4``, ``nfs4``).

    Parameters
    ----------
    path
        A file or directory; it need not exist yet (its nearest existing parent counts).
    mounts
        The text of ``/proc/mounts``; read from the system when omitted.

    Returns
    -------
    str or None
        ``None`` when the mount table cannot be read (not Linux).
    """
    if mounts is None:
        try:
            mounts = MOUNTS.read_text()
        except OSError:
            return None
    target = Path(os.path.realpath(path))
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_unescape(fields[1]))
        if (target == point or point in target.parents) and (
            best is None or len(point.parts) >= best[0]
        ):
            # Later lines win a tie: they are mounted over the earlier ones.
            best = (len(point.parts), fields[2])
    return best[1] if best else None


def is_network_filesystem(fstype: str | None) -> bool:
    """Whether ``fstype`` is shared between hosts, where WAL is unsafe."""
    return fstype is not None and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs"))


def journal_mode_for(path: str | os.PathLike, mounts: str | None = None) -> tuple[str, str | None]:
    """``("wal", fstype)`` on a local filesystem, ``("delete", fstype)`` on a network one."""
    fstype = filesystem_type(path, mounts)
    return ("delete" if is_network_filesystem(fstype) else "wal"), fstype
