"""``pilot report RUN --html FILE``: one self-contained HTML file a person reads at a glance.

The file needs no network to open: plotly.js is inlined once, and each figure is a
JSON block drawn by a short script. A Content-Security-Policy allows only those two
scripts (by hash), so even if a job name slipped through unescaped it could not run.
The report a run writes to its own directory loads the home's one shared copy of
plotly.js by a relative path instead (:mod:`executor.report.assets`); its policy
allows scripts from the page's own origin (``'self'``) and the drawing script's hash.
Every piece of user data (job names, labels, commands, log lines) is HTML-escaped here.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

from executor._version import __version__
from executor.model.states import SHOWN_STATES
from executor.model.units import format_memory
from executor.report.assets import ensure_plotly_asset, plotly_js, relative_url
from executor.report.efficiency import describe as describe_efficiency
from executor.report.efficiency import pilot_efficiency
from executor.report.failures import NAMES_SHOWN, describe_labels, failure_groups, final_failures
from executor.report.figures import run_figures
from executor.report.retries import describe_label, describe_outcome, exit_status, retry_summary
from executor.store import Store
from executor.store.queries import get_run, run_summary

logger = logging.getLogger(__name__)

# Failed attempts listed in the report; `pilot report RUN --json` has them all.
MAX_ATTEMPTS_SHOWN = 500

# Draws every <script type="application/json" data-figure> block with plotly.
_DRAW = """
for (const block of document.querySelectorAll('script[data-figure]')) {
  const spec = JSON.parse(block.textContent);
  const target = document.getElementById(block.dataset.figure);
  if (typeof Plotly === 'undefined') {
    target.textContent = 'plotly.js was not found next to this report; '
      + '`pilot report RUN --html FILE` writes a copy that opens on its own.';
    continue;
  }
  Plotly.newPlot(target, spec.data, spec.layout, {displaylogo: false, responsive: true});
}
"""

FIGURE_TITLES = {
    "gantt": "Timeline: jobs per pilot",
    "busy": "Running jobs and live pilots",
    "runtime": "Runtime per label",
    "memory": "Peak memory per label",
}


def stylesheet() -> str:
    return resources.files("executor.report").joinpath("static/pilot.css").read_text()


def json_for_script(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` are escaped.

    Without this a job named ``</script><script>...`` would end the block early.
    """
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))


def label_table(labels: dict[str, dict[str, int]]) -> str:
    """The per-label table: one row per label, one column per state, and the total."""
    head = "".join(f'<th class="n">{s}</th>' for s in SHOWN_STATES)
    rows = []
    totals = dict.fromkeys(SHOWN_STATES, 0)
    for label, counts in labels.items():
        cells = []
        for state in SHOWN_STATES:
            n = counts.get(state, 0)
            totals[state] += n
            css = f"n state-{state}" if n else "n zero"
            cells.append(f'<td class="{css}">{n}</td>')
        expected = sum(counts.get(s, 0) for s in SHOWN_STATES)
        rows.append(f"<tr><td>{_e(label)}</td>{''.join(cells)}<td class=n>{expected}</td></tr>")
    if len(labels) > 1:
        sums = "".join(f'<td class="n">{totals[s]}</td>' for s in SHOWN_STATES)
        rows.append(
            f'<tr class="total"><td>total</td>{sums}<td class=n>{sum(totals.values())}</td></tr>'
        )
    return (
        f'<table id="labels"><thead><tr><th>label</th>{head}<th class="n">expected</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def failures_section(groups: list[dict[str, Any]]) -> str:
    """Each failure group: its cause, labels, jobs, an example's message, stderr and the
    command that reproduces it."""
    if not any(group["count"] for group in groups):
        parts = ['<p class="state-succeeded">no failed jobs</p>']
    else:
        parts = []
    for group in groups:
        recovered, example = group["recovered"], group["example"]
        names = [_e(name) for name in group["jobs"]] + [
            f'{_e(name)} <span class="state-succeeded">(recovered)</span>'
            for name in group["recovered_jobs"]
        ]
        more = group["count"] + recovered - len(names)
        css = "state-failed" if group["count"] else "state-blocked"
        outcome = (
            f'<p class="meta">{group["count"]} failed for good, {recovered} recovered '
            "(succeeded on a later attempt)</p>"
            if recovered
            else ""
        )
        which = _e(example["job"])
        if example.get("recovered"):
            which += f" (attempt {example['attempts']}, recovered)"
        parts.append(
            f'<div class="failure"><h3><span class="{css}">{group["count"] + recovered} × '
            f"{_e(group['cause'])}</span> in {_e(describe_labels(group['labels']))}</h3>"
            + outcome
            + f'<p class="meta">jobs: {", ".join(names)}{f" and {more} more" if more else ""}</p>'
            + (f'<p class="meta">{_e(example["message"])}</p>' if example["message"] else "")
            + (
                f'<p class="meta">stderr of {which}, last lines:</p>'
                f'<pre class="log">{_e(chr(10).join(example["stderr_tail"]))}</pre>'
                if example["stderr_tail"]
                else ""
            )
            + (
                f'<p class="meta">reproduce {which}:</p>'
                f'<pre class="log reproduce">{_e(group["reproduce"])}</pre>'
                if group.get("reproduce")
                else ""
            )
            + "</div>"
        )
    return "".join(parts)


def retries_section(summary: dict[str, Any]) -> str:
    """Per label the failed attempts and recoveries; each failed attempt of retried jobs."""
    labels = summary["labels"]
    if not any(entry["failed"] for entry in labels.values()):
        return '<p class="state-succeeded">no failed attempts</p>'
    rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{_e(describe_label(entry))}</td></tr>"
        for label, entry in labels.items()
    )
    parts = [
        '<table id="attempts"><thead><tr><th>label</th><th>attempts</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    ]
    attempts = [(job, a) for job in summary["jobs"] for a in job["failed_attempts"]]
    if attempts:
        head = "".join(
            f"<th>{column}</th>"
            for column in ("job", "label", "outcome", "attempt", "failure", "exit status",
                           "memory requested", "peak memory", "pool", "message")
        )  # fmt: skip
        cells = []
        for job, attempt in attempts[:MAX_ATTEMPTS_SHOWN]:
            css = "state-succeeded" if job["recovered"] else f"state-{_e(job['state'])}"
            cells.append(
                f"<tr><td>{_e(job['job'])}</td><td>{_e(job['label'])}</td>"
                f'<td class="{css}">{_e(describe_outcome(job))}</td>'
                f'<td class="n">{attempt["attempt"]}</td>'
                f"<td>{_e(attempt['failure_class'] or 'unknown')}</td>"
                f"<td>{_e(exit_status(attempt))}</td>"
                f'<td class="n">{format_memory(attempt["memory_mb"])}</td>'
                f'<td class="n">{format_memory(attempt["peak_rss_mb"])}</td>'
                f"<td>{_e(attempt['pool'] or '-')}</td><td>{_e(attempt['message'])}</td></tr>"
            )
        parts.append(
            f"<h3>Jobs that needed more than one attempt ({len(summary['jobs'])})</h3>"
            f'<table id="retried"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(cells)}</tbody></table>"
        )
        if len(attempts) > MAX_ATTEMPTS_SHOWN:
            parts.append(
                f'<p class="meta">... and {len(attempts) - MAX_ATTEMPTS_SHOWN} more failed '
                "attempts (all are in <code>pilot report RUN --json</code>)</p>"
            )
    return "".join(parts)


def render(
    store: Store, run_id: str, *, now: float | None = None, plotly_src: str | None = None
) -> str:
    """The whole report of one run as an HTML document.

    Parameters
    ----------
    plotly_src
        The URL of plotly.js (relative to the report) when the page loads it from a
        file; ``None`` inlines it, and the page needs nothing else.
    """
    now = time.time() if now is None else now
    run = get_run(store, run_id)
    summary = run_summary(store, run)
    retries = retry_summary(store, run["id"])
    groups = failure_groups(
        run, final_failures(store, run["id"]), retries["jobs"], examples=NAMES_SHOWN
    )
    figures = run_figures(store, run, now=now)
    blocks = "".join(
        f"<h2>{_e(title)}</h2>"
        f'<div class="figure" id="figure-{name}"></div>'
        f'<script type="application/json" data-figure="figure-{name}">'
        f"{json_for_script(figures[name])}</script>"
        for name, title in FIGURE_TITLES.items()
    )
    if plotly_src is None:
        inlined = plotly_js()
        library, allowed = f"<script>{inlined}</script>", _hash(inlined)
    else:
        # Not the file's hash with an `integrity` attribute: browsers refuse to check
        # integrity of file:// scripts and block them.
        library = f'<script src="{_e(plotly_src)}"></script>'
        allowed = "'self'"
    policy = (
        f"default-src 'none'; script-src {allowed} {_hash(_DRAW)}; "
        "style-src 'unsafe-inline'; img-src data:; font-src data:"
    )
    ended = run["ended"] or now
    finished = f"ended {_when(run['ended'])}" if run["ended"] else "still running"
    counts = ", ".join(f"{n} {state}" for state, n in summary["jobs"].items() if n)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pilot report {_e(run["id"])}: {_e(run["name"])}</title>
<style>{stylesheet()}</style>
</head><body>
<h1>run {_e(run["id"])}: {_e(run["name"])}
 <span class="state-{_e(summary["state"])}">{_e(summary["state"])}</span></h1>
<p class="meta">site {_e(run["site"])} · owner {_e(run["owner"])} · host {_e(run["host"])} ·
started {_when(run["created"])} · {finished} · {ended - run["created"]:.1f}s</p>
<p>jobs: {summary["total"]} ({_e(counts)})</p>
<p class="meta" id="efficiency">{_e(describe_efficiency(pilot_efficiency(store, run, now=now)))}</p>
{f'<p class="meta">note: {_e(run["message"])}</p>' if run["message"] else ""}
<h2>Jobs per label</h2>
{label_table(summary["labels"])}
<h2>Failures by cause</h2>
{failures_section(groups)}
<h2>Failed attempts and retries</h2>
{retries_section(retries)}
{blocks}
<p class="meta">written {_when(now)} by pilot {_e(__version__)}</p>
{library}
<script>{_DRAW}</script>
</body></html>
"""


def write_report(
    store: Store, run_id: str, path: str | os.PathLike, *, assets: Path | None = None
) -> Path:
    """Write the report of ``run_id`` to ``path`` (group-readable, never world-writable).

    With ``assets`` (a directory) the report loads the shared plotly.js there, written
    first if missing, by a path relative to ``path``; without it, plotly.js is inlined.
    """
    path = Path(path)
    src = None if assets is None else relative_url(ensure_plotly_asset(assets), path)
    text = render(store, run_id, plotly_src=src)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    # Readers (a browser refreshing it) never see half a file.
    os.replace(partial, path)
    return path


def write_final_report(
    store: Store, run_id: str, path: Path, *, assets: Path | None = None
) -> Path | None:
    """Write the report when a run ends; on any error log a warning and return ``None``.

    A report is a convenience: failing to write one (a full disk, a bug here) must
    never change a run's outcome or exit code.
    """
    try:
        return write_report(store, run_id, path, assets=assets)
    except Exception as exc:
        logger.warning("could not write the HTML report %s: %s", path, exc)
        return None
