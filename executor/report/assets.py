"""The plotting library that every run's ``report.html`` shares.

plotly.js is 4.8 MB; inlined into each run's report it made reports the largest files
of small runs. Instead one copy per pilot home, ``assets/plotly-<version>.min.js``
next to ``runs/`` (:attr:`executor.store.paths.Locations.assets`), is written once and
each run's report loads it by a relative path (``../../assets/...``), so a report
still opens offline from its run directory and keeps working when the whole home is
moved or copied. A report written elsewhere (``pilot report RUN --html FILE``)
inlines the library instead: it must open on its own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def plotly_js() -> str:
    """The text of the plotly.js bundled with the installed plotly package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def plotly_asset_name() -> str:
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


def ensure_plotly_asset(assets: Path) -> Path:
    """The shared copy of plotly.js in ``assets``, written first if it is missing.

    Written to a temporary file and renamed into place, so a browser or another driver
    never reads half of it; two drivers racing write the same bytes. Readable by
    everyone who may read the reports (mode 0644).
    """
    target = assets / plotly_asset_name()
    text = plotly_js().encode()
    try:
        if target.stat().st_size == len(text):
            return target
    except FileNotFoundError:
        pass
    assets.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=assets, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text)
            os.fchmod(handle.fileno(), 0o644)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def relative_url(asset: Path, page: Path) -> str:
    """The URL of ``asset`` relative to the HTML file ``page`` (``../../assets/x.js``)."""
    from urllib.parse import quote

    relative = os.path.relpath(asset.resolve(), page.resolve().parent)
    return quote(Path(relative).as_posix())
