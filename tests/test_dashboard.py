"""`pilot serve`: a real server process, a real run, and a real headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Watched
from click.testing import CliRunner
from helpers import pilot_cmd, write_workflow
from seed import HOSTILE_LABEL, HOSTILE_NAME, seed_run

from executor.cli import cli
from executor.report.server import CONTENT_SECURITY_POLICY, Dashboard
from executor.store import Store

# Each job waits for its own gate file, so the test decides when progress happens.
GATED = 'while [ ! -e "{gates}/$PILOT_JOB_NAME" ]; do sleep 0.05; done'


def _serve(db: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        pilot_cmd("serve", "--port", "0", "--refresh", "0.3", "--db", db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = server.stdout.readline()
    assert line.startswith("serving "), server.stderr.read()
    return server, line.split(" at ")[1].split()[0]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        # Also reads and closes the pipes of a process that already ended.
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Dashboard]:
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", "run-x", jobs=[
            {"name": HOSTILE_NAME, "label": HOSTILE_LABEL, "state": "failed", "start": 0,
             "runtime": 1, "exit_code": 2, "stderr": "<b>not bold</b>\n"},
        ])  # fmt: skip
    with Dashboard(tmp_path / "monitoring.db") as dashboard:
        yield dashboard


def test_the_page_shows_a_live_run_progressing(
    tmp_path: Path, subprocess_env: dict, pilot_home: Path, page: Watched
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    names = [f"step-{i}" for i in range(3)]
    path = write_workflow(tmp_path, {
        "name": "live",
        "jobs": [{"name": n, "label": "gated", "command": GATED.format(gates=gates)}
                 for n in names],
    })  # fmt: skip
    # Three workers whatever the machine's cores: all three jobs run, none is queued.
    site = tmp_path / "three-workers.yaml"
    site.write_text("backend: local\npools:\n  default: {cores: 1, workers: 3, max_blocks: 1}\n")
    run = subprocess.Popen(
        pilot_cmd("submit", path, "--site", site), env=subprocess_env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = None
    try:
        run_id = run.stdout.readline().split()[1]
        server, url = _serve(pilot_home / "monitoring.db")
        from playwright.sync_api import expect

        page.page.goto(f"{url}#{run_id}")
        succeeded = page.page.locator('tr[data-label="gated"] td[data-state="succeeded"]')
        running = page.page.locator('tr[data-label="gated"] td[data-state="running"]')
        # All three jobs wait at their gates: the page shows them running, none done.
        # (Waits use locators: the page's CSP forbids the eval behind wait_for_function.)
        expect(running).to_have_text("3", timeout=60_000)
        expect(succeeded).to_have_text("0")

        (gates / "step-0").touch()
        expect(succeeded).to_have_text("1", timeout=60_000)
        expect(running).to_have_text("2", timeout=60_000)
        expect(page.page.locator("#run-state")).to_have_text("running")

        for name in names[1:]:
            (gates / name).touch()
        expect(page.page.locator("#run-state")).to_have_text("succeeded", timeout=60_000)
        expect(succeeded).to_have_text("3")
        assert run.wait(timeout=120) == 0
        assert page.errors == []
        # The plots drew, and the pilot that ran the jobs is listed.
        assert page.page.locator("#figure-gantt .main-svg").count() >= 1
        assert page.page.locator("#pilots tbody tr").count() >= 1
    finally:
        for gate in names:
            (gates / gate).touch()
        _stop(run)
        if server is not None:
            _stop(server)


def test_user_data_renders_as_text(seeded: Dashboard, page: Watched) -> None:
    from playwright.sync_api import expect

    page.page.goto(seeded.url)
    page.page.wait_for_selector("#runs a.run")
    page.page.click("#runs a.run")
    page.page.wait_for_selector("#failures pre.log")
    for name in ("gantt", "busy", "runtime", "memory"):
        expect(page.page.locator(f"#figure-{name} .main-svg").first).to_be_attached(
            timeout=30_000
        )
    body = page.page.inner_text("body")
    assert HOSTILE_NAME in body and HOSTILE_LABEL in body and "<b>not bold</b>" in body
    assert page.page.locator("main img, main b").count() == 0
    assert page.dialogs == [] and page.errors == []


def _get(url: str, **headers: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def test_json_endpoints_and_headers(seeded: Dashboard) -> None:
    status, headers, body = _get(seeded.url + "api/runs")
    assert status == 200
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    [run] = json.loads(body)["runs"]
    assert run["run"] == "run-x" and run["progress"] == {
        "done": 1, "total": 1, "running": 0, "queued": 0,
    }  # fmt: skip
    status, _, body = _get(seeded.url + "api/runs/run-x")
    detail = json.loads(body)
    assert detail["failures"][0]["example"]["stderr_tail"] == ["<b>not bold</b>"]
    assert _get(seeded.url + "api/runs/nope")[0] == 404
    status, _, body = _get(seeded.url + "api/runs/run-x/figures")
    assert set(json.loads(body)) == {"gantt", "busy", "runtime", "memory"}


def test_the_server_is_read_only_and_loopback_only(seeded: Dashboard) -> None:
    request = urllib.request.Request(seeded.url + "api/runs", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 405
    info.value.close()
    # A page on another site reaching us through DNS rebinding names its own host.
    assert _get(seeded.url + "api/runs", Host="attacker.example")[0] == 403


def test_log_tails_stay_inside_the_run_directory(tmp_path: Path) -> None:
    secret = tmp_path / "secret.err"
    secret.write_text("private key\n")
    with Store(tmp_path / "monitoring.db") as store:
        seed_run(store, tmp_path / "runs", "run-x", jobs=[
            {"name": "a", "label": "x", "state": "failed", "start": 0, "runtime": 1},
        ])  # fmt: skip
        # Someone else in the group points a log path at a file of the viewer's.
        store.write(lambda c: c.execute("UPDATE attempts SET stderr = ?", (str(secret),)))
    with Dashboard(tmp_path / "monitoring.db") as dashboard:
        _, _, body = _get(dashboard.url + "api/runs/run-x")
    assert "private key" not in body.decode()


def test_remote_binding_needs_a_flag_and_warns(tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "monitoring.db"
    Store(db).close()
    refused = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--db", str(db)])
    assert refused.exit_code == 2 and "--allow-remote" in refused.output
    # 192.0.2.1 (TEST-NET-1) is on no interface: the bind fails after the warning.
    allowed = runner.invoke(
        cli, ["serve", "--host", "192.0.2.1", "--port", "0", "--allow-remote", "--db", str(db)]
    )
    assert "warning: serving on 192.0.2.1" in allowed.output
    assert allowed.exit_code == 2 and "cannot listen" in allowed.output


def test_serve_refuses_a_missing_database(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2 and "no monitoring database" in result.output
    assert not (tmp_path / "none.db").exists()
    assert os.listdir(tmp_path) == []
