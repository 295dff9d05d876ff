"""``import executor`` stays cheap: no backend, web or terminal-UI import at package import.

Model: pallets/click ``tests/test_imports.py``. The import runs in a fresh interpreter so
modules other tests imported do not hide a regression.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_COLLECT = """
import json, sys
before = set(sys.modules)
import executor
print(json.dumps(sorted(set(sys.modules) - before)))
"""

# Third-party top-level modules `import executor` may load. PyYAML's C loader is
# `yaml._yaml` (older PyYAML: top-level `_yaml`).
ALLOWED = {"executor", "yaml", "_yaml"}

# Cython-compiled extensions (PyYAML's `_yaml`) register these pseudo-modules in
# sys.modules; they are part of the extension, not separate imports.
_CYTHON_RUNTIME = ("cython_runtime", "_cython_")

HEAVY = (
    "parsl",
    "kubernetes",
    "globus_sdk",
    "globus_compute_sdk",
    "globus_compute_common",
    "rich",
    "sqlite_utils",
    "psutil",
    "http.server",
    "socketserver",
    "tornado",
    "aiohttp",
    "flask",
    "starlette",
    "uvicorn",
    "fastapi",
    "websockets",
    "zmq",
    "dill",
)


@pytest.fixture(scope="module")
def imported() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _COLLECT],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def _top_level(modules: list[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def test_import_loads_executor(imported: list[str]) -> None:
    # Guards the collector itself: an empty list would make the other tests pass vacuously.
    assert "executor" in imported


@pytest.mark.parametrize("heavy", HEAVY)
def test_no_heavy_module(imported: list[str], heavy: str) -> None:
    loaded = [m for m in imported if m == heavy or m.startswith(heavy + ".")]
    assert loaded == [], f"`import executor` imports {heavy}; import it on first use instead"


def test_no_globus_module(imported: list[str]) -> None:
    assert [m for m in imported if m.startswith("globus")] == []


def test_only_allowed_third_party_modules(imported: list[str]) -> None:
    third_party = {
        name
        for name in _top_level(imported) - set(sys.stdlib_module_names)
        if not name.startswith(_CYTHON_RUNTIME)
    }
    assert third_party <= ALLOWED, sorted(third_party - ALLOWED)
