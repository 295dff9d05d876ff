"""Scripts that rerun one failed attempt by hand: ``runs/<id>/repro/<job>.attempt-<n>.sh``.

A report shows ``bash <script>``: one short line that survives a terminal's wrapping
and a paste, where the whole command (directory, environment, limits, the call of a
function job) would not. The script does what a worker did for that attempt
(:mod:`executor.worker.bundle`): ``cd`` to the working directory; the environment
saved at submit, the ``SLURM_*`` variables of where it runs now, the job's own
environment and the ``PILOT_*`` variables, with shipped code first on the paths; the
job's walltime (for a ``timeout`` failure) or memory limit (``out_of_memory``); then
the command, or for a function job ``python -c`` calling ``module:function``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from executor.worker.watch import KILL_GRACE_SECONDS

# Characters a job name may keep in a file name (those of a valid job name, less none).
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+=,-]")
_LONGEST_NAME = 120

# Sets up the environment as a worker does, then runs the job: argv is
# environment.json, code.json ("" without shipped code), NAME=value... "--" command...
_LAUNCH = """\
import json, os, sys
environment_file, code, *rest = sys.argv[1:]
split = rest.index("--")
pairs, argv = rest[:split], rest[split + 1:]
try:
    with open(environment_file) as handle:
        env = json.load(handle)
except (OSError, ValueError) as exc:
    print(f"repro: {exc}; using this shell's environment instead", file=sys.stderr)
    env = dict(os.environ)
env.update((k, v) for k, v in os.environ.items() if k.startswith("SLURM_"))
env.update(pair.split("=", 1) for pair in pairs)
if code:
    from executor.worker.codecache import ready_trees, with_code_on_paths
    with open(code) as handle:
        shipment = json.load(handle)
    keys = ("sha256", "size", "path")
    trees = ready_trees([{key: shipment[key] for key in keys}])
    with_code_on_paths(env, [trees[shipment["sha256"]]])
os.execvpe(argv[0], argv, env)
"""

# A function job: import module:function (shipped code, then the working directory,
# first on sys.path, as the worker's runner does) and call it with JSON arguments.
_CALL = """\
import importlib, json, os, sys
function, args, kwargs = sys.argv[1:]
code = [os.environ["PILOT_CODE"]] if {shipped} else []
sys.path[:0] = [*code, os.getcwd()]
module_name, _, attribute = function.partition(":")
target = importlib.import_module(module_name)
for part in attribute.split("."):
    target = getattr(target, part)
print(json.dumps(target(*json.loads(args), **json.loads(kwargs)), default=repr))
"""


def script_name(job: str, attempt: int) -> str:
    """A file name for one attempt's script, safe and unique whatever the job's name.

    A valid job name is kept as is. Any other (spaces, quotes, ``/``, a leading
    dot, too long) has those replaced and gets ``~`` and a hash of the real name,
    which no valid name contains, so two names never share a file and no name
    leaves the directory.
    """
    safe = _UNSAFE.sub("_", job)[:_LONGEST_NAME].lstrip(".")
    if safe != job or not safe:
        safe = f"{safe or '_'}~{hashlib.sha256(job.encode()).hexdigest()[:12]}"
    return f"{safe}.attempt-{int(attempt)}.sh"


def script_path(run: dict[str, Any], job: str, attempt: int) -> Path:
    """Where :func:`write_script` puts the script of one attempt of ``job``."""
    return Path(run["run_dir"]).absolute() / "repro" / script_name(job, attempt)


def command_line(path: Path) -> str:
    """The line a report shows: ``bash /.../runs/<id>/repro/<job>.attempt-<n>.sh``."""
    return f"bash {shlex.quote(str(path))}"


def write_script(
    run: dict[str, Any],
    spec: dict[str, Any],
    example: dict[str, Any],
    *,
    memory_tolerance: float = 0.1,
    rewrite: bool = True,
) -> Path | None:
    """Write (atomically, executable) the script of the ``example`` attempt; ``None``
    when the run directory cannot be written (another user's run, say).

    With ``rewrite=False`` a script already there is kept.
    """
    path = script_path(run, example["job"], example["attempts"])
    if path.parent.parent != Path(run["run_dir"]).absolute():  # script_name forbids it
        raise ValueError(f"{path} is outside the run directory")
    if not rewrite and path.exists():
        return path
    text = script_text(run, spec, example, memory_tolerance=memory_tolerance)
    try:
        path.parent.mkdir(mode=0o750, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.chmod(temporary, 0o750)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        return None
    return path


def script_text(
    run: dict[str, Any],
    spec: dict[str, Any],
    example: dict[str, Any],
    *,
    memory_tolerance: float = 0.1,
    python: str = sys.executable,
) -> str:
    """The script's text (pure): see the module's docstring for what it does.

    ``spec`` is the job in the run's workflow copy; ``example`` the attempt (``job``,
    ``attempts``: its number, ``failure_class``, ``memory_mb``: what it was given).
    """
    job, attempt = example["job"], int(example["attempts"])
    run_dir = Path(run["run_dir"]).absolute()
    variables = {
        **spec.get("environment", {}),
        "PILOT_RUN_ID": run["id"],
        "PILOT_JOB_NAME": job,
        "PILOT_ATTEMPT": str(attempt),
        "PILOT_RUN_DIR": run["run_dir"],
    }
    shipped = (run_dir / "code.json").exists()
    if "function" in spec:
        command = [
            "$python", "-c", _CALL.format(shipped=shipped), spec["function"],
            json.dumps(spec.get("args", [])), json.dumps(spec.get("kwargs", {})),
        ]  # fmt: skip
    elif isinstance(spec.get("command"), list):
        command = list(map(str, spec["command"]))
    else:
        command = ["bash", "-c", str(spec.get("command", ""))]
    limits: list[str] = []
    failure_class = example.get("failure_class")
    walltime = spec.get("walltime")
    if failure_class == "timeout" and walltime:
        limits += [
            "# The attempt's walltime: TERM, then KILL after pilot's grace period, as a",
            "# worker does (exit status 124 when it fires).",
        ]
        command = ["timeout", f"--kill-after={KILL_GRACE_SECONDS:g}", f"{walltime:g}", *command]
    memory = example.get("memory_mb")
    if failure_class == "out_of_memory" and memory:
        limit_kb = int(memory * (1 + memory_tolerance) * 1024)
        limits += [
            f"# The attempt's memory limit: {memory}MB + {memory_tolerance:.0%} tolerance.",
            "# pilot kills a job whose process tree's resident memory (RSS) passes it; by",
            "# hand `ulimit -v` (a bash builtin, so always here; prlimit --as is the same",
            "# limit) caps each process's *virtual* memory instead, which is not RSS: an",
            "# allocation past it fails (MemoryError, bad_alloc) rather than the process",
            "# being killed, and a program that reserves much more than it uses (JVM,",
            "# CUDA, big mmaps) can fail earlier. For an RSS limit like pilot's use a",
            "# cgroup: systemd-run --user --scope -p MemoryMax=<size> bash <this script>",
            f"ulimit -v {limit_kb}",
        ]
    pairs = " \\\n  ".join(shlex.quote(f"{key}={value}") for key, value in variables.items())
    argv = " ".join('"$python"' if word == "$python" else shlex.quote(word) for word in command)
    code = shlex.quote(str(run_dir / "code.json")) if shipped else "''"
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Reruns attempt {attempt} of job {_comment(job)} of pilot run {_comment(run['id'])}"
        f" by hand, as pilot ran it (it failed: {_comment(failure_class or 'unknown')}).",
        "# Written by `pilot report`; run it with `bash` and this file's path.",
        "set -u",
        f"python={shlex.quote(python)}  # the Python pilot runs with",
        f"cd -- {shlex.quote(run['workdir'])} || exit",
        *limits,
        "# The environment saved at submit, read from the run's private environment.json",
        "# (not copied here: it may hold secrets), the SLURM_* variables of this shell, the",
        "# job's own environment and the PILOT_* variables; shipped code first on the paths.",
        f'exec "$python" -c {shlex.quote(_LAUNCH)} \\',
        f"  {shlex.quote(str(run_dir / 'environment.json'))} {code} \\",
        f"  {pairs} \\",
        f"  -- {argv} </dev/null",
        "",
    ])  # fmt: skip


def _comment(text: str) -> str:
    """``text`` quoted on one line: a name or class from the store never ends a comment."""
    return json.dumps(str(text))
