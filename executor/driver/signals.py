"""Terminal and batch-system signals, turned into a clean cancel of the run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from executor.driver.loop import Driver


@contextmanager
def signals_cancel(driver: Driver) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM/SIGHUP cancel the run cleanly; a second SIGINT forces.

    A cancel asked once lets the driver stop running jobs and record each; a second
    Ctrl-C raises ``KeyboardInterrupt`` for someone who will not wait for that.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if driver.cancel_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        driver.request_cancel()

    previous = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
