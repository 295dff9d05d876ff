"""Job names in the order people read them: ``job-2`` before ``job-10``."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders the runs of digits in ``name`` by their value.

    Each part is tagged (0: text, 1: number), so a name never compares a number with
    text: ``sorted(["job-10", "job-2", "job"], key=natural_key)`` is
    ``["job", "job-2", "job-10"]``.
    """
    return tuple(
        (1, int(part)) if part.isdigit() else (0, part) for part in _DIGITS.split(name) if part
    )
