"""What every site has, and the control flow every backend shares.

A site file (``site_configs/<name>.yaml``) names a ``backend`` and its options. The
base class validates the options when the file is loaded (not at the first scale-up)
and builds the Parsl executors; a backend module supplies only its provider.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from executor.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """Options every backend understands. YAML keys equal field names.

    Parameters
    ----------
    name
        The site's name (the file's stem).
    backend
        ``local`` (more backends arrive with later work).
    workers
        Worker slots per pilot; ``None`` means one per core of the pilot's machine.
    init_blocks, max_blocks
        Pilots started at once, and the most that may run together.
    address
        Where workers connect back to the driver. Loopback by default, so nothing
        listens on the network unless a site asks for it.
    worker_init
        Shell lines run before a pilot starts its workers.
    """

    backend: ClassVar[str] = "base"

    name: str
    workers: int | None = None
    init_blocks: int = 1
    max_blocks: int = 1
    address: str = "127.0.0.1"
    worker_init: str = ""
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = self.source or f"site {self.name!r}"
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(
                f"{where}: workers: {self.workers!r} must be a whole number >= 1 or 'auto'"
            )
        if not isinstance(self.max_blocks, int) or self.max_blocks < 1:
            raise ConfigError(
                f"{where}: max_blocks: {self.max_blocks!r} must be a whole number >= 1"
            )
        if not isinstance(self.init_blocks, int) or not 0 <= self.init_blocks <= self.max_blocks:
            raise ConfigError(
                f"{where}: init_blocks: {self.init_blocks!r} must be between 0 and max_blocks "
                f"({self.max_blocks})"
            )

    @classmethod
    def from_mapping(cls, name: str, data: dict[str, Any], source: str | None = None) -> SiteConfig:
        """Validate a site file's mapping; unknown keys name the closest valid key."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"name", "source"}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "backend":
                continue
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"valid keys: {', '.join(sorted(fields))}"
                )
                raise ConfigError(
                    f"{source or name}: unknown key {key!r} for a {cls.backend} site; {hint}"
                )
            values[key] = None if value == "auto" else value
        return cls(name=name, source=source, **values)

    # -- what a backend provides ---------------------------------------------------
    def worker_slots(self) -> int:
        """Jobs that may run at once across all pilots."""
        return (self.workers or os.cpu_count() or 1) * self.max_blocks

    def make_provider(self) -> Any:
        raise NotImplementedError

    # -- shared construction -------------------------------------------------------
    def make_executors(self) -> list[Any]:
        """The Parsl executors for this site (one per pool; one pool for now)."""
        from parsl.executors import HighThroughputExecutor

        _put_parsl_commands_on_path()
        return [
            HighThroughputExecutor(
                label="pool",
                provider=self.make_provider(),
                address=self.address,
                max_workers_per_node=self.workers or os.cpu_count() or 1,
                cores_per_worker=1,
                heartbeat_period=5,
                heartbeat_threshold=30,
                poll_period=5,
                encrypted=True,
            )
        ]


def _put_parsl_commands_on_path() -> None:
    """Parsl starts ``interchange.py`` and ``process_worker_pool.py`` from PATH.

    They are installed beside this interpreter; a user who runs ``/venv/bin/pilot``
    without activating the virtualenv would otherwise get FileNotFoundError.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if bin_dir not in path:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
