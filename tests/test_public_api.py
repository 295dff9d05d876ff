"""The public API is ``executor.__all__``: every name resolves and nothing else leaks.

Model: encode/httpx ``tests/test_exported_members.py``.
"""

from __future__ import annotations

import types

import executor


def test_all_is_sorted() -> None:
    assert executor.__all__ == sorted(executor.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(executor.__all__) == len(set(executor.__all__))


def test_every_exported_name_resolves() -> None:
    missing = [name for name in executor.__all__ if not hasattr(executor, name)]
    assert missing == []


def test_exported_names_are_executors_own() -> None:
    # Each export is defined by pilot itself, not re-exported from a dependency.
    foreign = [
        name
        for name in executor.__all__
        if name != "__version__" and not getattr(executor, name).__module__.startswith("executor")
    ]
    assert foreign == []


def _side_effect_submodules() -> set[str]:
    """Public names that are ``executor``'s own submodules, bound by importing them."""
    return {
        name
        for name, value in vars(executor).items()
        if not name.startswith("_")
        and isinstance(value, types.ModuleType)
        and value.__name__ == f"executor.{name}"
    }


def test_no_public_name_leaks() -> None:
    public = {name for name in vars(executor) if not name.startswith("_")}
    exported = {name for name in executor.__all__ if not name.startswith("_")}
    # Submodules appear as attributes when ``executor/__init__.py`` imports from them;
    # anything else public (a stray ``import os``, a helper) must be in ``__all__``.
    assert public == exported | _side_effect_submodules()


def test_exports_are_not_modules() -> None:
    modules = [n for n in executor.__all__ if isinstance(getattr(executor, n), types.ModuleType)]
    assert modules == []


def test_version_is_a_nonempty_string() -> None:
    assert isinstance(executor.__version__, str)
    assert executor.__version__
