"""What travels with each bundle: a path on shared filesystems, bytes only where missing."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from executor.driver.delivery import CodeDelivery
from executor.shipping.runtime import bootstrap_call, build_runtime
from executor.shipping.tarball import build
from executor.worker.bundle import run_bundle
from executor.worker.outcome import FIELDS


@pytest.fixture
def shipment(tmp_path: Path):
    package = tmp_path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mypkg.b import g\n\ndef f(x):\n    return g(x) + 1\n")
    (package / "b.py").write_text("def g(x):\n    return 2 * x\n")
    (package / "noise.bin").write_bytes(os.urandom(300_000))  # incompressible: several chunks
    return build([package], tmp_path / "out")


def _chunk_bytes(payload: list[dict]) -> int:
    return sum(len(data) for item in payload for data in (item.get("chunks") or {}).values())


def test_on_a_shared_filesystem_bundles_carry_only_the_hash_and_path(shipment):
    delivery = CodeDelivery([(shipment, False)], shared_filesystem=True)

    for pool in ("small", "small", "large"):
        (item,) = delivery.payload(pool)
        assert item["path"] == str(shipment.path) and item["sha256"] == shipment.sha256
        assert "chunks" not in item


def test_without_one_the_bytes_go_with_the_first_bundle_of_each_pool_only(shipment):
    delivery = CodeDelivery([(shipment, False)], shared_filesystem=False)

    first, second, other_pool = (delivery.payload(p) for p in ("small", "small", "large"))

    assert _chunk_bytes(first) == shipment.size == _chunk_bytes(other_pool)
    assert _chunk_bytes(second) == 0 and "path" not in second[0]


def test_a_resend_carries_only_the_missing_chunks_within_the_payload_limit(shipment):
    limit = 100_000
    delivery = CodeDelivery([(shipment, False)], shared_filesystem=False, max_payload=limit)
    chunks = -(-shipment.size // delivery.payload("p")[0]["chunk_size"])
    assert chunks >= 4

    sent: set[int] = set()
    have: list[int] = []
    for _ in range(chunks):
        (item,) = delivery.for_missing({shipment.sha256: have})
        assert _chunk_bytes([item]) <= limit
        assert not set(item["chunks"]) & set(have)  # never what the node already holds
        sent |= set(item["chunks"])
        have = sorted(sent)
    assert sent == set(range(chunks))
    assert delivery.rounds_allowed >= chunks


def test_a_bundle_with_missing_code_asks_for_it_then_runs_with_what_it_got(
    shipment, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PILOT_CACHE", str(tmp_path / "cache"))
    delivery = CodeDelivery([(shipment, False)], shared_filesystem=False, max_payload=150_000)
    specs = [_function_spec(tmp_path, "f-1", in_process=True)]

    first = delivery.payload("p")
    assert 0 < _chunk_bytes(first) < shipment.size  # as much as one task may carry

    answer = run_bundle(specs, first)
    rounds = 0
    while isinstance(answer, dict):
        rounds += 1
        answer = run_bundle(specs, delivery.for_missing(answer["code_missing"]))

    assert rounds >= 1
    (outcome,) = answer
    assert outcome["state"] == "succeeded", outcome
    assert outcome["result"] == "43"


def test_in_process_function_jobs_leave_no_trace_of_the_shipped_code(
    shipment, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("PILOT_CACHE", str(tmp_path / "cache"))
    code = [{**shipment.descriptor(), "path": str(shipment.path)}]
    path_before = list(sys.path)

    (outcome,) = run_bundle([_function_spec(tmp_path, "f-1", in_process=True)], code)

    assert outcome["state"] == "succeeded", outcome
    assert sys.path == path_before
    assert not any(name == "mypkg" or name.startswith("mypkg.") for name in sys.modules)


def test_the_shipped_runtime_runs_a_bundle_where_pilot_is_not_installed(shipment, tmp_path: Path):
    """A bare interpreter (no site-packages: no pilot, no psutil) runs jobs from the
    runtime and the code that came with the bundle, as a remote endpoint would."""
    runtime, package = build_runtime(tmp_path / "runtime")
    # Everything in one chunk each, as the first bundle to a pool would carry it.
    code = CodeDelivery([(shipment, False), (runtime, True)], shared_filesystem=False).payload("p")
    specs = [
        _function_spec(tmp_path, "in-process", in_process=True),
        {**_function_spec(tmp_path, "subprocess", in_process=False), "memory": 500},
        {**_function_spec(tmp_path, "shell", in_process=False), "kind": "shell",
         "command": "python3 -c 'import mypkg, sys; print(mypkg.__file__)'"},
    ]  # fmt: skip
    call = pickle.dumps(bootstrap_call(specs, code, package))
    program = textwrap.dedent("""
        import pickle, sys
        try:
            import executor
        except ImportError:
            pass
        else:
            sys.exit("pilot is importable here: the test proves nothing")
        expression, arguments = pickle.load(sys.stdin.buffer)
        pickle.dump(eval(expression, arguments), sys.stdout.buffer)
    """)
    env = {"PATH": os.environ["PATH"], "PILOT_CACHE": str(tmp_path / "cache"), "HOME": "/"}

    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program],
        input=call, capture_output=True, env=env, cwd="/", timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr.decode()
    outcomes = pickle.loads(done.stdout)
    assert [o["state"] for o in outcomes] == ["succeeded"] * 3, outcomes
    assert all(tuple(o) == FIELDS for o in outcomes)  # the runtime's copy of Outcome
    assert outcomes[0]["result"] == outcomes[1]["result"] == "43"
    assert outcomes[1]["peak_rss_mb"] is None or outcomes[1]["peak_rss_mb"] > 0
    printed = Path(outcomes[2]["stdout"]).read_text().strip()
    assert printed == str(tmp_path / "cache" / shipment.sha256 / "mypkg" / "__init__.py")


def _function_spec(tmp_path: Path, name: str, *, in_process: bool) -> dict:
    logs = tmp_path / "logs"
    return {
        "run_id": "r", "run_dir": str(tmp_path), "job": name, "attempt": 1,
        "kind": "function", "command": None, "function": "mypkg.a:f", "args": [21],
        "kwargs": {}, "environment": {}, "environment_file": None, "workdir": str(tmp_path),
        "walltime": 30, "stdout": str(logs / f"{name}.out"), "stderr": str(logs / f"{name}.err"),
        "cancel_path": str(tmp_path / "cancel"), "memory": None, "memory_tolerance": 0.1,
        "in_process": in_process,
    }  # fmt: skip
