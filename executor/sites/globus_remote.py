"""What runs on a Globus Compute endpoint around each bundle, and ``pilot ping``'s probe.

This module is sent as source text with every task and run there by the built-in
:func:`eval` (see :mod:`executor.sites.globus_executor`): the endpoint needs Python and
its endpoint software only, never pilot, and nothing is pickled by reference but
``eval`` itself. So it imports only the standard library, and nothing from pilot.

Around each bundle it

- makes a scratch directory of its own on the endpoint (the jobs' working directory,
  ``PILOT_RUN_DIR``, and where their logs are written), removed afterwards;
- points each job's paths into it: the driver's run directory does not exist there;
- runs the bundle with pilot's worker runtime, shipped with the bundles
  (:mod:`executor.shipping.runtime`), or the endpoint's own pilot when it has one;
- reads each job's stdout and stderr back into its outcome, keeping the tail of each
  within the bundle's share of the result limit, and saying how much was cut.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

# Evaluated on the endpoint with this module's source as ``source`` (see globus_executor).
RUN = "exec(source, space) or space['run_remote'](call, options)"
PROBE = "exec(source, space) or space['probe']()"
# Bytes an outcome takes besides its logs and its result, in the serialized result.
OUTCOME_OVERHEAD = 2048
MIN_TAIL = 1024


def run_remote(call: dict[str, Any], options: dict[str, Any]) -> Any:
    """Run one bundle in a scratch directory; return its outcomes with their logs.

    Parameters
    ----------
    call
        What the driver's bundle call carries: ``specs`` and ``code``, and for a shipped
        runtime ``source`` (:mod:`executor.worker.codecache`) and ``package``.
    options
        ``runtime`` (use the shipped runtime), ``scratch_dir`` (where scratch
        directories are made; empty: the endpoint's temporary directory),
        ``keep_scratch``, ``log_tail`` (bytes of each log kept at most) and
        ``result_bytes`` (what the whole answer may take).
    """
    scratch = tempfile.mkdtemp(prefix="pilot-bundle-", dir=options.get("scratch_dir") or None)
    try:
        specs = call["specs"]
        local = [_in_scratch(spec, scratch, number) for number, spec in enumerate(specs)]
        if options.get("runtime"):
            space: dict[str, Any] = {}
            exec(call["source"], space)
            outcomes = space["bootstrap"](local, call.get("code") or [], call["package"])
        else:
            from executor.worker.bundle import run_bundle

            outcomes = run_bundle(local, call.get("code"))  # type: ignore[arg-type]
        if isinstance(outcomes, dict):  # code_missing: the driver sends the rest
            return outcomes
        return with_logs(outcomes, specs, options)
    finally:
        if not options.get("keep_scratch"):
            shutil.rmtree(scratch, ignore_errors=True)


def _in_scratch(spec: dict[str, Any], scratch: str, number: int) -> dict[str, Any]:
    logs = os.path.join(scratch, ".pilot-logs", f"job-{number}")
    return {
        **spec,
        "workdir": scratch,
        "run_dir": scratch,
        "stdout": logs + ".out",
        "stderr": logs + ".err",
        # The driver's marker, outcome log and saved environment are not reachable here.
        "cancel_path": None,
        "outcome_log": None,
        "environment_file": None,
    }


def with_logs(
    outcomes: list[dict[str, Any]], specs: list[dict[str, Any]], options: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each outcome with ``remote_logs`` (the tails of its logs) and the driver's log paths."""
    budget = int(options.get("result_bytes") or 0)
    results = sum(len(outcome.get("result") or "") for outcome in outcomes)
    share = (budget - results) // max(1, 2 * len(outcomes)) - OUTCOME_OVERHEAD if budget else None
    tail = int(options.get("log_tail") or 65536)
    if share is not None:
        tail = max(MIN_TAIL, min(tail, share))
    answered = []
    for outcome, spec in zip(outcomes, specs, strict=True):
        outcome = dict(outcome)
        logs = {}
        for stream in ("stdout", "stderr"):
            path = outcome.get(stream)
            if path:
                logs[stream] = _tail(path, tail)
                outcome[stream] = spec[stream]  # where the driver stores it
            else:
                outcome[stream] = None
        outcome["remote_logs"] = logs
        answered.append(outcome)
    return answered


def _tail(path: str, keep: int) -> dict[str, Any]:
    """The last ``keep`` bytes of a log, as text, and how many bytes came before them."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - keep))
            data = handle.read()
    except OSError as exc:
        return {"text": f"[pilot: the log could not be read on the endpoint: {exc}]\n", "cut": 0}
    return {"text": data.decode("utf-8", "replace"), "cut": size - len(data), "size": size}


def probe() -> dict[str, Any]:
    """The endpoint's versions of what pilot's tasks depend on (``None``: not installed)."""
    import getpass
    import platform
    import socket
    import sys

    versions: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "host": socket.gethostname(),
    }
    try:
        versions["user"] = getpass.getuser()
    except Exception:  # no name for this uid (a container): the number will do
        versions["user"] = str(os.getuid())
    for name, module in (
        ("dill", "dill"),
        ("globus_compute_sdk", "globus_compute_sdk"),
        ("globus_compute_endpoint", "globus_compute_endpoint"),
        ("parsl", "parsl"),
        ("pilot", "executor._version"),
    ):
        try:
            imported = __import__(module, fromlist=["__version__"])
            versions[name] = str(getattr(imported, "__version__", "unknown"))
        except Exception:  # absent, or broken: both are reported as absent
            versions[name] = None
    return versions
