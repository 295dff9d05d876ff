"""Sites after `pip install .` (issue 19): shipped site files, the local site's cores, and
read commands that never create a database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
from click.testing import CliRunner

from executor.cli import cli
from executor.model.graph import Job
from executor.policy.pools import assign_pools
from executor.sites import get_site, site_files
from executor.sites.local import LocalSite
from executor.sites.slurm import SlurmSite

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = (
    "globus-example.yaml", "local.yaml", "slurm-local.yaml", "summit-k8s.yaml", "usdf-slurm.yaml"
)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and home with no site files of their own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_site_files_are_package_resources():
    configs = files("executor.sites").joinpath("configs")
    assert sorted(p.name for p in configs.iterdir() if p.name.endswith(".yaml")) == list(SHIPPED)


def test_pyproject_ships_the_site_files_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "configs/*.yaml" in data["tool"]["setuptools"]["package-data"]["executor.sites"]


def test_a_shipped_site_is_found_by_name_from_any_directory(elsewhere: Path):
    site = get_site("usdf-slurm")
    assert isinstance(site, SlurmSite) and site.partition == "milano"
    assert dict(site_files())["slurm-local"] is not None


def test_a_users_site_file_overrides_the_shipped_one(elsewhere: Path):
    mine = elsewhere / ".config" / "pilot" / "sites"
    mine.mkdir(parents=True)
    (mine / "usdf-slurm.yaml").write_text("backend: slurm\npartition: roma\n")
    assert get_site("usdf-slurm").partition == "roma"


def test_the_wheel_holds_the_site_files_and_they_load_after_install(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "executor", source / "executor",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", str(source), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=240)  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"executor/sites/configs/{name}" for name in SHIPPED} <= set(names)

    target = tmp_path / "installed"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=240)
    env = {**os.environ, "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    code = (
        "import executor; from executor.sites import get_site; "
        "print(executor.__file__); print(get_site('usdf-slurm').partition)"
    )
    shown = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    where, partition = shown.stdout.split()
    assert Path(where).is_relative_to(target) and partition == "milano"


def test_the_local_site_lets_a_job_use_every_core():
    cores = os.cpu_count() or 1
    site = LocalSite(name="local")
    [pool] = site.pools
    assert (pool.cores, site.workers(pool)) == (cores, cores)
    # Parsl starts min(workers, cores / cores_per_worker) workers: one per core.
    assert site.executor_options(pool)["cores_per_worker"] == 1


def test_a_local_pool_of_two_workers_keeps_both_on_any_machine():
    site = LocalSite.from_mapping("two", {"pools": {"default": {"cores": 1, "workers": 2}}}, "x")
    [pool] = site.pools
    options = site.executor_options(pool)
    assert site.workers(pool) == 2
    assert int((os.cpu_count() or 1) / options["cores_per_worker"]) >= 2


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a machine with 2 cores")
def test_a_two_core_job_validates_on_the_local_site(tmp_path: Path, elsewhere: Path):
    job = Job(name="wide", label="wide", command="true", cores=2)
    assert assign_pools([job], get_site("local").pools) == {"wide": "default"}
    path = tmp_path / "workflow.yaml"
    path.write_text("jobs: [{name: wide, command: 'true', cores: 2}]\n")
    result = CliRunner().invoke(cli, ["validate", str(path)], prog_name="pilot")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args", [["status"], ["status", "RUN"], ["report", "RUN"], ["logs", "RUN", "job"]], ids=str
)
def test_a_read_command_with_a_mistyped_db_exits_2_and_creates_nothing(
    tmp_path: Path, args: list[str]
):
    typo = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, [*args, "--db", str(typo)], prog_name="pilot")
    assert result.exit_code == 2, result.output
    assert f"no monitoring database at {typo}" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
