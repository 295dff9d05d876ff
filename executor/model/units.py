"""Parse the human units of workflow and site files: memory sizes and durations."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any

_MEMORY_UNITS = {
    "": 1,  # a bare number is megabytes, as for an integer (and Slurm's --mem)
    "b": 1 / 1_000_000,
    "k": 1 / 1_000,
    "kb": 1 / 1_000,
    "m": 1,
    "mb": 1,
    "g": 1_000,
    "gb": 1_000,
    "t": 1_000_000,
    "tb": 1_000_000,
    "kib": 1024 / 1_000_000,
    "mib": 1_048_576 / 1_000_000,
    "gib": 1_073_741_824 / 1_000_000,
    "tib": 1_099_511_627_776 / 1_000_000,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)\s*$", re.IGNORECASE)
_CLOCK_RE = re.compile(r"^\s*(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?\s*$")
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_memory(value: object) -> int:
    """Return a memory size in megabytes (10**6 bytes, as batch systems count).

    Accepts ``"4GB"``, ``"512MB"``, ``"1.5 GiB"`` or a plain integer of megabytes.

    Raises
    ------
    ValueError
        With a message that shows the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size; write e.g. '4GB' or '512MB'")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"{value!r} must be positive; write e.g. '4GB' or '512MB'")
        return max(1, round(value))
    match = _MEMORY_RE.match(str(value))
    if not match or match.group(2).lower() not in _MEMORY_UNITS:
        raise ValueError(f"{value!r} is not a memory size; write e.g. '4GB', '512MB' or '2GiB'")
    megabytes = float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    if megabytes <= 0:
        raise ValueError(f"{value!r} must be positive; write e.g. '4GB' or '512MB'")
    return max(1, round(megabytes))


def parse_duration(value: object) -> float:
    """Return a duration in seconds.

    Accepts ``"30m"``, ``"2h"``, ``"90s"``, ``"1.5h"``, Slurm clock forms ``"01:30:00"``,
    ``"30:00"`` (minutes:seconds) and ``"1-00:00:00"``, or a number of seconds.

    YAML 1.1 reads an unquoted ``2:00:00`` as the integer 7200 (base 60); pilot's
    loader keeps such values as text, so they are never misread.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. '30m', '2h' or '01:30:00'")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"{value!r} must be positive; write e.g. '30m', '2h' or '01:30:00'")
        return float(value)
    text = str(value)
    match = _DURATION_RE.match(text)
    if match:
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    else:
        clock = _CLOCK_RE.match(text)
        if not clock or (clock.group(3) is None and clock.group(1) is None):
            raise ValueError(
                f"{value!r} is not a duration; write e.g. '30m', '2h', '90s' or '01:30:00'"
            )
        days, first, second, third = clock.groups()
        if third is not None:  # H:M:S
            seconds = int(first) * 3600 + int(second) * 60 + int(third)
        elif days is not None and second is None:  # D-H
            seconds = int(first) * 3600
        elif days is not None:  # D-H:M
            seconds = int(first) * 3600 + int(second) * 60
        else:  # M:S, as Slurm reads it
            seconds = int(first) * 60 + int(second)
        seconds += int(days or 0) * 86400
    if seconds <= 0:
        raise ValueError(f"{value!r} must be positive; write e.g. '30m', '2h' or '01:30:00'")
    return seconds


def parse_whole_seconds(value: object) -> int:
    """A duration (as :func:`parse_duration` reads it) in whole seconds, rounded up."""
    return math.ceil(parse_duration(value))


@dataclass(frozen=True)
class Unit:
    """How a config field written in human units is read: ``Annotated[int, MEMORY]``.

    :func:`executor.model.fields.check_fields` parses such a field when its site file
    is loaded, so a wrong value fails then, naming the file and the field.

    Parameters
    ----------
    parse
        Reads the value (text or a number); raises ``ValueError`` saying what is wrong.
    expected
        What the field takes, for messages ("a duration (...)").
    example
        A valid value as written in YAML.
    as_written
        Only check the value and keep it as the user wrote it (shown back that way).
    """

    parse: Callable[[object], Any]
    expected: str
    example: str
    as_written: bool = False


MEMORY = Unit(parse_memory, "a memory size (megabytes, or text such as 512MB, 4GB, 2GiB)", "4GB")
DURATION = Unit(parse_duration, "a duration (seconds, or text such as 10s, 5m, 1h, 2:00:00)", "5m")

#: Megabytes, from ``4GB``, ``512MB`` or a number of megabytes.
Megabytes = Annotated[int, MEMORY]
#: A memory size checked at load but kept as written (e.g. ``max_payload: 10MB``).
MemoryText = Annotated[str | int, replace(MEMORY, as_written=True)]
#: Seconds, from ``10s``, ``5m``, ``1h``, ``2:00:00`` or a number of seconds.
Seconds = Annotated[float, DURATION]
#: Whole seconds (rounded up), for options that take an integer.
WholeSeconds = Annotated[int, replace(DURATION, parse=parse_whole_seconds, example="2m")]
#: A duration checked at load but kept as written (e.g. ``walltime: 2:00:00``).
DurationText = Annotated[str | int | float, replace(DURATION, as_written=True, example="2:00:00")]


def format_memory(megabytes: int | float | None) -> str:
    if megabytes is None:
        return "-"
    if megabytes >= 1000:
        return f"{megabytes / 1000:.1f}GB"
    return f"{megabytes:.0f}MB"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def format_bytes(size: int) -> str:
    """A byte count for people: ``"512 B"``, ``"3.4 kB"``, ``"2.1 MB"`` (powers of 10)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
