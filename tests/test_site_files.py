"""Site files are checked when they are loaded: every field of every backend and pool has
its type checked (from the dataclass annotations), durations and memory sizes are read in
their units, and a wrong value exits 2 naming the file, the field and a valid example."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from click.testing import CliRunner

from executor.cli import cli
from executor.errors import ConfigError
from executor.model.fields import check_fields
from executor.model.units import Seconds
from executor.policy.pools import POOL_KEYS, PoolConfig
from executor.sites import backend_class, backends, get_site
from executor.sites.base import SiteConfig
from executor.sites.slurm import SlurmSite

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "executor" / "sites" / "configs"
HELLO = ROOT / "examples" / "hello" / "workflow.yaml"


def _site_file(tmp_path: Path, text: str, backend: str = "local") -> Path:
    path = tmp_path / "bad-site.yaml"
    path.write_text(f"backend: {backend}\n{text}\n")
    return path


# (backend, the YAML line, the field named, what the message says the field takes)
BAD_VALUES = [
    ("local", 'packing_target: [10s]', "packing_target", "a duration"),
    ("local", 'packing_target: "ten seconds"', "packing_target", "not a duration"),
    ("local", 'packing_max_jobs: "many"', "packing_max_jobs", "expected a whole number"),
    ("local", "packing_max_jobs: true", "packing_max_jobs", "expected a whole number"),
    ("local", "memory_tolerance: true", "memory_tolerance", "expected a number"),
    ("local", 'memory_tolerance: "10%"', "memory_tolerance", "expected a number"),
    ("local", "address: 5", "address", "expected text"),
    ("local", "worker_init: [a]", "worker_init", "expected text"),
    ("local", "monitoring_db: {path: x}", "monitoring_db", "expected text"),
    ("local", "shared_filesystem: 1", "shared_filesystem", "expected true or false"),
    ("local", 'ship_runtime: "yes"', "ship_runtime", "expected true or false"),
    ("local", "max_payload: true", "max_payload", "expected a memory size"),
    ("local", "max_payload: lots", "max_payload", "not a memory size"),
    ("slurm", "scheduler_options: 3", "scheduler_options", "expected text"),
    ("slurm", "partition: [debug]", "partition", "expected text"),
    ("slurm", "account: 42", "account", "expected text"),
    ("slurm", "exclusive: 1", "exclusive", "expected true or false"),
    ("slurm", "nodes_per_block: 1.5", "nodes_per_block", "expected a whole number"),
    ("slurm", "cores_per_node: true", "cores_per_node", "expected a whole number"),
    ("slurm", "memory_per_node: [1]", "memory_per_node", "expected a memory size"),
    ("slurm", "walltime: [2h]", "walltime", "expected a duration"),
    ("slurm", "drain: true", "drain", "expected a duration"),
    ("slurm", "driver_walltime: {days: 7}", "driver_walltime", "expected a duration"),
    ("slurm", "poll_interval: true", "poll_interval", "expected a duration"),
    ("slurm", "cmd_timeout: fast", "cmd_timeout", "not a duration"),
    ("slurm", 'cmd_attempts: "4"', "cmd_attempts", "expected a whole number"),
    ("slurm", "heartbeat_threshold: false", "heartbeat_threshold", "expected a duration"),
]  # fmt: skip


@pytest.mark.parametrize(("backend", "line", "key", "expected"), BAD_VALUES)
def test_a_wrong_type_is_refused_at_load_naming_file_field_and_type(
    tmp_path: Path, backend: str, line: str, key: str, expected: str
):
    path = _site_file(tmp_path, line, backend)
    with pytest.raises(ConfigError) as caught:
        get_site(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message, message
    # ... and shows what to write instead.
    assert "write e.g." in message, message


# (the pool's YAML settings, the field named, what the message says the field takes)
BAD_POOL_VALUES = [
    ("{memory: [1]}", "memory", "expected a memory size"),
    ("{memory: huge}", "memory", "not a memory size"),
    ('{max_blocks: "2"}', "max_blocks", "a whole number, got '2' (text; remove the quotes"),
    ("{cores: true}", "cores", "expected a whole number, got true (a boolean)"),
    ("{cores: 1.5}", "cores", "expected a whole number"),
    ("{workers: many}", "workers", "expected a whole number or auto"),
    ("{init_blocks: ~}", "init_blocks", "expected a whole number, got nothing"),
    ("{min_blocks: [0]}", "min_blocks", "expected a whole number"),
]  # fmt: skip


@pytest.mark.parametrize("backend", ["local", "slurm"])
@pytest.mark.parametrize(("settings", "key", "expected"), BAD_POOL_VALUES)
def test_a_wrong_pool_value_names_the_file_the_pool_and_the_field(
    tmp_path: Path, backend: str, settings: str, key: str, expected: str
):
    path = _site_file(tmp_path, f"pools: {{small: {settings}}}", backend)
    with pytest.raises(ConfigError) as caught:
        get_site(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: pool 'small': {key}: "), message
    assert expected in message, message
    assert "write e.g." in message or "must be" in message, message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("pools: {small: 5}", "pool 'small'"),  # was a TypeError traceback
        ("pools: {small: [cores, 2]}", "pool 'small'"),
        ("backend: [slurm]", "backend"),  # was a TypeError traceback (unhashable list)
        ("backend: 7", "backend"),
    ],
)
def test_a_wrong_shape_is_a_config_error_not_a_crash(tmp_path: Path, line: str, key: str):
    path = tmp_path / "bad-site.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"^{path}: {key}"):
        get_site(str(path))


def _every_option(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in ("name", "source", "pools")]


@pytest.mark.parametrize(
    ("backend", "key"),
    [(backend, key) for backend in backends() for key in _every_option(backend_class(backend))],
)
def test_every_option_of_every_backend_is_type_checked(tmp_path: Path, backend: str, key: str):
    """A backend added to the registry gets its fields checked without writing a check."""
    path = _site_file(tmp_path, f"{key}: {{not: [the, right, type]}}", backend)
    with pytest.raises(ConfigError, match=f"^{path}: {key}: expected "):
        get_site(str(path))


@pytest.mark.parametrize("key", POOL_KEYS)
def test_every_pool_option_is_type_checked(tmp_path: Path, key: str):
    path = _site_file(tmp_path, f"pools: {{small: {{{key}: {{not: [the, right, type]}}}}}}")
    with pytest.raises(ConfigError, match=f"^{path}: pool 'small': {key}: expected "):
        get_site(str(path))


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("10s", 10.0), ("5m", 300.0), ("1h", 3600.0), ("90", 90.0), ("2.5", 2.5),
     ('"2:00:00"', 7200.0), ("2:00:00", 7200.0), ("0", 0.0)],
)  # fmt: skip
def test_packing_target_is_a_duration_in_seconds(tmp_path: Path, written: str, seconds: float):
    site = get_site(str(_site_file(tmp_path, f"packing_target: {written}")))
    assert site.packing_target == seconds
    assert isinstance(site.packing_target, float)


def test_slurm_durations_load_in_seconds_and_walltimes_as_written(tmp_path: Path):
    text = "poll_interval: 30s\ncmd_timeout: 1m\nheartbeat_threshold: 2m\nwalltime: 2:00:00\n"
    site = get_site(str(_site_file(tmp_path, text + "memory_per_node: 4GB", "slurm")))
    assert isinstance(site, SlurmSite)
    assert (site.poll_interval, site.cmd_timeout, site.heartbeat_threshold) == (30.0, 60.0, 120)
    assert site.walltime == "2:00:00"  # shown back as written; read by slurm_time()
    assert site.memory_per_node == 4000
    assert type(site).from_dict(site.to_dict()) == site


def test_a_negative_packing_target_says_zero_turns_packing_off(tmp_path: Path):
    with pytest.raises(ConfigError, match="packing_target: -1 must be positive.*0 for no packing"):
        get_site(str(_site_file(tmp_path, "packing_target: -1")))


def test_range_checks_still_apply_after_the_type_checks(tmp_path: Path):
    with pytest.raises(ConfigError, match="memory_tolerance: 11 must be between 0 and 10"):
        get_site(str(_site_file(tmp_path, "memory_tolerance: 11")))
    with pytest.raises(ConfigError, match="packing_max_jobs: 0 must be >= 1"):
        get_site(str(_site_file(tmp_path, "packing_max_jobs: 0")))
    with pytest.raises(ConfigError, match="cores_per_node: 0 must be a whole number >= 1"):
        get_site(str(_site_file(tmp_path, "cores_per_node: 0", "slurm")))


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=str)
def test_every_shipped_site_file_loads(path: Path):
    site = get_site(str(path))
    assert site.source == str(path)
    assert type(site).from_dict(site.to_dict()) == site


def test_pilot_sites_shows_the_shipped_files_as_valid():
    result = CliRunner().invoke(cli, ["sites", str(SHIPPED), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["sites"]
    assert rows and all(row["problem"] is None for row in rows), rows


def test_pilot_sites_shows_a_wrongly_typed_file_as_invalid(tmp_path: Path):
    _site_file(tmp_path, "packing_max_jobs: many")
    result = CliRunner().invoke(cli, ["sites", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)["sites"]
    assert "packing_max_jobs: expected a whole number" in row["problem"]


@pytest.mark.parametrize(
    ("line", "backend", "says"),
    [
        ('packing_max_jobs: "many"', "local", "packing_max_jobs: expected a whole number"),
        ("memory_tolerance: true", "local", "memory_tolerance: expected a number"),
        ("address: 5", "local", "address: expected text"),
        ("worker_init: [a]", "local", "worker_init: expected text"),
        ("scheduler_options: 3", "slurm", "scheduler_options: expected text"),
        ("pools: {default: {memory: [1]}}", "local", "pool 'default': memory: expected"),
    ],
)
def test_pilot_validate_with_a_bad_site_file_exits_2(
    tmp_path: Path, pilot_home: Path, line: str, backend: str, says: str
):
    path = _site_file(tmp_path, line, backend)
    result = CliRunner().invoke(cli, ["validate", str(HELLO), "--site", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}: {says}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "line",
    ['pools: {default: {max_blocks: "2"}}', "shared_filesystem: 1", "pools: {default: 5}"],
)
def test_pilot_submit_with_a_bad_site_file_exits_2_and_starts_nothing(
    tmp_path: Path, pilot_home: Path, line: str
):
    path = _site_file(tmp_path, line)
    db = tmp_path / "x.db"
    result = CliRunner().invoke(cli, ["submit", str(HELLO), "--site", str(path), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert f"{path}: " in result.output and "expected" in result.output
    assert not result.output.startswith("run ")
    assert not db.exists() and not pilot_home.exists()


# -- a future backend gets all of this by declaring its fields ------------------------------


@dataclass(frozen=True, kw_only=True)
class _KubernetesLike(SiteConfig):
    backend: ClassVar[str] = "kubernetes-like"

    namespace: str = "default"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[str, ...] = ()
    pod_start_timeout: Seconds = 120.0


def test_a_new_backend_gets_its_fields_checked_from_its_annotations():
    site = _KubernetesLike.from_mapping(
        "k8s",
        {"namespace": "rubin", "image_pull_policy": "Always", "node_selector": {"zone": "a"},
         "tolerations": ["gpu", "spot"], "pod_start_timeout": "5m"},
        source="k8s.yaml",
    )  # fmt: skip
    assert isinstance(site, _KubernetesLike)
    assert site.tolerations == ("gpu", "spot") and site.pod_start_timeout == 300.0
    for key, value, expected in [
        ("namespace", 3, "expected text"),
        ("image_pull_policy", "Sometimes", "expected one of Always, IfNotPresent, Never"),
        ("node_selector", {"zone": 1}, "expected a mapping"),
        ("node_selector", ["zone"], "expected a mapping"),
        ("tolerations", "gpu", "expected a list (each text)"),
        ("pod_start_timeout", True, "expected a duration"),
    ]:
        with pytest.raises(ConfigError, match=f"^k8s.yaml: {key}: {re.escape(expected)}"):
            _KubernetesLike.from_mapping("k8s", {key: value}, source="k8s.yaml")


def test_an_annotation_the_checker_cannot_read_is_a_programming_error():
    @dataclass(frozen=True, kw_only=True)
    class Tags:
        tags: set[str] = field(default_factory=set)

    @dataclass(frozen=True, kw_only=True)
    class Shape:
        shape: tuple[int, int] = (1, 1)

    for config in (Tags(), Shape()):
        with pytest.raises(TypeError, match="cannot check"):
            check_fields(config, "odd.yaml")


def test_pools_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="pool 'p': cores: expected a whole number, got true"):
        PoolConfig(name="p", cores=True)
    assert PoolConfig(name="p", memory="2GB").memory == 2000  # type: ignore[arg-type]
