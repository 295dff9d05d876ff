"""Terminal tables for status, report and validate (rich), with user data never parsed as markup.

Job names, labels, commands and log lines are user data: they are wrapped in
``rich.text.Text`` so that text such as ``[bold]`` or ``[link=...]`` is shown as is.
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, JustifyMethod
from rich.table import Table
from rich.text import Text

from executor.model.names import natural_key
from executor.model.states import SHOWN_STATES
from executor.model.units import format_duration, format_memory
from executor.report.efficiency import describe as describe_efficiency
from executor.report.failures import NAMES_SHOWN, describe_labels
from executor.report.palette import STATE_STYLE, StateBar, done
from executor.report.retries import describe_attempt, describe_label, describe_outcome

# Failed jobs listed one by one in the text report; JSON has them all.
MAX_FAILURES_SHOWN = 20


class _PipeSafeBox(box.Box):
    """A rule under the header on a terminal; the same in ASCII when piped or redirected."""

    def substitute(self, options: ConsoleOptions, safe: bool = True) -> box.Box:
        return super().substitute(options, safe) if options.is_terminal else _ASCII_HEAD


_ASCII_HEAD = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)
_HEAD = _PipeSafeBox("    \n    \n ── \n    \n    \n    \n    \n    \n")


def _table(**options: Any) -> Table:
    """A table that fits 80 columns: no side borders, one space between columns.

    Columns of states, counts and ``N/M`` figures are ``no_wrap`` with a minimum width
    and take the room they need; free text (names, labels, hosts) folds into the rest.
    """
    return Table(box=_HEAD, show_edge=False, padding=0, title_justify="left", **options)


def _fixed(
    table: Table, header: str, *, min_width: int = 0, justify: JustifyMethod = "right"
) -> None:
    table.add_column(header, justify=justify, no_wrap=True, min_width=max(len(header), min_width))


def _free(table: Table, header: str) -> None:
    table.add_column(header, overflow="fold")


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def age(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return format_duration(max(0.0, time.time() - timestamp)) + " ago"


def label_table(labels: dict[str, dict[str, int]], *, title: str | None = None) -> Table:
    """One row per label, one column per state, and the expected total (like ``bps report``)."""
    table = _table(title=title)
    _free(table, "label")
    for state in SHOWN_STATES:
        _fixed(table, state)
    _fixed(table, "expected")
    totals = dict.fromkeys(SHOWN_STATES, 0)
    for label, counts in labels.items():
        cells = [Text(label)]
        for state in SHOWN_STATES:
            totals[state] += counts.get(state, 0)
            cells.append(_count(counts.get(state, 0), state))
        cells.append(Text(str(sum(counts.get(s, 0) for s in SHOWN_STATES))))
        table.add_row(*cells)
    if len(labels) > 1:
        table.add_row(
            Text("total", style="bold"),
            *(_count(totals[s], s) for s in SHOWN_STATES),
            Text(str(sum(totals.values())), style="bold"),
        )
    return table


def _count(n: int, state: str) -> Text:
    if not n:
        return Text("0", style="dim")
    return Text(str(n), style=STATE_STYLE.get(state, ""))


def runs_table(summaries: list[dict[str, Any]]) -> Table:
    """One row per run; ``done`` counts jobs in a final state (``report.palette``)."""
    table = _table()
    _fixed(table, "run", justify="left")
    _free(table, "name")
    _fixed(table, "state", min_width=len("driver_lost"), justify="left")
    _free(table, "site")
    _fixed(table, "done")
    _fixed(table, "failed")
    _free(table, "owner")
    _free(table, "host")
    _fixed(table, "started", justify="left")
    for s in summaries:
        jobs = s["jobs"]
        table.add_row(
            Text(s["run"]), Text(s["name"]), state_text(s["state"]), Text(s["site"]),
            _progress(done(jobs), s["total"]),
            _count(jobs["failed"] + jobs["blocked"], "failed"),
            Text(s["owner"]), Text(s["host"]), Text(age(s["created"])),
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
    parts.append(progress_table(summary["labels"]))
    if summary.get("pilots"):
        parts.append(pilot_table(summary["pilots"]))
    return Group(*parts)


def progress_table(labels: dict[str, dict[str, int]]) -> Table:
    """Per label (and for all), a bar with one segment per state, and ``done/total``."""
    table = _table(title="progress (done: succeeded, failed, blocked or cancelled)")
    _free(table, "label")
    table.add_column("", no_wrap=True, min_width=BAR_WIDTH)
    _fixed(table, "done")
    rows = [(Text(label), counts) for label, counts in labels.items()]
    if len(labels) > 1:
        overall: dict[str, int] = {}
        for counts in labels.values():
            for state, n in counts.items():
                overall[state] = overall.get(state, 0) + n
        rows.append((Text("all", style="bold"), overall))
    for name, counts in rows:
        total = sum(counts.values())
        table.add_row(name, StateBar(counts, BAR_WIDTH), _progress(done(counts), total))
    return table


# Cells of the bars in `pilot status`: fits 80 columns beside a label and `N/M`.
BAR_WIDTH = 30


def _progress(finished: int, total: int) -> Text:
    # Plain: all done may still mean all failed.
    return Text(f"{finished}/{total}")


def pilot_table(pilots: list[dict[str, Any]]) -> Table:
    """One row per pilot (Parsl block): its batch job, state, node, cores and jobs run."""
    table = _table(title="pilots")
    for column in ("pool", "block", "batch job", "state", "node", "cores", "attempts", "ran for"):
        if column in ("pool", "node", "batch job"):
            _free(table, column)
        else:
            _fixed(table, column, justify="right" if column in ("cores", "attempts") else "left")
    for pilot in pilots:
        ran = (pilot["end"] or time.time()) - pilot["start"] if pilot["start"] else None
        table.add_row(
            Text(pilot["pool"]), Text(pilot["block_id"]), Text(pilot["job_id"] or "-"),
            Text(pilot["state"], style=_PILOT_STYLE.get(pilot["state"], "")),
            Text(pilot["node"] or "-"), Text(str(pilot["cores"] or "-")),
            Text(str(pilot["attempts"])), Text(format_duration(ran)),
        )  # fmt: skip
    return table


_PILOT_STYLE = {"running": "cyan", "failed": "red", "missing": "red", "timeout": "yellow"}


def report(data: dict[str, Any]) -> Group:
    parts: list[Any] = [
        Text.assemble(("run ", "bold"), (data["run"], "bold"), "  ", data["name"], "  ",
                      state_text(data["state"])),
        label_table(data["labels"]),
    ]  # fmt: skip
    parts.append(usage_table(data["usage"]))
    if "efficiency" in data:
        parts.append(Text("pilots  " + describe_efficiency(data["efficiency"]), style="dim"))
    retried = retries(data["retries"])
    parts.extend(retried)
    if not data["failed"]:
        parts.append(Text(("\n" if retried else "") + "no failed jobs", style="green"))
    for group in data["failure_groups"]:
        parts.extend(_failure_group(group))
    if data["failed"]:
        parts.append(Text(f"\nFailed jobs ({len(data['failed'])}):", style="bold"))
        names = sorted((failure["job"] for failure in data["failed"]), key=natural_key)
        parts.append(Text("  " + ", ".join(names)))
    for failure in data["failed"][:MAX_FAILURES_SHOWN]:
        why = failure["message"] or failure["failure_class"] or "failed"
        parts.append(Text.assemble(
            ("\nFAILED ", "red bold"), (failure["job"], "bold"), f"  label {failure['label']}  ",
            f"attempts {failure['attempts']}  {why}",
        ))  # fmt: skip
        parts.append(Text(f"  command: {failure['command']}", style="dim"))
        if failure["stderr_tail"]:
            parts.append(Text(f"  stderr ({failure['stderr']}), last lines:", style="dim"))
            parts.append(Text("\n".join("    " + line for line in failure["stderr_tail"])))
    hidden = len(data["failed"]) - MAX_FAILURES_SHOWN
    if hidden > 0:
        parts.append(Text(f"... and {hidden} more failed jobs (all are in `--json`)"))
    parts.extend(_blocked(data["run"], data.get("blocked", [])))
    return Group(*parts)


def _blocked(run: str, causes: list[dict[str, Any]]) -> list[Any]:
    """Blocked jobs per failed ancestor: ``3 blocked by failed job-2``."""
    if not causes:
        return []
    total = sum(cause["count"] for cause in causes)
    parts: list[Any] = [Text(f"\nBlocked jobs ({total}), by failed ancestor:", style="bold")]
    for cause in causes:
        parts.append(
            Text.assemble(f"  {cause['count']} blocked by failed ", (cause["ancestor"], "bold"))
        )
    parts.append(Text(f"  `pilot jobs {run} --state blocked` lists them", style="dim"))
    return parts


def usage_table(usage: dict[str, dict[str, Any]]) -> Table:
    """Per label: outcomes, attempts, runtime and peak memory (median / max)."""
    table = _table(title="resources per label")
    _free(table, "label")
    for column in ("succeeded", "failed", "attempts", "runtime med / max",
                   "peak memory med / max"):  # fmt: skip
        _fixed(table, column)
    for label, entry in usage.items():
        runtime, memory = entry["runtime"], entry["peak_memory_mb"]
        table.add_row(
            Text(label), _count(entry["succeeded"] or 0, "succeeded"),
            _count(entry["failed"] or 0, "failed"), str(entry["attempts"] or 0),
            f"{format_duration(runtime['median'])} / {format_duration(runtime['max'])}",
            f"{format_memory(memory['median'])} / {format_memory(memory['max'])}",
        )  # fmt: skip
    return table


def retries(summary: dict[str, Any]) -> list[Any]:
    """Per label the failed attempts and recoveries, then each job that needed a retry."""
    if not any(entry["failed"] for entry in summary["labels"].values()):
        return []
    parts: list[Any] = [Text("\nAttempts per label:", style="bold")]
    for label, entry in summary["labels"].items():
        parts.append(Text.assemble("  ", (label, "bold"), f": {describe_label(entry)}"))
    jobs = summary["jobs"]
    if jobs:
        parts.append(Text(f"\nJobs that needed more than one attempt ({len(jobs)}):", style="bold"))
    for job in jobs[:MAX_FAILURES_SHOWN]:
        parts.append(Text.assemble(
            "  ", (job["job"], "bold"), f"  label {job['label']}  ",
            (describe_outcome(job), "green" if job["recovered"] else "red"),
        ))  # fmt: skip
        for attempt in job["failed_attempts"]:
            parts.append(Text(f"    {describe_attempt(attempt)}"))
    hidden = len(jobs) - MAX_FAILURES_SHOWN
    if hidden > 0:
        parts.append(Text(f"  ... and {hidden} more retried jobs (all are in `--json`)"))
    return parts


def _failure_group(group: dict[str, Any]) -> list[Any]:
    example = group["example"]
    cause = group["cause"]
    recovered = group["recovered"]
    names = group["jobs"] + [f"{name} (recovered)" for name in group["recovered_jobs"]]
    shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
    count = f"{group['count'] + recovered} job(s)"
    if recovered:
        count += f", {recovered} recovered"
    which = example["job"]
    if example.get("recovered"):
        which += f" (attempt {example['attempts']}, recovered)"
    lines: list[Any] = [
        Text.assemble(
            ("\n" + cause, "red bold" if group["count"] else "yellow bold"), f": {count}: ", shown
        ),
        Text(f"  in {describe_labels(group['labels'])}", style="dim"),
        Text(f"  e.g. {which}: {example['message'] or cause}"),
    ]
    if example["stderr_tail"]:
        lines.append(Text("\n".join("    " + line for line in example["stderr_tail"])))
    lines.append(Text("  reproduce:", style="dim"))
    # Never wrapped or cropped: a hard newline inside would break the command when pasted.
    lines.append(Text("    " + group["reproduce"], no_wrap=True, overflow="ignore"))
    return lines


def print_to(console: Console, renderable: Any) -> None:
    # Not cropped: a line marked no_wrap (a reproduce command) is printed whole, and
    # the terminal folds it without a newline in it; every other line fits the width.
    console.print(renderable, soft_wrap=False, highlight=False, crop=False)
