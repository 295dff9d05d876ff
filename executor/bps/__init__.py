"""pilot as a WMS plugin of Rubin's Batch Production Service (``bps``, ``lsst-ctrl-bps``).

A bps config names it::

    wmsServiceClass: executor.bps.PilotService
    computeSite: local          # a pilot site: name or site file

``bps submit`` then hands the ``GenericWorkflow`` to :class:`PilotService`, which
translates it into a pilot job graph (:mod:`executor.bps.translate`), records a run and
starts its driver in the background, like ``pilot submit --detach``. ``bps report``,
``status``, ``cancel``, ``restart`` and ``ping`` read and act on that run through the
monitoring database that ``pilot status`` reads.

The names below load on first use, so ``import executor`` never imports lsst; without
the extra, using them says what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from executor.bps.service import PilotService, PilotWorkflow

INSTALL_HINT = "pip install 'pilot-executor[bps]'"

_EXPORTS = {
    "PilotService": "executor.bps.service",
    "PilotWorkflow": "executor.bps.service",
}


def require_bps() -> None:
    """Import ``lsst.ctrl.bps``, or raise ``ImportError`` saying which extra installs it."""
    try:
        importlib.import_module("lsst.ctrl.bps")
    except ImportError as exc:
        raise ImportError(
            f"pilot's bps plugin needs lsst-ctrl-bps ({exc}); install it with: {INSTALL_HINT}"
        ) from exc


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'executor.bps' has no attribute {name!r}")
    require_bps()
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = ["INSTALL_HINT", "PilotService", "PilotWorkflow", "require_bps"]
