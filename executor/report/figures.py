"""The plots of the HTML report and the dashboard, built with plotly.

plotly draws interactive charts from a JSON description in the browser: zooming into a
Gantt chart of thousands of jobs works offline, and the same figure JSON serves the
static report (inlined) and the dashboard (fetched). Each function returns a figure as a
JSON-ready dict, written as plain data in plotly's figure schema: building them as
``plotly.graph_objects`` validated every field and loaded the template on first use,
0.25 s of a one-job run's exit. Only the template's JSON comes from the plotly package.

User data (labels, job names, hosts) goes into figures HTML-escaped: plotly renders a
subset of HTML in text and shows entities as characters, so an escaped
``<script>`` appears as text.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from executor.report import activity
from executor.store import Store

_LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "height": 360,
    "template": "plotly_white",
    "legend": {"orientation": "h", "y": -0.2},
}


_TEMPLATE: dict[str, Any] = {}


def _template(name: str) -> dict[str, Any]:
    """A plotly template as the figure JSON holds it, read from plotly's package data."""
    if name not in _TEMPLATE:
        from importlib import resources

        path = resources.files("plotly").joinpath("package_data", "templates", f"{name}.json")
        _TEMPLATE[name] = json.loads(path.read_text())
    return _TEMPLATE[name]


def _figure(data: list[dict[str, Any]], title: str, **layout: Any) -> dict[str, Any]:
    merged = {**_LAYOUT, "title": {"text": title}, **layout}
    merged["template"] = _template(merged["template"])
    return {"data": data, "layout": merged}


def _text(value: Any) -> str:
    return html.escape(str(value))


def gantt(store: Store, run_id: str, *, now: float, origin: float) -> dict[str, Any]:
    """Each attempt as a bar in its pilot's slot lane, coloured by label; failures in red."""
    rows, total = activity.timeline_attempts(store, run_id, now=now)
    lanes = activity.assign_lanes(rows)
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for row in lanes:
        key = "failed attempts" if row["state"] == "failed" else row["label"]
        by_trace.setdefault(key, []).append(row)
    data = []
    for key, items in by_trace.items():
        data.append(
            dict(
                type="bar",
                name=_text(key),
                orientation="h",
                base=[r["start"] - origin for r in items],
                x=[max(r["end"] - r["start"], 0.001) for r in items],
                y=[f"pilot {_text(r['pilot'])} · {r['slot']}" for r in items],
                hovertext=[
                    f"{_text(r['job'])} (attempt {r['attempt']}, {_text(r['state'])})<br>"
                    f"{r['end'] - r['start']:.1f}s on {_text(r['host'] or '?')}"
                    for r in items
                ],
                hoverinfo="text",
                marker={"color": "#d62728"} if key == "failed attempts" else {},
            )
        )
    shown = f" (first {len(rows)} of {total} attempts)" if total > len(rows) else ""
    lanes_n = len({(r["pilot"], r["slot"]) for r in lanes})
    return _figure(
        data,
        f"Jobs per pilot{shown}",
        barmode="overlay",
        height=max(300, min(1200, 80 + 14 * lanes_n)),
        xaxis={"title": {"text": "seconds since the run started"}},
        yaxis={"type": "category", "autorange": "reversed", "showticklabels": lanes_n <= 60},
    )


def busy(store: Store, run_id: str, *, now: float, origin: float) -> dict[str, Any]:
    """Running jobs and live pilots over time."""
    series = activity.occupancy(store, run_id, now=now)
    pilots_note = "" if series["pilot_source"] == "pilots" else " (from the jobs they ran)"
    data = [
        dict(
            type="scatter",
            name="running jobs",
            x=[t - origin for t, _ in series["running"]],
            y=[n for _, n in series["running"]],
            line={"shape": "hv"},
            mode="lines",
        ),
        dict(
            type="scatter",
            name=f"live pilots{pilots_note}",
            x=[t - origin for t, _ in series["pilots"]],
            y=[n for _, n in series["pilots"]],
            line={"shape": "hv", "dash": "dot"},
            mode="lines",
            yaxis="y2",
        ),
    ]
    return _figure(
        data,
        "How busy the allocation was",
        xaxis={"title": {"text": "seconds since the run started"}},
        yaxis={"title": {"text": "running jobs"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "pilots"}, "overlaying": "y", "side": "right",
            "rangemode": "tozero", "dtick": 1,
        },
    )  # fmt: skip


_NOT_RECORDED = {
    "text": "no peak memory recorded for this run", "showarrow": False,
    "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
}  # fmt: skip


def _boxes(stats: dict[str, dict[str, Any]], key: str) -> list[dict[str, Any]]:
    boxes = []
    for label, per in stats.items():
        summary = per[key]
        if summary is None:
            continue
        # Precomputed five-number summaries: the figure stays small for huge runs.
        name = f"{_text(label)} ({summary['n']})"
        boxes.append(
            dict(
                type="box", name=name, x=[name],
                q1=[summary["q1"]], median=[summary["median"]], q3=[summary["q3"]],
                lowerfence=[summary["min"]], upperfence=[summary["max"]],
                mean=[summary["mean"]], boxpoints=False,
            )
        )  # fmt: skip
    return boxes


def distributions(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Runtime and peak-memory box plots per label (memory is empty when not recorded)."""
    stats = activity.distributions(store, run_id)
    runtime = _boxes(stats, "runtime")
    memory = _boxes(stats, "memory")
    return {
        "runtime": _figure(
            runtime,
            "Runtime per label (succeeded attempts)",
            yaxis={"title": {"text": "seconds"}, "rangemode": "tozero"},
            showlegend=False,
        ),
        "memory": _figure(
            memory,
            "Peak memory per label",
            yaxis={"title": {"text": "MB"}, "rangemode": "tozero", "visible": bool(memory)},
            xaxis={"visible": bool(memory)},
            showlegend=False,
            height=_LAYOUT["height"] if memory else 120,
            annotations=[] if memory else [_NOT_RECORDED],
        ),
    }


def run_figures(store: Store, run: dict[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """Every plot of one run, keyed ``gantt``, ``busy``, ``runtime``, ``memory``."""
    now = time.time() if now is None else now
    origin = run.get("created") or now
    return {
        "gantt": gantt(store, run["id"], now=now, origin=origin),
        "busy": busy(store, run["id"], now=now, origin=origin),
        **distributions(store, run["id"]),
    }
