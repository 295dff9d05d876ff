"""The slurm site without running pilots: options, walltime, submit lines, and commands
that hang or fail (a busy controller)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import run_pilot
from slurm_cluster import require_slurm, write_site

from executor.errors import ConfigError, SiteError
from executor.sites import get_site, site_files
from executor.sites.commands import TIMED_OUT, run_command
from executor.sites.slurm import SlurmSite, slurm_time


def _site(tmp_path: Path, text: str) -> SlurmSite:
    path = tmp_path / "site.yaml"
    path.write_text("backend: slurm\n" + text)
    site = get_site(str(path))
    assert isinstance(site, SlurmSite)
    return site


def test_unquoted_walltime_is_two_hours_not_7200_minutes(tmp_path: Path):
    site = _site(tmp_path, "walltime: 2:00:00\n")
    provider = site.make_provider(site.pools[0])
    assert provider.walltime == "02:00:00"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("90m", "01:30:00"), ("45s", "00:01:00"), ("1-00:00:00", "24:00:00"), ("30:00", "00:30:00")],
)
def test_walltime_forms_become_slurm_time(given: str, expected: str):
    from executor.model.units import parse_duration

    assert slurm_time(parse_duration(given)) == expected


def test_bad_values_are_refused_at_load(tmp_path: Path):
    with pytest.raises(ConfigError, match="walltime"):
        _site(tmp_path, "walltime: two hours\n")
    with pytest.raises(ConfigError, match="exclusive"):
        _site(tmp_path, "exclusive: sometimes\n")
    with pytest.raises(ConfigError, match="did you mean 'partition'"):
        _site(tmp_path, "partitoin: debug\n")


@pytest.mark.parametrize("exclusive", [True, False])
def test_exclusive_is_honoured_both_ways(tmp_path: Path, exclusive: bool):
    site = _site(tmp_path, f"exclusive: {str(exclusive).lower()}\npartition: debug\n")
    options = site.make_provider(site.pools[0]).scheduler_options
    assert ("--exclusive" in options) is exclusive
    assert "#SBATCH --partition=debug" in options


def test_pool_memory_and_cores_size_the_request(tmp_path: Path):
    site = _site(
        tmp_path,
        "account: rubin\nqos: normal\nscheduler_options: '#SBATCH --comment=x'\n"
        "pools: {small: {cores: 2, memory: 1.5GB, workers: 3}}\n",
    )
    provider = site.make_provider(site.pools[0])
    assert "#SBATCH --mem=4500M" in provider.scheduler_options
    assert "#SBATCH --account=rubin" in provider.scheduler_options
    assert "#SBATCH --qos=normal" in provider.scheduler_options
    assert "#SBATCH --comment=x" in provider.scheduler_options
    assert provider.cores_per_node == 6


def test_pilots_drain_before_their_walltime(tmp_path: Path):
    site = _site(tmp_path, "walltime: 1:00:00\ndrain: 10m\nheartbeat_threshold: 45\n")
    options = site.executor_options(site.pools[0])
    assert options["drain_period"] == 3000
    assert options["heartbeat_threshold"] == 45
    # A drain longer than the walltime would stop the pilot at once: at most half.
    short = _site(tmp_path, "walltime: 2m\ndrain: 10m\n")
    assert short.executor_options(short.pools[0])["drain_period"] == 60


def test_site_round_trips_through_the_run_directory(tmp_path: Path):
    site = _site(tmp_path, "walltime: 2:00:00\nmemory_per_node: 4GB\npartition: debug\n")
    again = SlurmSite.from_dict(site.to_dict())
    assert again == site


def test_shipped_site_files_load():
    names = dict(site_files(Path(__file__).resolve().parent.parent / "executor/sites/configs"))
    usdf = get_site(str(names["usdf-slurm"]))
    assert isinstance(usdf, SlurmSite)
    assert usdf.exclusive is False and usdf.walltime == "2:00:00"
    assert "loadLSST.bash" in usdf.worker_init
    assert isinstance(get_site(str(names["slurm-local"])), SlurmSite)


def test_pilot_sites_lists_files_in_a_directory(tmp_path: Path):
    write_site(tmp_path, "mine")
    (tmp_path / "broken.yaml").write_text("backend: slurm\nwalltime: soon\n")
    result = run_pilot("sites", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    import json

    rows = {row["site"]: row for row in json.loads(result.stdout)["sites"]}
    assert rows["mine"]["backend"] == "slurm"
    assert "walltime" in rows["broken"]["problem"]


# -- commands that hang or fail ----------------------------------------------------------
def test_a_hanging_command_is_killed_and_retried_with_backoff():
    started = time.monotonic()
    result = run_command("sleep 30", timeout=0.5, attempts=3, backoff=0.1)
    assert result.returncode == TIMED_OUT and result.timed_out and result.transient
    assert result.attempts == 3
    assert time.monotonic() - started < 5


def test_a_busy_controller_error_is_retried_until_it_clears(tmp_path: Path):
    counter = tmp_path / "tries"
    # Fails like a busy slurmctld twice, then answers.
    command = (
        f"echo x >> {counter}; "
        f'if [ $(wc -l < {counter}) -lt 3 ]; then echo "squeue: error: Socket timed out on '
        'send/recv operation" >&2; exit 1; fi; echo 42'
    )
    result = run_command(command, timeout=5, attempts=4, backoff=0.05)
    assert result.returncode == 0 and result.stdout.strip() == "42"
    assert result.attempts == 3


def test_a_wrong_request_is_not_retried():
    result = run_command("echo 'invalid partition specified' >&2; exit 1", attempts=4)
    assert result.returncode == 1 and not result.transient and result.attempts == 1


def test_unreachable_controller_gives_a_transient_site_error(tmp_path: Path, monkeypatch):
    """Real Slurm clients against a controller that does not answer: no hang, no crash."""
    require_slurm()
    conf = tmp_path / "slurm.conf"
    # A cluster whose controller port nothing listens on: what a dead slurmctld looks like.
    conf.write_text(
        "ClusterName=gone\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n"
        "AuthType=auth/munge\nMessageTimeout=2\n"
        "NodeName=localhost CPUs=1\nPartitionName=debug Nodes=localhost\n"
    )
    monkeypatch.setenv("SLURM_CONF", str(conf))
    site = _site(tmp_path, "cmd_timeout: 3\ncmd_attempts: 2\n")
    provider = site.make_provider(site.pools[0])
    started = time.monotonic()
    with pytest.raises(SiteError) as raised:
        provider.execute_wait("sbatch --wrap true")
    assert raised.value.transient
    assert "failed after 2 attempt(s)" in str(raised.value)
    code, _, _ = provider.execute_wait("squeue --noheader")  # a query returns, never raises
    assert code != 0
    assert time.monotonic() - started < 30
