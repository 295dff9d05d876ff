"""Bundles and outcomes cross Parsl's dill pickler as one C-pickled blob, and arrive
as plain lists that need nothing of pilot to unpickle."""

from __future__ import annotations

import pickle
import subprocess
import sys

import dill
import pytest
from parsl.serialize import deserialize, serialize

from executor.worker.bundle import run_bundle
from executor.worker.wire import PackedList


def _specs(n: int) -> list[dict]:
    return [
        {"job": f"job-{i}", "attempt": 1, "command": "true", "environment": {"A": str(i)}}
        for i in range(n)
    ]


def _objects_dill_saved(value: object, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many objects dill's pure-Python pickler saves one by one for ``value``."""
    saved = []
    original = dill.Pickler.save

    def counting(self, obj, *args, **kwargs):
        saved.append(obj)
        return original(self, obj, *args, **kwargs)

    monkeypatch.setattr(dill.Pickler, "save", counting)
    serialize(value)
    monkeypatch.undo()
    return len(saved)


def test_parsl_pickles_a_packed_bundle_whole_not_item_by_item(monkeypatch: pytest.MonkeyPatch):
    specs = _specs(500)

    assert _objects_dill_saved(specs, monkeypatch) > 5_000  # what PackedList avoids
    assert _objects_dill_saved(PackedList(specs), monkeypatch) < 10
    back = deserialize(serialize(PackedList(specs)))
    assert type(back) is list and back == specs


def test_a_packed_list_unpickles_where_pilot_is_not_installed():
    blob = pickle.dumps(PackedList(_specs(3)))
    assert b"executor" not in blob
    reader = "import pickle, sys; value = pickle.loads(sys.stdin.buffer.read()); print(type(value).__name__, len(value))"  # noqa: E501
    shown = subprocess.run(
        [sys.executable, "-I", "-S", "-c", reader], input=blob, capture_output=True, check=True
    )
    assert shown.stdout.decode().split() == ["list", "3"]


def test_a_bundles_outcomes_travel_packed(tmp_path):
    spec = {
        "job": "one", "kind": "shell", "command": "true", "workdir": str(tmp_path),
        "run_id": "r", "attempt": 1, "run_dir": str(tmp_path),
        "stdout": str(tmp_path / "one.out"), "stderr": str(tmp_path / "one.err"),
    }  # fmt: skip
    outcomes = run_bundle([spec])
    assert isinstance(outcomes, PackedList)
    assert [o["state"] for o in outcomes] == ["succeeded"]
