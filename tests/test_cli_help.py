"""The ``pilot`` command tree: help everywhere, clean usage errors, stable JSON.

Model: simonw/sqlite-utils ``tests/test_docs.py`` (walk the commands, check each has help).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import executor
from executor.cli import cli
from executor.store import Store


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


COMMANDS = list(_walk(cli))
SUBCOMMANDS = [path for path in COMMANDS if path]


def _id(path: tuple[str, ...]) -> str:
    return " ".join(("pilot", *path))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "x.db"


def test_the_tree_has_the_documented_commands() -> None:
    # Guards the walk: an empty tree would make the parametrized tests vacuous.
    names = {path[0] for path in SUBCOMMANDS}
    assert {"submit", "status", "report", "logs", "cancel", "restart", "validate"} <= names


@pytest.mark.parametrize("path", SUBCOMMANDS, ids=_id)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    command = _command(path)
    assert command.help, f"{_id(path)} has no help text"
    assert "Example" in command.help, f"{_id(path)} --help shows no example"


def test_the_top_level_command_has_help() -> None:
    # `pilot --help` shows a "Start with:" list of commands instead of one example.
    assert cli.help and "pilot submit" in cli.help


@pytest.mark.parametrize("path", COMMANDS, ids=_id)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0(runner: CliRunner, path: tuple[str, ...], flag: str) -> None:
    result = runner.invoke(cli, [*path, flag], prog_name="pilot")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: pilot")
    if path:
        assert "Example" in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=_id)
def test_every_option_has_help(path: tuple[str, ...]) -> None:
    command = _command(path)
    undocumented = [
        param.name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert undocumented == []


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"], prog_name="pilot")
    assert result.exit_code == 0
    assert result.output == f"pilot, version {executor.__version__}\n"


def test_unknown_option_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--bogus"], prog_name="pilot")
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_unknown_command_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["sumbit"], prog_name="pilot")
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_missing_argument_exits_2(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(cli, ["logs", "--db", str(db)], prog_name="pilot")
    assert result.exit_code == 2
    assert "Missing argument 'RUN'" in result.output


def _write_invalid_workflow(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "jobs:\n"
        "  - {name: a, command: 'echo a', memroy: 1GB}\n"
        "  - {name: b, command: 'echo b', walltime: forever}\n"
        "  - {command: 'echo c'}\n"
    )
    return path


def test_validate_invalid_workflow_lists_every_problem(runner: CliRunner, tmp_path: Path) -> None:
    path = _write_invalid_workflow(tmp_path)
    result = runner.invoke(cli, ["validate", str(path)], prog_name="pilot")
    assert result.exit_code == 2
    assert "3 problem(s)" in result.output
    assert "memroy" in result.output and "did you mean 'memory'" in result.output
    assert "'forever' is not a duration" in result.output
    assert "job #3" in result.output and "needs a 'name'" in result.output
    # Each problem names the file and the line of the job.
    for line in (3, 4, 5):
        assert f"bad.yaml:{line}:" in result.output
    assert "Traceback" not in result.output


def test_validate_valid_workflow_json(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(
        "name: good\n"
        "jobs:\n"
        "  - {name: a-1, command: 'echo a'}\n"
        "  - {name: a-2, command: 'echo a'}\n"
        "  - {name: b, command: 'echo b', after: [a-1, a-2]}\n"
    )
    result = runner.invoke(cli, ["validate", str(path), "--json"], prog_name="pilot")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["workflow"] == "good"
    assert facts["jobs"] == 3
    assert facts["labels"] == {"a": 2, "b": 1}


def test_validate_missing_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["validate", str(tmp_path / "nope.yaml")], prog_name="pilot")
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def _status_json(runner: CliRunner, db: Path) -> dict:
    result = runner.invoke(cli, ["status", "--db", str(db), "--json"], prog_name="pilot")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_status_json_on_an_empty_database(runner: CliRunner, db: Path) -> None:
    # Read commands never create a database (a mistyped --db fails instead): make one.
    Store(db).close()
    assert _status_json(runner, db) == {"runs": []}


def test_status_of_unknown_run_names_the_database(runner: CliRunner, db: Path) -> None:
    Store(db).close()
    result = runner.invoke(cli, ["status", "NOPE", "--db", str(db)], prog_name="pilot")
    assert result.exit_code == 2
    assert "'NOPE'" in result.output
    assert str(db.resolve()) in result.output
    assert "Traceback" not in result.output


def test_submit_of_a_bad_workflow_creates_no_run(
    runner: CliRunner, tmp_path: Path, db: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\njobs:\n  - {name: a, comand: 'echo a'}\n")
    result = runner.invoke(cli, ["submit", str(path), "--db", str(db)], prog_name="pilot")
    assert result.exit_code == 2
    assert "comand" in result.output and "did you mean 'command'" in result.output
    assert not result.output.startswith("run ")
    assert not db.exists()  # not even an empty database
    assert not (tmp_path / "runs").exists()
