"""A bps job's command line and environment, with every placeholder bps defines resolved.

bps gives a job an executable and an argument string with placeholders
(``lsst.ctrl.bps.transform``):

- ``{name}``: a value from the job's ``cmdvals`` (Python format syntax);
- ``<FILE:name>``: the path of one of the workflow's files;
- ``<ENV:NAME>``: an environment variable, read where the job runs;
- ``<WMS:attemptNum>``: the attempt number, known only when the job runs.

A value may hold placeholders itself (``{qgraphFile}`` becomes ``<FILE:runQgraphFile>``,
whose path may hold ``<ENV:...>``), so the substitutions repeat until nothing changes,
as the Parsl and HTCondor plugins do. ``<ENV:X>`` becomes ``${X}`` for the job's bash,
and ``<WMS:attemptNum>`` becomes ``${PILOT_ATTEMPT}`` (pilot counts attempts from 1).

pilot runs every job on a filesystem the driver shares (no file transfer), so a file
placeholder is the file's ``src_uri`` (without ``file://``), whatever its transfer flags.

Pure functions of the bps objects (read by attribute): no lsst import here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from executor.errors import GraphError

_ENV = re.compile(r"<ENV:([^>]+)>")
_FILE = re.compile(r"<FILE:([^>]+)>")
_WMS = re.compile(r"<WMS:([^>]+)>")
# Not `${X}`: that is bash's, never a cmdval.
_CMDVAL = re.compile(r"(?<!\$){([^{}]+)}")
# What each WMS placeholder stands for in the job's shell.
WMS_VALUES = {"attemptNum": "${PILOT_ATTEMPT}"}
# Enough for any real chain of placeholders; more means a value refers to itself.
_MAX_ROUNDS = 20


def file_path(src_uri: str) -> str:
    """A file's path as a job on the shared filesystem opens it."""
    return src_uri[len("file://") :] if src_uri.startswith("file://") else src_uri


def job_files(generic_workflow: Any, job_name: str) -> dict[str, str]:
    """The paths of a job's input and output files, by their bps names."""
    files = {}
    for getter in (generic_workflow.get_job_inputs, generic_workflow.get_job_outputs):
        for gwfile in getter(job_name, data=True, transfer_only=False):
            files[gwfile.name] = file_path(str(gwfile.src_uri))
    return files


def command_line(
    generic_workflow: Any, gwjob: Any, cmdvals: Mapping[str, Any] | None = None
) -> str:
    """The bash command that runs ``gwjob``: its executable and arguments, resolved.

    ``cmdvals`` replaces some of the job's own values (the final job's ``requestCpus``
    when the site has fewer cores).

    Raises :class:`GraphError` naming the job when a ``{name}`` has no value in
    ``cmdvals``, a ``<FILE:name>`` names no file of the workflow, a ``<WMS:...>`` is
    not one bps defines, or the placeholders never settle.
    """
    if gwjob.executable is None or not gwjob.executable.src_uri:
        raise GraphError(f"bps job {gwjob.name!r} has no executable")
    cmdvals = {**(gwjob.cmdvals or {}), **(cmdvals or {})}
    arguments = gwjob.arguments or ""
    try:
        # The first pass is Python's format, as in the HTCondor plugin: `{{` is a brace.
        arguments = arguments.format(**cmdvals)
    except (KeyError, IndexError, ValueError) as exc:
        raise GraphError(
            f"bps job {gwjob.name!r}: cannot fill its arguments {gwjob.arguments!r}: "
            f"{exc!r} (cmdvals has {', '.join(sorted(cmdvals)) or 'no values'})"
        ) from exc
    command = f"{gwjob.executable.src_uri} {arguments}".strip()
    files = _FileLookup(generic_workflow, gwjob.name)
    for _ in range(_MAX_ROUNDS):
        resolved = _resolve_once(command, cmdvals, files)
        if resolved == command:
            return _for_bash(command, gwjob.name)
        command = resolved
    raise GraphError(
        f"bps job {gwjob.name!r}: its command's placeholders never settle (a value refers "
        f"to itself?): {command!r}"
    )


def _resolve_once(command: str, cmdvals: Mapping[str, Any], files: _FileLookup) -> str:
    # Later passes replace only `{name}`s that cmdvals knows, so a literal brace in a
    # path or a value survives.
    command = _CMDVAL.sub(lambda m: str(cmdvals[m[1]]) if m[1] in cmdvals else m[0], command)
    return _FILE.sub(lambda m: files.path(m[1]), command)


def _for_bash(command: str, job: str) -> str:
    """``<ENV:X>`` and ``<WMS:...>`` as the job's bash reads them (once everything else
    settled, so a ``${X}`` is never taken for a cmdval)."""
    command = _ENV.sub(lambda m: "${" + m[1] + "}", command)

    def wms(match: re.Match) -> str:
        if match[1] not in WMS_VALUES:
            raise GraphError(
                f"bps job {job!r}: unknown placeholder {match[0]}; pilot knows "
                + ", ".join(f"<WMS:{key}>" for key in WMS_VALUES)
            )
        return WMS_VALUES[match[1]]

    return _WMS.sub(wms, command)


class _FileLookup:
    """The job's own files first, then any file of the workflow (as bps's own fill does)."""

    def __init__(self, generic_workflow: Any, job_name: str):
        self.workflow = generic_workflow
        self.job = job_name
        self.own = job_files(generic_workflow, job_name)

    def path(self, name: str) -> str:
        if name in self.own:
            return self.own[name]
        try:
            return file_path(str(self.workflow.get_file(name).src_uri))
        except Exception as exc:  # bps raises KeyError or its own error for a missing file
            raise GraphError(
                f"bps job {self.job!r}: its command names <FILE:{name}>, which is no file of "
                f"the workflow (the job's files: {', '.join(sorted(self.own)) or 'none'})"
            ) from exc


def environment(gwjob: Any, submit_environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's ``environment`` as text, ``<ENV:X>`` read from the submit environment.

    pilot runs every job with the environment saved when the run was submitted, so the
    submit-side value is the value the job would see; an unset variable reads as empty,
    as in bash.
    """
    source = os.environ if submit_environment is None else submit_environment
    values = {}
    for name, value in (gwjob.environment or {}).items():
        text = str(value)
        for _ in range(_MAX_ROUNDS):
            expanded = _ENV.sub(lambda m: source.get(m[1], ""), text)
            if expanded == text:
                break
            text = expanded
        values[str(name)] = text
    return values
