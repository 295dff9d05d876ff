"""``sbatch`` that times out is never blindly repeated: the pilot is looked up in ``squeue``
by the tag its submission carries, adopted if it landed, and submitted again only if not.

Most tests run Parsl's real ``SlurmProvider.submit`` against fake ``sbatch``/``squeue``/
``scancel`` scripts; the last one wraps the real ``sbatch`` of the test cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from slurm_cluster import require_slurm

from executor.errors import SiteError
from executor.sites.slurm import SlurmSite

# A controller in a file: sbatch does what the next line of `actions` says (accept,
# accept-hang: accept then answer too late, hang: answer too late without accepting,
# accept-twice-hang, refuse, unreachable) and records jobs in `jobs` (one JSON object a line).
FAKE_SBATCH = r"""#!/usr/bin/env python3
import json, os, re, sys, time
state = os.environ["FAKE_SLURM"]
with open(os.path.join(state, "sbatch.log"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
calls = sum(1 for _ in open(os.path.join(state, "sbatch.log")))
actions = open(os.path.join(state, "actions")).read().split()
action = actions[min(calls, len(actions)) - 1]
if action == "refuse":
    sys.exit("sbatch: error: Batch job submission failed: Invalid partition name specified")
if action == "unreachable":
    sys.exit("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
             "(connect failure)")
comment = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--comment=")), "")
script = open(sys.argv[-1]).read()
name = re.search(r"^#SBATCH --job-name=(\S+)", script, re.M).group(1)
jobs_path = os.path.join(state, "jobs")
for _ in range({"accept": 1, "accept-hang": 1, "accept-twice-hang": 2}.get(action, 0)):
    job_id = str(1001 + sum(1 for _ in open(jobs_path)))
    with open(jobs_path, "a") as jobs:
        jobs.write(json.dumps({"id": job_id, "name": name, "comment": comment}) + "\n")
if action.endswith("hang"):
    time.sleep(60)
print(job_id if "--parsable" in sys.argv else f"Submitted batch job {job_id}")
"""

# squeue answers "%i %k" (id, comment) for a --name, or "%i %t" for Parsl's --job query.
FAKE_SQUEUE = r"""#!/usr/bin/env python3
import json, os, sys
state = os.environ["FAKE_SLURM"]
with open(os.path.join(state, "squeue.log"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
jobs = [json.loads(line) for line in open(os.path.join(state, "jobs"))]
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
if "--job" in sys.argv:
    wanted = sys.argv[sys.argv.index("--job") + 1].split(",")
    for job in jobs:
        if job["id"] in wanted:
            print(job["id"], "PD")
else:
    for job in jobs:
        if args.get("--name", job["name"]) == job["name"]:
            print(job["id"], job["comment"])
"""

FAKE_SCANCEL = r"""#!/usr/bin/env python3
import os, sys
with open(os.path.join(os.environ["FAKE_SLURM"], "scancel.log"), "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
"""


class FakeSlurm:
    def __init__(self, root: Path):
        self.root = root

    def script(self, *actions: str) -> None:
        (self.root / "actions").write_text("\n".join(actions) + "\n")

    def _lines(self, name: str) -> list[str]:
        path = self.root / name
        return path.read_text().splitlines() if path.exists() else []

    @property
    def submissions(self) -> list[list[str]]:
        return [json.loads(line) for line in self._lines("sbatch.log")]

    @property
    def jobs(self) -> list[dict]:
        return [json.loads(line) for line in self._lines("jobs")]

    @property
    def cancelled(self) -> list[str]:
        return [job for line in self._lines("scancel.log") for job in line.split()]

    @property
    def queries(self) -> int:
        return len(self._lines("squeue.log"))

    def add_job(self, **job: str) -> None:
        with open(self.root / "jobs", "a") as jobs:
            jobs.write(json.dumps(job) + "\n")


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE), ("scancel", FAKE_SCANCEL)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    state = tmp_path / "slurm"
    state.mkdir()
    (state / "jobs").write_text("")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return FakeSlurm(state)


def _provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cmd_timeout: float = 1):
    """The provider a Slurm site builds, with a short settle and command timeout."""
    from executor.sites.slurm_provider import PilotSlurmProvider

    monkeypatch.setattr(PilotSlurmProvider, "SETTLE_SECONDS", 0.5, raising=False)
    site = SlurmSite(
        name="test", partition="debug", cores_per_node=1, walltime="5m",
        cmd_timeout=cmd_timeout, cmd_attempts=3,
    )  # fmt: skip
    provider = site.make_provider(site.pools[0])
    provider.script_dir = str(tmp_path / "submit_scripts")
    os.makedirs(provider.script_dir, exist_ok=True)
    return provider


def _comment(argv: list[str]) -> str:
    return next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--comment="))


def test_a_submission_accepted_but_answered_late_is_adopted_not_repeated(
    tmp_path: Path, fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
):
    # A second sbatch would be accepted (and answered) at once: a second pilot.
    fake_slurm.script("accept-hang", "accept")
    provider = _provider(tmp_path, monkeypatch)

    job_id = provider.submit("true", 1, job_name="parsl.default.block-0")

    assert job_id == "1001"
    assert len(fake_slurm.submissions) == 1
    [job] = fake_slurm.jobs
    assert job["name"].startswith("parsl.default.block-0.")
    assert job["comment"].startswith("pilot:")
    assert job_id in provider.resources
    assert fake_slurm.cancelled == []


def test_a_timed_out_submission_that_never_landed_is_submitted_again(
    tmp_path: Path, fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
):
    fake_slurm.script("hang", "accept")
    provider = _provider(tmp_path, monkeypatch)

    job_id = provider.submit("true", 1, job_name="parsl.default.block-3")

    assert job_id == "1001"
    first, second = fake_slurm.submissions
    # Both attempts carry one tag: a late first one would be found as the same pilot.
    assert _comment(first) == _comment(second)
    assert [job["id"] for job in fake_slurm.jobs] == ["1001"]
    assert fake_slurm.cancelled == []


def test_duplicates_found_after_a_timeout_are_cancelled_but_the_oldest(
    tmp_path: Path, fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
):
    fake_slurm.script("accept-twice-hang")
    provider = _provider(tmp_path, monkeypatch)

    job_id = provider.submit("true", 1, job_name="parsl.default.block-0")

    assert job_id == "1001"
    assert len(fake_slurm.submissions) == 1
    assert fake_slurm.cancelled == ["1002"]


def test_a_duplicate_that_lands_after_the_resubmission_is_cancelled_at_the_next_poll(
    tmp_path: Path, fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
):
    fake_slurm.script("hang", "accept")
    provider = _provider(tmp_path, monkeypatch)
    job_id = provider.submit("true", 1, job_name="parsl.default.block-0")
    [job] = fake_slurm.jobs
    # The first, timed-out request is processed by the controller only now.
    fake_slurm.add_job(id="1002", name=job["name"], comment=job["comment"])

    provider.status([job_id])

    assert fake_slurm.cancelled == ["1002"]
    assert job_id not in fake_slurm.cancelled


def test_a_refused_submission_is_neither_retried_nor_looked_up(
    tmp_path: Path, fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
):
    fake_slurm.script("refuse")
    provider = _provider(tmp_path, monkeypatch)
    queries = fake_slurm.queries

    with pytest.raises(SiteError) as raised:
        provider.submit("true", 1, job_name="parsl.default.block-0")

    assert not raised.value.transient and "Invalid partition" in str(raised.value)
    assert len(fake_slurm.submissions) == 1 and fake_slurm.queries == queries


def test_an_unreachable_controller_is_tried_again_without_a_look_up(
    tmp_path: Path, fake_slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch
):
    fake_slurm.script("unreachable", "accept")
    provider = _provider(tmp_path, monkeypatch)
    queries = fake_slurm.queries

    job_id = provider.submit("true", 1, job_name="parsl.default.block-0")

    # "connect failure": the request never left, so no job can have come of it.
    assert job_id == "1001" and len(fake_slurm.submissions) == 2
    assert fake_slurm.queries == queries


def test_a_driver_job_answered_late_is_adopted_not_repeated(tmp_path: Path, fake_slurm: FakeSlurm):
    fake_slurm.script("accept-hang", "accept")
    site = SlurmSite(name="fake", cmd_timeout=1, cmd_attempts=3)
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()

    job_id = site.submit_driver(["pilot", "drive"], run_dir)

    assert job_id == "1001"
    assert len(fake_slurm.submissions) == 1
    assert [job["name"] for job in fake_slurm.jobs] == ["pilot-driver-run-1"]


# -- the real test cluster -----------------------------------------------------------------
def _queued(prefix: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i %j"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if line.split()[1].startswith(prefix)]


@pytest.fixture
def slow_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ``sbatch`` behind a wrapper that answers after the command timeout."""
    require_slurm()
    real = shutil.which("sbatch")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "sbatch"
    calls = tmp_path / "calls"
    # First call: submit for real (or not at all), then answer too late; later calls: sbatch.
    wrapper.write_text(
        "#!/bin/bash\n"
        f"echo x >> {calls}\n"
        f'if [ "$(wc -l < {calls})" -gt 1 ]; then exec {real} "$@"; fi\n'
        f'if [ -f {tmp_path / "accept"} ]; then {real} "$@"; fi\n'
        "sleep 60\n"
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield tmp_path
    leftovers = _queued("parsl.adopt-test.")
    if leftovers:
        subprocess.run(["scancel", *leftovers], timeout=30, check=False)
    wait_for(lambda: _queued("parsl.adopt-test.") == [], timeout=30, what="test pilots gone")


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "lost"])
def test_real_slurm_keeps_one_pilot_per_block_when_sbatch_answers_late(
    slow_sbatch: Path, accepted: bool, monkeypatch: pytest.MonkeyPatch
):
    if accepted:
        (slow_sbatch / "accept").touch()
    provider = _provider(slow_sbatch, monkeypatch, cmd_timeout=2)
    started = time.monotonic()

    job_id = provider.submit("sleep 300", 1, job_name="parsl.adopt-test.block-0")

    assert _queued("parsl.adopt-test.block-0.") == [job_id]
    calls = (slow_sbatch / "calls").read_text().count("x")
    assert calls == (1 if accepted else 2)
    assert time.monotonic() - started < 30
    provider.cancel([job_id])
    wait_for(lambda: _queued("parsl.adopt-test.") == [], timeout=30, what="pilot cancelled")
