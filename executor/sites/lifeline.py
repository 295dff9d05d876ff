"""Tie Parsl's interchange to the life of the driver that started it.

Parsl 2026.10 leaves the interchange running when its driver is killed with SIGKILL,
and the worker pools keep talking to it, so a dead driver's pilots would hold their
nodes until walltime. The interchange is started through a tiny trampoline that asks
the kernel to send it SIGTERM when the driver dies (``PR_SET_PDEATHSIG``) and then
becomes the interchange (``exec``). Once the interchange is gone, every worker pool
exits on its own after missing ``heartbeat_threshold`` seconds of contact.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

_TRAMPOLINE = """
import ctypes, os, signal, sys
driver = int(sys.argv[1])
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
if os.getppid() != driver:  # the driver died before the line above took effect
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def interchange_command() -> list[str]:
    """``interchange_launch_cmd`` for a HighThroughputExecutor started by this process."""
    beside_python = Path(sys.executable).parent / "interchange.py"
    interchange = shutil.which("interchange.py") or str(beside_python)
    if not sys.platform.startswith("linux"):
        return [interchange]  # PR_SET_PDEATHSIG is Linux-only
    return [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), sys.executable, interchange]
