"""Terminal tables for status, report and validate (rich), with user data never parsed as markup.

Job names, labels, commands and log lines are user data: they are wrapped in
``rich.text.Text`` so that text such as ``[bold]`` or ``[link=...]`` is shown as is.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from executor.states import JOB_STATES
from executor.units import format_duration

_STATE_STYLE = {
    "succeeded": "green", "failed": "red", "blocked": "yellow", "cancelled": "magenta",
    "running": "cyan", "driver_lost": "red bold",
}  # fmt: skip


def state_text(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def age(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return format_duration(max(0.0, time.time() - timestamp)) + " ago"


def label_table(labels: dict[str, dict[str, int]], *, title: str | None = None) -> Table:
    """One row per label, one column per state, and the expected total (like ``bps report``)."""
    table = Table(title=title, title_justify="left")
    table.add_column("label")
    for state in JOB_STATES:
        table.add_column(state, justify="right")
    table.add_column("expected", justify="right")
    totals = dict.fromkeys(JOB_STATES, 0)
    for label, counts in labels.items():
        cells = [Text(label)]
        for state in JOB_STATES:
            totals[state] += counts.get(state, 0)
            cells.append(_count(counts.get(state, 0), state))
        cells.append(Text(str(sum(counts.get(s, 0) for s in JOB_STATES))))
        table.add_row(*cells)
    if len(labels) > 1:
        table.add_row(
            Text("total", style="bold"),
            *(_count(totals[s], s) for s in JOB_STATES),
            Text(str(sum(totals.values())), style="bold"),
        )
    return table


def _count(n: int, state: str) -> Text:
    if not n:
        return Text("0", style="dim")
    return Text(str(n), style=_STATE_STYLE.get(state, ""))


def runs_table(summaries: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("run", "name", "state", "site", "done", "failed", "owner", "started"):
        table.add_column(
            column,
            justify="right" if column in ("done", "failed") else "left",
            no_wrap=column == "run",
        )
    for s in summaries:
        jobs = s["jobs"]
        done = jobs["succeeded"]
        table.add_row(
            Text(s["run"]), Text(s["name"]), state_text(s["state"]), Text(s["site"]),
            Text(f"{done}/{s['total']}"),
            _count(jobs["failed"] + jobs["blocked"], "failed"),
            Text(s["owner"]), Text(age(s["created"])),
        )  # fmt: skip
    return table


def run_status(summary: dict[str, Any]) -> Group:
    head = Text.assemble(
        ("run ", "bold"), (summary["run"], "bold"), "  ", (summary["name"], ""), "  ",
        state_text(summary["state"]),
        f"  site {summary['site']}  started {age(summary['created'])}",
    )  # fmt: skip
    parts: list[Any] = [head]
    if summary["state"] == "driver_lost":
        parts.append(Text(
            f"the driver stopped without finishing (last heartbeat {age(summary['heartbeat'])}); "
            f"`pilot restart {summary['run']}` continues it", style="red",
        ))  # fmt: skip
    if summary.get("message"):
        parts.append(Text(f"note: {summary['message']}"))
    counts = ", ".join(f"{n} {state}" for state, n in summary["jobs"].items() if n)
    parts.append(Text(f"jobs: {summary['total']} ({counts})"))
    parts.append(label_table(summary["labels"]))
    return Group(*parts)


def report(data: dict[str, Any]) -> Group:
    parts: list[Any] = [
        Text.assemble(("run ", "bold"), (data["run"], "bold"), "  ", data["name"], "  ",
                      state_text(data["state"])),
        label_table(data["labels"]),
    ]  # fmt: skip
    if not data["failed"]:
        parts.append(Text("no failed jobs", style="green"))
    for failure in data["failed"]:
        why = failure["message"] or failure["failure_class"] or "failed"
        parts.append(Text.assemble(
            ("\nFAILED ", "red bold"), (failure["job"], "bold"), f"  label {failure['label']}  ",
            f"attempts {failure['attempts']}  {why}",
        ))  # fmt: skip
        parts.append(Text(f"  command: {failure['command']}", style="dim"))
        if failure["stderr_tail"]:
            parts.append(Text(f"  stderr ({failure['stderr']}), last lines:", style="dim"))
            parts.append(Text("\n".join("    " + line for line in failure["stderr_tail"])))
    return Group(*parts)


def print_to(console: Console, renderable: Any) -> None:
    console.print(renderable, soft_wrap=False, highlight=False)
