"""pilot as a bps WMS plugin, through bps's own API, with GenericWorkflows built in Python.

No Butler: each job is a small script that appends what it saw (its arguments with
every placeholder resolved, its attempt, its environment) to a log, so the tests check
the command lines bps defines, resources, retries, the init and final jobs, and what
``bps report``, ``status``, ``cancel``, ``restart`` and ``ping`` say about real runs.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from bps_helpers import (
    SERVICE_CLASS,
    script,
    wait_for_file,
    wait_for_no_helpers,
    wait_until_ended,
)
from helpers import run_pilot, status_json

bps = pytest.importorskip("lsst.ctrl.bps", reason="needs the bps extra: pip install '.[bps]'")

from lsst.ctrl.bps import (  # noqa: E402
    BpsConfig,
    GenericWorkflow,
    GenericWorkflowExec,
    GenericWorkflowFile,
    GenericWorkflowJob,
    WmsStates,
)
from lsst.ctrl.bps.cancel import cancel as bps_cancel  # noqa: E402
from lsst.ctrl.bps.ping import ping as bps_ping  # noqa: E402
from lsst.ctrl.bps.prepare import prepare as bps_prepare  # noqa: E402
from lsst.ctrl.bps.report import retrieve_report  # noqa: E402
from lsst.ctrl.bps.restart import restart as bps_restart  # noqa: E402
from lsst.ctrl.bps.submit import submit as bps_submit  # noqa: E402

from executor.bps import PilotService  # noqa: E402

# Appends one line per run of a job: its arguments, attempt and environment.
RECORD = """\
echo "$PILOT_JOB_NAME args=$* greeting=${GREETING:-}" >> "$LOG"
"""
# Fails until the file named by its first argument exists (the "fix").
FLAKY = """\
echo "$PILOT_JOB_NAME attempt=$PILOT_ATTEMPT" >> "$LOG"
[ -e "$1" ] || exit "$2"
"""


def _exec(tools: Path, name: str) -> GenericWorkflowExec:
    # As bps writes an executable found through an environment variable.
    return GenericWorkflowExec(name=name, src_uri=f"<ENV:TOOLS>/{name}", transfer_executable=False)


def _job(
    name: str, label: str, exe: GenericWorkflowExec, arguments: str, **fields
) -> GenericWorkflowJob:
    defaults = dict(request_cpus=1, request_memory=300, number_of_retries=0)
    return GenericWorkflowJob(name, label, executable=exe, arguments=arguments,
                              **{**defaults, **fields})  # fmt: skip


def build_workflow(tmp_path: Path, *, visits=(1, 2, 3), flaky_fix: Path | None = None):
    """pipetaskInit -> isr_N -> calibrate_N (N in visits), and a final job.

    With ``flaky_fix``, calibrate_2 exits 3 until that file exists (retried), and
    calibrate_3 exits 2, which is in ``retry_unless_exit`` (never retried); summary_3
    runs after calibrate_3.
    """
    tools = tmp_path / "tools"
    tools.mkdir()
    record = _exec(tools, "record.sh")
    flaky = _exec(tools, "flaky.sh")
    script(tools, "record.sh", RECORD)
    script(tools, "flaky.sh", FLAKY)
    gw = GenericWorkflow("u_someone_demo_20261203T000000Z")
    gw.run_attrs.update({
        "bps_run": "u/someone/demo/20261203T000000Z", "bps_project": "dev",
        "bps_campaign": "quick", "bps_payload": "demo", "bps_operator": "someone",
    })  # fmt: skip
    qgraph = GenericWorkflowFile("runQgraphFile", src_uri=f"file://{tmp_path}/run.qg",
                                 wms_transfer=True, job_shared=True)  # fmt: skip
    butler = GenericWorkflowFile("butlerConfig", src_uri="<ENV:REPO_ROOT>/butler.yaml")
    files = {"qgraphFile": "<FILE:runQgraphFile>", "butlerConfig": "<FILE:butlerConfig>"}
    init = _job("pipetaskInit", "pipetaskInit", record, "init {qgraphFile} {butlerConfig}",
                cmdvals=files)  # fmt: skip
    gw.add_job(init)
    gw.add_job_inputs("pipetaskInit", [qgraph, butler])
    for visit in visits:
        isr = _job(
            f"isr_{visit}", "isr", record, "isr {visit} attempt=<WMS:attemptNum> {qgraphFile}",
            cmdvals={"visit": visit, "qgraphFile": "<FILE:runQgraphFile>"},
            environment={"GREETING": "hi-<ENV:WHO>"}, request_walltime="5",
            request_memory=200, memory_multiplier=2.0, request_memory_max=800,
            number_of_retries=2, retry_unless_exit=[1, 2],
        )  # fmt: skip
        gw.add_job(isr, parent_names=["pipetaskInit"])
        gw.add_job_inputs(isr.name, [qgraph])
        if flaky_fix is not None and visit == 2:
            cal = _job("calibrate_2", "calibrate", flaky, f"{flaky_fix} 3", number_of_retries=1)
        elif flaky_fix is not None and visit == 3:
            cal = _job("calibrate_3", "calibrate", flaky, f"{flaky_fix} 2",
                       number_of_retries=3, retry_unless_exit=[1, 2])  # fmt: skip
        else:
            cal = _job(f"calibrate_{visit}", "calibrate", record, f"calibrate {visit}")
        gw.add_job(cal, parent_names=[isr.name])
        if flaky_fix is not None and visit == 3:  # blocked while calibrate_3 fails
            gw.add_job(_job("summary_3", "summary", record, "summary 3"), parent_names=[cal.name])
    gw.add_final(_job("finalJob", "finalJob", record, "final {butlerConfig}",
                      cmdvals={"butlerConfig": "<FILE:butlerConfig>"}))  # fmt: skip
    gw.add_file(butler)
    return gw


@pytest.fixture
def bps_env(tmp_path: Path, pilot_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The submit-side environment the placeholders read; returns the jobs' log."""
    log = tmp_path / "jobs.log"
    monkeypatch.setenv("TOOLS", str(tmp_path / "tools"))
    monkeypatch.setenv("REPO_ROOT", str(tmp_path / "repo"))
    monkeypatch.setenv("WHO", "rubin")
    monkeypatch.setenv("LOG", str(log))
    # The detached driver and the job's worker find Parsl's commands on PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    return log


def _config(tmp_path: Path, **extra) -> BpsConfig:
    return BpsConfig({"wmsServiceClass": SERVICE_CLASS, "computeSite": "local",
                      "submitPath": str(tmp_path / "submit"), **extra})  # fmt: skip


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_prepare_translates_command_lines_resources_and_order(tmp_path: Path, bps_env: Path):
    config = _config(tmp_path)
    workflow = bps_prepare(config, build_workflow(tmp_path), str(tmp_path / "submit"))

    graph = workflow.translation.graph
    assert graph.names[0] == "pipetaskInit" and graph.names[-1] == "finalJob"
    init = graph["pipetaskInit"]
    # <FILE:> is the file's path (file:// dropped), <ENV:X> the job's own ${X}.
    assert init.command == f"${{TOOLS}}/record.sh init {tmp_path}/run.qg ${{REPO_ROOT}}/butler.yaml"
    isr = graph["isr_2"]
    assert isr.command == f"${{TOOLS}}/record.sh isr 2 attempt=${{PILOT_ATTEMPT}} {tmp_path}/run.qg"
    assert isr.label == "isr" and isr.after == ("pipetaskInit",)
    assert (isr.cores, isr.memory, isr.walltime, isr.retries) == (1, 200, 300.0, 2)
    assert (isr.memory_multiplier, isr.memory_max, isr.retry_unless_exit) == (2.0, 800, (1, 2))
    # Environment values read <ENV:X> at submit: pilot runs jobs in that environment.
    assert dict(isr.environment) == {"GREETING": "hi-rubin"}
    assert graph["calibrate_1"].after == ("isr_1",)
    # The final job waits for every other job (the leaves).
    assert set(graph["finalJob"].after) == {"calibrate_1", "calibrate_2", "calibrate_3"}
    assert workflow.translation.init_job == "pipetaskInit"
    assert workflow.translation.final_job == "finalJob"
    # The submit directory holds the pilot workflow, in a form `pilot validate` reads.
    checked = run_pilot("validate", str(tmp_path / "submit" / "pilot_workflow.json"))
    assert checked.returncode == 0, checked.stderr
    assert "u_someone_demo_20261203T000000Z: 8 jobs" in checked.stdout
    assert "pipetaskInit -> isr_1 -> calibrate_1 -> finalJob" in checked.stdout


def test_a_missing_cmdval_is_refused_naming_the_job(tmp_path: Path, bps_env: Path):
    gw = GenericWorkflow("broken")
    gw.add_job(_job("isr_1", "isr", _exec(tmp_path, "x.sh"), "isr {visit} {missing}",
                    cmdvals={"visit": 1}))  # fmt: skip
    with pytest.raises(Exception, match="isr_1.*missing"):
        bps_prepare(_config(tmp_path), gw, str(tmp_path / "submit"))


def test_submit_returns_at_once_runs_everything_and_reports_per_label(
    tmp_path: Path, bps_env: Path
):
    config = _config(tmp_path)
    submit_dir = tmp_path / "submit"
    workflow = bps_prepare(config, build_workflow(tmp_path), str(submit_dir))

    started = time.monotonic()
    submitted = bps_submit(config, workflow)
    assert time.monotonic() - started < 15  # detached, like HTCondor: not after the run

    run_id = submitted.run_id
    assert run_id  # bps prints `Run Id: <this>`
    assert (submit_dir / "pilot_run.json").is_file()
    assert (submit_dir / "pilot_run").resolve().name == run_id  # the run's files, linked
    service = PilotService({})
    assert wait_until_ended(service, run_id) is WmsStates.SUCCEEDED
    wait_for_no_helpers(run_id)

    lines = _lines(bps_env)
    assert lines[0] == (
        f"pipetaskInit args=init {tmp_path}/run.qg {tmp_path}/repo/butler.yaml greeting="
    )
    assert f"isr_2 args=isr 2 attempt=1 {tmp_path}/run.qg greeting=hi-rubin" in lines
    assert lines[-1] == f"finalJob args=final {tmp_path}/repo/butler.yaml greeting="
    assert Counter(line.split()[0] for line in lines) == Counter(
        {"pipetaskInit": 1, "isr_1": 1, "isr_2": 1, "isr_3": 1,
         "calibrate_1": 1, "calibrate_2": 1, "calibrate_3": 1, "finalJob": 1}
    )  # fmt: skip

    # bps report, by run id and by submit directory, through bps's own retrieval.
    for wms_id in (run_id, str(submit_dir)):
        runs, messages = retrieve_report(SERVICE_CLASS, run_id=wms_id, hist=2)
        assert len(runs) == 1, messages
        report = runs[0]
        assert report.wms_id == run_id and report.state is WmsStates.SUCCEEDED
        assert report.project == "dev" and report.campaign == "quick" and report.payload == "demo"
        assert report.run == "u/someone/demo/20261203T000000Z"
        assert report.path == str(submit_dir.resolve())
        assert report.total_number_jobs == 8
        per_label = {
            label: {s: n for s, n in c.items() if n} for label, c in report.job_summary.items()
        }
        assert per_label == {
            "pipetaskInit": {WmsStates.SUCCEEDED: 1}, "isr": {WmsStates.SUCCEEDED: 3},
            "calibrate": {WmsStates.SUCCEEDED: 3}, "finalJob": {WmsStates.SUCCEEDED: 1},
        }  # fmt: skip
        assert report.run_summary == "pipetaskInit:1;isr:3;calibrate:3;finalJob:1"
    # The summary of finished runs (bps report --hist 1) lists it.
    runs, _ = retrieve_report(SERVICE_CLASS, hist=1)
    assert [r.wms_id for r in runs] == [run_id]
    assert runs[0].job_state_counts[WmsStates.SUCCEEDED] == 8
    # Ended: nothing for bps cancel to act on.
    assert service.list_submitted_jobs(wms_id=run_id) == []
    assert service.cancel(run_id) == (False, f"run {run_id} already ended: succeeded")


def test_failures_retries_final_job_exit_codes_then_restart(tmp_path: Path, bps_env: Path):
    fix = tmp_path / "fixed"
    config = _config(tmp_path)
    workflow = bps_prepare(
        config, build_workflow(tmp_path, flaky_fix=fix), str(tmp_path / "submit")
    )
    run_id = bps_submit(config, workflow).run_id
    service = PilotService({})

    assert wait_until_ended(service, run_id) is WmsStates.FAILED
    wait_for_no_helpers(run_id)
    # The final job ran although jobs failed (bps's FINAL semantics), after every other
    # job had ended, through pilot itself: it is an `always_run` job of the run's graph.
    final_line = f"finalJob args=final {tmp_path}/repo/butler.yaml greeting="
    assert _lines(bps_env)[-1] == final_line
    assert status_json(run_id)["labels"]["finalJob"]["succeeded"] == 1
    attempts = Counter(line.split()[0] for line in _lines(bps_env) if "attempt=" in line
                       and line.startswith("calibrate"))  # fmt: skip
    # calibrate_2 exits 3: retried once (number_of_retries 1); calibrate_3 exits 2, which
    # retry_unless_exit lists: never retried, whatever number_of_retries says.
    assert attempts == {"calibrate_2": 2, "calibrate_3": 1}

    runs, _ = retrieve_report(SERVICE_CLASS, run_id=run_id, return_exit_codes=True)
    report = runs[0]
    assert report.state is WmsStates.FAILED
    states = {job.name: job.state for job in report.jobs}
    assert states["calibrate_2"] is WmsStates.FAILED and states["calibrate_3"] is WmsStates.FAILED
    assert states["calibrate_1"] is WmsStates.SUCCEEDED
    assert states["summary_3"] is WmsStates.PRUNED  # its parent failed for good
    assert states["finalJob"] is WmsStates.SUCCEEDED  # it ran after the failures
    assert sorted(report.exit_code_summary["calibrate"]) == [2, 3]
    state, _ = service.get_status(run_id)
    assert state is WmsStates.FAILED and state.value == 19  # `bps status` exits 19

    # Fix the cause and restart: only what did not succeed runs; the final job again.
    fix.touch()
    before = Counter(line.split()[0] for line in _lines(bps_env))
    new_id, name, message = bps_restart(SERVICE_CLASS, str(tmp_path / "submit"))
    assert (new_id, name, message) == (run_id, "u_someone_demo_20261203T000000Z", "")
    assert wait_until_ended(service, run_id) is WmsStates.SUCCEEDED
    wait_for_no_helpers(run_id)
    after = Counter(line.split()[0] for line in _lines(bps_env))
    # The final job again, last, as DAGMan runs a FINAL node in every pass of a DAG.
    assert after - before == Counter(
        {"calibrate_2": 1, "calibrate_3": 1, "summary_3": 1, "finalJob": 1}
    )
    assert _lines(bps_env)[-1] == final_line
    runs, _ = retrieve_report(SERVICE_CLASS, run_id=run_id)
    assert all(job.state is WmsStates.SUCCEEDED for job in runs[0].jobs)


def test_cancel_stops_a_running_run_and_restart_finishes_it(tmp_path: Path, bps_env: Path):
    gate = tmp_path / "go"
    tools = tmp_path / "tools"
    tools.mkdir()
    script(tools, "slow.sh", f'echo "$PILOT_JOB_NAME" >> "$LOG"\n'
                             f'[ -e {gate} ] || sleep 120\n')  # fmt: skip
    gw = GenericWorkflow("cancel_me")
    gw.add_job(_job("slow_1", "slow", _exec(tools, "slow.sh"), ""))
    gw.add_job(_job("after_1", "after", _exec(tools, "slow.sh"), ""), parent_names=["slow_1"])
    config = _config(tmp_path)
    run_id = bps_submit(config, bps_prepare(config, gw, str(tmp_path / "submit"))).run_id
    service = PilotService({})
    wait_for_file(bps_env, timeout=60)  # slow_1 started

    assert service.list_submitted_jobs(wms_id=run_id) == [run_id]
    assert run_id in service.list_submitted_jobs()  # this user's running runs
    bps_cancel(SERVICE_CLASS, wms_id=run_id)
    state, _ = service.get_status(run_id)
    assert state is WmsStates.DELETED
    runs, _ = retrieve_report(SERVICE_CLASS, run_id=run_id)
    assert {job.name: job.state for job in runs[0].jobs} == {
        "slow_1": WmsStates.DELETED, "after_1": WmsStates.DELETED,
    }  # fmt: skip
    wait_for_no_helpers(run_id)

    gate.touch()
    new_id, _, message = service.restart(run_id)
    assert new_id == run_id and message == ""
    assert wait_until_ended(service, run_id) is WmsStates.SUCCEEDED
    wait_for_no_helpers(run_id)


def test_commands_that_build_the_service_from_an_empty_config(tmp_path: Path, bps_env: Path):
    status, message = bps_ping(SERVICE_CLASS)
    assert status == 0 and "pilot" in message
    service = PilotService({})
    assert service.get_status("no-such-run")[0] is WmsStates.UNKNOWN
    assert service.report("no-such-run")[0] == []
    assert service.cancel("no-such-run")[0] is False
    new_id, name, message = service.restart("no-such-run")
    assert new_id is None and name is None and message
    assert service.list_submitted_jobs() == []


def test_submit_checks_refuse_an_unknown_site(tmp_path: Path, bps_env: Path):
    service = PilotService(_config(tmp_path, computeSite="no-such-site"))
    with pytest.raises(Exception, match="no-such-site"):
        service.run_submission_checks()


def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    import executor.bps

    monkeypatch.setitem(sys.modules, "lsst.ctrl.bps", None)  # as if not installed
    monkeypatch.delitem(executor.bps.__dict__, "PilotService", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'pilot-executor\[bps\]'"):
        executor.bps.PilotService  # noqa: B018
