"""Finer failure classes: what kept a job from starting, a function's exception type,
no retry of what cannot succeed on a retry, and failures grouped by exception.

Worker-side cases run real jobs through :func:`executor.worker.bundle.run_job`, in a
process of their own and inside the worker; one end-to-end run checks the attempts the
driver makes and what ``pilot report --json`` and ``--tsv`` show.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_pilot, write_workflow

from executor.driver.context import RunContext, job_spec
from executor.model.graph import Job
from executor.policy.pools import PoolConfig
from executor.policy.retrying import RetryState, cannot_succeed_on_retry, decide
from executor.report.failures import cause_of, describe_cause, error_of
from executor.worker.bundle import run_job
from executor.worker.outcome import failed

USER_CODE = """
def bad_input(n):
    raise ValueError(f"bad input {n}")

def late_import():
    import no_such_module_for_pilot_tests  # noqa: F401

def missing_key():
    return {}["x"]
"""


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "usercode.py").write_text(USER_CODE)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    environment_file = run_dir / "environment.json"
    environment_file.write_text(json.dumps({"PATH": os.environ["PATH"]}))
    return RunContext(
        run_id="r", run_dir=run_dir, workdir=workdir, environment_file=environment_file
    )


def _run(context: RunContext, in_process: bool, **fields) -> dict:
    # A memory request gives a function job a process of its own.
    memory = None if in_process else 1000
    job = Job(name="j", label="x", memory=memory, **fields)
    spec = job_spec(job, context, 1, memory, 0.1)
    assert spec["in_process"] is (in_process and job.kind == "function")
    return dict(run_job(spec))


@pytest.mark.parametrize("in_process", [True, False], ids=["in-worker", "own-process"])
def test_a_function_whose_module_is_missing_could_not_start(context, in_process) -> None:
    outcome = _run(context, in_process, function="no_such_pkg_for_pilot.mod:f")
    assert outcome["failure_class"] == "could_not_start"
    assert outcome["error_type"] == "ModuleNotFoundError"
    assert outcome["message"].startswith("could not start: ModuleNotFoundError: No module named")


@pytest.mark.parametrize("in_process", [True, False], ids=["in-worker", "own-process"])
def test_a_function_name_that_is_missing_could_not_start(context, in_process) -> None:
    outcome = _run(context, in_process, function="usercode:no_such_function")
    assert outcome["failure_class"] == "could_not_start"
    assert outcome["error_type"] == "AttributeError"
    assert "no_such_function" in outcome["message"]


@pytest.mark.parametrize("in_process", [True, False], ids=["in-worker", "own-process"])
def test_a_function_that_raises_records_the_exception_type(context, in_process) -> None:
    outcome = _run(context, in_process, function="usercode:bad_input", args=(7,))
    assert outcome["failure_class"] == "exit_code"
    assert outcome["exit_code"] == 1
    assert outcome["error_type"] == "ValueError"
    assert outcome["message"] == "exit code 1: ValueError: bad input 7"
    assert "Traceback" in Path(outcome["stderr"]).read_text()


def test_a_program_that_does_not_exist_could_not_start(context) -> None:
    outcome = _run(context, False, command=("no-such-program-for-pilot", "x"))
    assert outcome["failure_class"] == "could_not_start"
    assert outcome["error_type"] == "FileNotFoundError"
    assert "no-such-program-for-pilot" in outcome["message"]
    assert outcome["exit_code"] is None


def test_a_shell_command_that_is_not_found_exits_127(context) -> None:
    outcome = _run(
        context, False, command="no-such-program-for-pilot --flag | cat; exit ${PIPESTATUS[0]}"
    )
    assert (outcome["failure_class"], outcome["exit_code"]) == ("exit_code", 127)
    assert outcome["error_type"] is None


POOLS = [PoolConfig(name="default", cores=1, memory=None)]


def _decide(outcome, **fields):
    job = Job(name="j", label="x", command="true", retries=2, **fields)
    return decide(job, outcome, RetryState(), POOLS)


@pytest.mark.parametrize(
    "outcome",
    [
        failed(
            "could_not_start",
            "could not start: ModuleNotFoundError: No module named 'x'",
            error_type="ModuleNotFoundError",
        ),
        failed(
            "could_not_start",
            "could not start: [Errno 2] No such file: 'prog'",
            error_type="FileNotFoundError",
        ),
        failed(
            "could_not_start",
            "could not start: AttributeError: no attribute 'f'",
            error_type="AttributeError",
        ),
        failed("exit_code", "exit code 127", exit_code=127),
        failed("exit_code", "exit code 126", exit_code=126),
        failed(
            "exit_code",
            "exit code 1: ImportError: cannot import name 'y'",
            exit_code=1,
            error_type="ImportError",
        ),
    ],  # fmt: skip
    ids=["module", "program", "function-name", "exit-127", "exit-126", "raised-import-error"],
)
def test_what_cannot_succeed_on_retry_is_not_retried_and_says_so(outcome) -> None:
    decision = _decide(outcome)
    assert decision.action == "fail"
    assert "not retried" in decision.detail
    assert "retry_permanent_failures: true" in decision.detail
    assert decision.state.retries_used == 0
    assert _decide(outcome, retry_permanent_failures=True).action == "retry"


@pytest.mark.parametrize(
    "outcome",
    [
        failed("exit_code", "exit code 1: ValueError: bad", exit_code=1, error_type="ValueError"),
        failed("exit_code", "exit code 3", exit_code=3),
        # A full disk is no reason to give up: another attempt (or node) may have room.
        failed(
            "could_not_start", "could not start: [Errno 28] No space left", error_type="OSError"
        ),
        # A function that exits 127 itself is not a shell that found no command.
        failed("exit_code", "exit code 127: KeyError: 'x'", exit_code=127, error_type="KeyError"),
    ],
    ids=["value-error", "exit-3", "no-space", "function-127"],
)
def test_other_failures_are_retried(outcome) -> None:
    assert cannot_succeed_on_retry(outcome) is None
    assert _decide(outcome).action == "retry"


def test_exception_messages_group_by_type_and_message_head() -> None:
    def attempt(message: str, error_type: str | None, failure="exit_code") -> dict:
        return {"failure_class": failure, "exit_code": 1, "signal": None,
                "error_type": error_type, "message": message}  # fmt: skip

    first = attempt("exit code 1: ValueError: bad input 3\nmore", "ValueError")
    second = attempt("exit code 1: ValueError: bad input 41", "ValueError")
    other = attempt("exit code 1: KeyError: 'x'", "KeyError")
    plain = attempt("exit code 1", None)
    assert error_of(first) == "ValueError: bad input N"
    assert cause_of(first) == cause_of(second) != cause_of(other) != cause_of(plain)
    assert describe_cause(cause_of(first)) == "ValueError: bad input N"
    assert describe_cause(cause_of(plain)) == "exit code 1"
    missing = attempt("could not start: ModuleNotFoundError: No module named 'a'",
                      "ModuleNotFoundError", "could_not_start")  # fmt: skip
    assert describe_cause(cause_of(missing)) == (
        "could not start: ModuleNotFoundError: No module named 'a'"
    )


def test_a_run_does_not_retry_what_cannot_succeed_and_reports_it(
    tmp_path: Path, pilot_home: Path, subprocess_env: dict
) -> None:
    (tmp_path / "usercode.py").write_text(USER_CODE)
    workflow = write_workflow(tmp_path, {
        "name": "classes",
        "defaults": {"retries": 2},
        "jobs": [
            {"name": "missing-module", "function": "no_such_pkg_for_pilot:f"},
            {"name": "not-found", "command": "no-such-program-for-pilot"},
            {"name": "late-import", "function": "usercode:late_import"},
            {"name": "bad-1", "function": "usercode:bad_input", "args": [1]},
            {"name": "bad-2", "function": "usercode:bad_input", "args": [2]},
            {"name": "forced", "command": "no-such-program-for-pilot-either | cat; "
                                          "exit ${PIPESTATUS[0]}",
             "retry_permanent_failures": True},
        ],
    })  # fmt: skip
    done = run_pilot("submit", str(workflow), cwd=tmp_path, env=subprocess_env, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    run_id = done.stdout.split()[1]

    trace = run_pilot("report", run_id, "--tsv", env=subprocess_env)
    header, *rows = trace.stdout.splitlines()
    cells = [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]
    attempts = {}
    for cell in cells:
        attempts.setdefault(cell["job"], []).append(cell)
    assert {job: len(rows) for job, rows in attempts.items()} == {
        "missing-module": 1, "not-found": 1, "late-import": 1, "bad-1": 3, "bad-2": 3, "forced": 3,
    }  # fmt: skip
    assert attempts["missing-module"][0]["failure_class"] == "could_not_start"
    assert attempts["missing-module"][0]["error_type"] == "ModuleNotFoundError"
    assert attempts["late-import"][0]["error_type"] == "ModuleNotFoundError"
    assert attempts["bad-1"][0]["error_type"] == "ValueError"

    report = json.loads(run_pilot("report", run_id, "--json", env=subprocess_env).stdout)
    causes = {group["cause"]: sorted(group["jobs"]) for group in report["failure_groups"]}
    assert causes["ValueError: bad input N"] == ["bad-1", "bad-2"]
    assert causes["exit code 127"] == ["forced", "not-found"]
    assert causes["ModuleNotFoundError: No module named 'no_such_module_for_pilot_tests'"] == [
        "late-import"
    ]
    assert causes[
        "could not start: ModuleNotFoundError: No module named 'no_such_pkg_for_pilot'"
    ] == ["missing-module"]
    messages = {job["job"]: job["message"] for job in report["failed"]}
    assert "not retried" in messages["missing-module"]
    assert "exit code 127 means command not found" in messages["not-found"]
    assert "not retried" not in messages["bad-1"]
