"""Bundles and their outcomes pickled at C speed inside Parsl's pure-Python pickler.

Parsl serializes a task's arguments and its result with dill, whose pickler is
``pickle``'s pure-Python one: for a bundle of hundreds of job specs (dicts of a dozen
fields each) that was the driver's largest single cost per job (14 ms for 500 specs,
0.3 ms packed), and the worker paid it again pickling the outcomes (unpickling is C
already). A :class:`PackedList` is a
list that pickles as one call of the C ``pickle.loads`` on one ``bytes``, which dill
copies whole, so the items are pickled and unpickled by the C implementation.

It unpickles as a plain ``list``: the receiving side needs neither this module nor
pilot (a shipped runtime, a Globus Compute endpoint). The trust is the channel's own:
Parsl's results and arguments are pickles already.

Part of the worker runtime: standard library only.
"""

from __future__ import annotations

import pickle
from typing import Any

# Protocol 4 reads on every Python pilot runs on (3.8+), whatever the sender's default.
_PROTOCOL = 4


class PackedList(list):
    """A list whose items are pickled together by the C pickler (see the module)."""

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (pickle.dumps(list(self), protocol=_PROTOCOL),)
