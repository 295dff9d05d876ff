"""Telling a job that crashes its worker from a pilot that was lost. Pure policy.

A Python-function job without a memory request runs inside the worker process
(:mod:`executor.worker.inprocess`): a segfault or an ``os._exit`` in it ends the
worker, and Parsl reports the bundle as lost (``WorkerLost``), exactly as when the
node or the batch system kills the worker. Retried as ``pilot_lost``, such a job would
crash three more workers and then fail with the wrong cause, whatever its ``retries``.

So after a lost worker, the job that was running in it is a *suspect*: its next
attempt runs alone, in its own process. If it dies there too, the job's own exit code
or signal is its outcome, and its ``retries`` apply as for any failure; if it
succeeds, the pilot was at fault. Its bundle-mates that had not started are run again
without using anything: neither they nor their pilot did anything wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LostBundle:
    """What to do with the unreported jobs of a bundle whose worker was lost.

    Attributes
    ----------
    suspects
        Jobs that may have crashed the worker: their next attempt runs alone, in its
        own process (still ``pilot_lost`` for this one, retried without using retries).
    bystanders
        Jobs that never started, in a bundle whose crash has a suspect: run again as
        they were, using nothing.
    lost
        Jobs for which the pilot is to blame, as far as anyone can tell
        (``pilot_lost``, the usual transient retry).
    """

    suspects: tuple[str, ...] = ()
    bystanders: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()


def triage_lost_bundle(
    unreported: Sequence[str],
    *,
    worker_lost: bool,
    started: Callable[[str], bool] | None,
    in_worker: Callable[[str], bool],
) -> LostBundle:
    """Sort the jobs of a lost bundle that had not reported.

    Parameters
    ----------
    unreported
        The bundle's jobs without an outcome, in bundle order.
    worker_lost
        Whether only the worker process died (Parsl's ``WorkerLost``) rather than the
        whole pilot (``ManagerLost``: the node, the batch job, the network).
    started
        Whether a job's attempt had started (its start record in the outcome log);
        ``None`` when there is no outcome log (no shared filesystem): then any of the
        bundle's in-worker jobs may have been the one running.
    in_worker
        Whether a job's attempt ran inside the worker process (the only kind that can
        take the worker down with it).
    """
    if not worker_lost:
        return LostBundle(lost=tuple(unreported))
    if started is None:
        suspects = tuple(name for name in unreported if in_worker(name))
        return LostBundle(suspects=suspects, lost=_rest(unreported, suspects))
    running = [name for name in unreported if started(name)]
    suspects = tuple(name for name in running if in_worker(name))
    if not suspects:
        return LostBundle(lost=tuple(unreported))
    bystanders = tuple(name for name in unreported if not started(name))
    return LostBundle(
        suspects=suspects, bystanders=bystanders, lost=_rest(unreported, suspects + bystanders)
    )


def _rest(names: Sequence[str], taken: Sequence[str]) -> tuple[str, ...]:
    chosen = set(taken)
    return tuple(name for name in names if name not in chosen)


SUSPECT_DETAIL = (
    "its worker died while it ran inside it; running it once alone, in its own process, "
    "to tell a crash of the job from a lost pilot (not counted)"
)
BYSTANDER_DETAIL = (
    "a job in its bundle crashed the worker before this one started; run again (not counted)"
)


def alone_note(message: str) -> str:
    """The message of a failure of a suspect's attempt run alone: why it ran that way."""
    return f"{message}{ALONE_NOTE}"


# What :func:`alone_note` adds to a message.
ALONE_NOTE = " (run alone in its own process: inside the worker it crashed the worker)"
