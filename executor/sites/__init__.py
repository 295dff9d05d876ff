"""Find sites by name: backends in one registry, site files on a search path.

``local`` needs no file. Other sites are YAML files found, in order, in
``./site_configs/``, ``~/.config/pilot/sites/``, the site files shipped inside the
package (``executor/sites/configs/``: ``usdf-slurm``, ``slurm-local``, ``local``,
``globus-example``, ``summit-k8s``), or given as a path. The first file of a name wins,
so a user's copy overrides a shipped one.

Backends: ``local``, ``slurm``, ``kubernetes`` (pods, with the extra
``pilot-executor[kubernetes]``) and ``globus_compute`` (Globus Compute endpoints, with
the extra ``pilot-executor[globus]``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from executor.errors import ConfigError
from executor.sites.base import SiteConfig

__all__ = [
    "SiteConfig",
    "backends",
    "get_site",
    "shipped_sites",
    "site_files",
    "site_search_path",
]

# backend name -> "module:class"; loaded on first use so `import executor` stays cheap.
_BACKENDS = {
    "globus_compute": "executor.sites.globus_compute:GlobusComputeSite",
    "kubernetes": "executor.sites.kubernetes:KubernetesSite",
    "local": "executor.sites.local:LocalSite",
    "slurm": "executor.sites.slurm:SlurmSite",
}


def backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[SiteConfig]:
    if name not in _BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(backends())}")
    module_name, _, class_name = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def shipped_sites() -> Path:
    """The directory of the site files installed with the package (package data)."""
    from importlib.resources import files

    # A plain directory for every install pip makes (wheel or editable); not a zip.
    return Path(str(files("executor.sites").joinpath("configs")))


def site_search_path() -> list[Path]:
    return [
        Path.cwd() / "site_configs",
        Path.home() / ".config" / "pilot" / "sites",
        shipped_sites(),
    ]


def site_files(directory: Path | None = None) -> list[tuple[str, Path | None]]:
    """Site names and their files: ``directory``'s, or the search path's (first one wins).

    ``local`` is listed with no file when no file overrides it.
    """
    found: dict[str, Path | None] = {}
    for folder in [directory] if directory is not None else site_search_path():
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            found.setdefault(path.stem, path)
    if directory is None:
        found.setdefault("local", None)
    return sorted(found.items())


def get_site(name_or_path: str | None = None) -> SiteConfig:
    """Load a site by name (``local``, a file on the search path) or by file path."""
    from executor.formats.yamlio import read_yaml

    name_or_path = name_or_path or "local"
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        path: Path | None = candidate
    else:
        path = next(
            (
                d / f"{name_or_path}.yaml"
                for d in site_search_path()
                if (d / f"{name_or_path}.yaml").is_file()
            ),
            None,
        )
    if path is None:
        if name_or_path == "local":
            return backend_class("local")(name="local")
        known = sorted(
            {"local"} | {p.stem for d in site_search_path() if d.is_dir() for p in d.glob("*.yaml")}
        )
        raise ConfigError(f"unknown site {name_or_path!r}; available: {', '.join(known)}")
    try:
        data = read_yaml(path) or {}
    except Exception as exc:  # GraphError from the YAML reader; re-badge it as config
        raise ConfigError(str(exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a site file must be a mapping with a 'backend' key")
    backend = data.get("backend", "local")
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ConfigError(
            f"{path}: backend: unknown backend {backend!r}; available: {', '.join(backends())}; "
            "write e.g. `backend: slurm`"
        )
    return backend_class(backend).from_mapping(path.stem, dict(data), source=str(path))
