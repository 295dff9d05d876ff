"""When a pool's pilots are broken: Parsl's ``block_error_handler``, made pilot-aware."""

from __future__ import annotations

from typing import Any

from executor.errors import SiteError


class BlockErrorHandler:
    """Decides when a pool's pilots are broken (Parsl's ``block_error_handler``).

    Parsl's default gives up on an executor as soon as every block it knows has ended
    "failed" or "missing", and it calls every ended block whose workers went away
    "missing": one pilot reaching its walltime would end the run. Here only blocks
    whose workers *never* connected count, and the pool is broken when the last
    ``threshold`` blocks all failed that way (a wrong ``worker_init``, say).
    """

    def __init__(self, threshold: int = 3):
        self.threshold = threshold
        self._connected: set[str] = set()

    def __call__(self, executor: Any, status: dict[str, Any]) -> None:
        try:
            self._connected.update(str(b) for b in executor.connected_blocks())
        except Exception:
            return  # the interchange is stopping; nothing to judge
        recent = sorted(status, key=lambda block: int(block))[-self.threshold :]
        failed = [
            block
            for block in recent
            if status[block].state.name in ("FAILED", "MISSING") and block not in self._connected
        ]
        if len(recent) == self.threshold and len(failed) == self.threshold:
            messages = "; ".join(
                f"block {block}: {status[block].message or status[block].state.name.lower()}"
                for block in failed
            )
            executor.set_bad_state_and_fail_all(
                SiteError(
                    f"pool {executor.label!r}: {self.threshold} pilots in a row ended without "
                    f"their workers connecting ({messages}); check worker_init and `address` in "
                    "the site file, and the pilots' output in the run's parsl/*/submit_scripts"
                )
            )
