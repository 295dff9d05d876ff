"""How a run ended, from its jobs' states (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from executor.model.states import JobState, RunState


def final_run_state(
    states: Mapping[str, JobState], *, aborted: bool, cancel_requested: bool
) -> RunState:
    """``failed`` when aborted or any job did not succeed; ``cancelled`` when a cancel
    stopped jobs from finishing; ``succeeded`` only when every job succeeded."""
    if aborted:
        return RunState.FAILED
    if cancel_requested and any(s is JobState.CANCELLED for s in states.values()):
        return RunState.CANCELLED
    if any(s is not JobState.SUCCEEDED for s in states.values()):
        return RunState.FAILED
    return RunState.SUCCEEDED
