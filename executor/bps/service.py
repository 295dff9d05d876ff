"""The bps WMS service: ``wmsServiceClass: executor.bps.PilotService``.

Every method has the signature of ``lsst.ctrl.bps.BaseWmsService`` (lsst-ctrl-bps
30.2026.300). ``bps report``, ``status``, ``cancel``, ``ping`` and ``restart`` build the
service from an empty config (``PilotService({})``), so those methods take everything
from the run id or submit directory they are given, and from ``PILOT_HOME`` /
``PILOT_DB``, as ``pilot status`` does.

Settings, in the bps config (all optional)::

    computeSite: local          # the pilot site: a name (`pilot sites`) or a site file
    pilot:
      site: ./my-slurm.yaml     # overrides computeSite for pilot
      wait: false               # true: `bps submit` returns when the run has ended
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from pathlib import Path
from typing import Any

from lsst.ctrl.bps import BaseWmsService, BaseWmsWorkflow, WmsStates

from executor._version import __version__
from executor.bps.records import (
    link_submit_dir,
    locate_run,
    open_existing,
    run_record,
    write_run_record,
)
from executor.bps.reporting import listed_runs, run_report, run_state
from executor.bps.translate import Translation, translate
from executor.errors import PilotError, RunNotFound
from executor.model.states import JobState, RunState

_LOG = logging.getLogger(__name__)
WORKFLOW_FILE = "pilot_workflow.json"
_HOW_TO_LOOK = "pilot status {run} / pilot report {run} show more (jobs, logs, failures)"


def _setting(config: Any, key: str, default: Any = None) -> Any:
    """A value of the config's ``pilot:`` section (the config may be a plain dict)."""
    try:
        section = config["pilot"]
    except (KeyError, TypeError):
        return default
    try:
        value = section[key]
    except (KeyError, TypeError):
        return default
    return default if value in (None, "") else value


def _search(config: Any, key: str, default: Any = None) -> Any:
    """A top-level bps setting, through BpsConfig's search when the config has one."""
    if hasattr(config, "search"):
        found, value = config.search(key, opt={"default": default})
        return value if found or value is not None else default
    return config.get(key, default) if isinstance(config, dict) else default


def site_name(config: Any) -> str:
    """The pilot site a bps config asks for: ``pilot.site``, else ``computeSite``, else local."""
    return str(_setting(config, "site") or _search(config, "computeSite") or "local")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class PilotWorkflow(BaseWmsWorkflow):
    """A bps workflow translated for pilot: its job graph, written into the submit directory.

    Parameters
    ----------
    name
        bps's unique name of the run (``uniqProcName``).
    config
        The bps config.
    translation
        The pilot graph and what the plugin needs to know about it.
    """

    def __init__(self, name: str, config: Any, translation: Translation):
        super().__init__(name, config)
        self.translation = translation
        self.run_attrs: dict[str, Any] = {}
        self.workflow_file: Path | None = None

    @classmethod
    def from_generic_workflow(cls, config, generic_workflow, out_prefix, service_class):
        """Translate ``generic_workflow`` (see :func:`executor.bps.translate.translate`)
        for the pilot site the config names."""
        from executor.sites import get_site

        largest = max(
            get_site(site_name(config)).pools, key=lambda pool: (pool.cores, pool.memory or 0)
        )
        translation = translate(generic_workflow, final_fits=(largest.cores, largest.memory))
        workflow = cls(generic_workflow.name, config, translation)
        workflow.service_class = service_class
        workflow.submit_path = out_prefix
        workflow.run_attrs = dict(getattr(generic_workflow, "run_attrs", None) or {})
        return workflow

    def write(self, out_prefix):
        """Write the pilot workflow (native JSON: ``pilot validate`` reads it) to ``out_prefix``."""
        from executor.formats.native import graph_to_dict

        directory = Path(out_prefix)
        directory.mkdir(parents=True, exist_ok=True)
        self.workflow_file = directory / WORKFLOW_FILE
        text = json.dumps(graph_to_dict(self.translation.graph), indent=1)
        self.workflow_file.write_text(text + "\n")
        self.submit_path = str(directory)


class PilotService(BaseWmsService):
    """Run bps workflows with pilot (see the module's docstring for the settings)."""

    def prepare(self, config, generic_workflow, out_prefix=None):
        """Translate a ``GenericWorkflow`` into a :class:`PilotWorkflow` and write it."""
        service_class = f"{type(self).__module__}.{type(self).__qualname__}"
        workflow = PilotWorkflow.from_generic_workflow(
            config, generic_workflow, out_prefix, service_class
        )
        if out_prefix is not None:
            workflow.write(out_prefix)
        return workflow

    def submit(self, workflow, **kwargs):
        """Record the run and start its driver in the background; set ``workflow.run_id``.

        Returns at once, like the HTCondor plugin, unless the config says
        ``pilot: {wait: true}``: then the run is driven here, to its end.
        """
        from executor.runs.detach import start_detached_driver
        from executor.runs.drive import drive
        from executor.runs.start import start_run
        from executor.sites import get_site
        from executor.store import Store, locate

        config = kwargs.get("config") or workflow.config or self.config
        site = get_site(site_name(config))
        locations = locate(site_db=site.monitoring_db)
        graph = workflow.translation.graph
        with Store(locations.db) as store:
            context = start_run(graph, site, store, locations, source=workflow.workflow_file)
            workflow.run_id = context.run_id
            self._record(workflow, context, locations.db)
            if _truthy(_setting(config, "wait", False)):
                state = drive(store, graph, site, context)
                _LOG.info("pilot run %s ended %s", context.run_id, state.value)
            else:
                start_detached_driver(store, context.run_id, context.run_dir)
        _LOG.info(_HOW_TO_LOOK.format(run=context.run_id))
        return workflow

    @staticmethod
    def _record(workflow: PilotWorkflow, context: Any, db: Path) -> None:
        translation = workflow.translation
        graph = translation.graph
        final_name = translation.final_job
        write_run_record(context.run_dir, {
            "submit_path": str(Path(workflow.submit_path).resolve()) if workflow.submit_path
            else None,
            "bps_run_name": workflow.name, "run_attrs": workflow.run_attrs,
            "init_job": translation.init_job, "final_job": final_name,
            "final_label": graph[final_name].label if final_name else None,
            "renamed": dict(translation.renamed), "db": str(db),
        })  # fmt: skip
        if workflow.submit_path:
            link_submit_dir(
                Path(workflow.submit_path), run_id=context.run_id, db=db,
                run_dir=context.run_dir, bps_name=workflow.name,
            )  # fmt: skip

    def restart(self, wms_workflow_id):
        """Continue a failed, cancelled or driver-lost run; return ``(run id, name, message)``.

        Jobs that succeeded never run again, except the final job when anything else
        runs again (:func:`_final_job_again`). The driver starts in the background.
        """
        from executor.runs.detach import start_detached_driver
        from executor.runs.resume import resume_run
        from executor.store.queries import get_run

        try:
            located = locate_run(wms_workflow_id)
            store = open_existing(located.db)
            if store is None or located.run_id is None:
                return None, None, f"no pilot run {wms_workflow_id!r} (database {located.db})"
            with store:
                run = get_run(store, located.run_id)
                record = run_record(run) or {}
                revised = _final_job_again(store, run, record.get("final_job"))
                resumed = resume_run(store, run["id"], workflow=revised)
                context = resumed.context
                start_detached_driver(store, context.run_id, context.run_dir)
        except PilotError as exc:
            return None, None, str(exc)
        name = record.get("bps_run_name") or run["name"]
        message = (
            f"restarting: {resumed.to_run} job(s) to run, "
            f"{resumed.already_succeeded} already succeeded"
        )
        _LOG.info(message)
        return context.run_id, name, ""

    def list_submitted_jobs(
        self, wms_id=None, user=None, require_bps=True, pass_thru=None, is_global=False
    ):
        """The ids of running runs (bps's only, with ``require_bps``) of ``user`` or ``wms_id``."""
        from executor.store.queries import effective_state, get_run, list_runs

        located = locate_run(wms_id)
        store = open_existing(located.db)
        if store is None:
            return []
        with store:
            if located.run_id is not None:
                try:
                    runs = [get_run(store, located.run_id)]
                except RunNotFound:
                    return []
            else:
                runs = list_runs(store, 1000, owner=user or getpass.getuser())
            return [
                run["id"]
                for run in runs
                if effective_state(run) == RunState.RUNNING.value
                and (not require_bps or run_record(run) is not None)
            ]

    def report(
        self,
        wms_workflow_id=None,
        user=None,
        hist=0,
        pass_thru=None,
        is_global=False,
        return_exit_codes=False,
    ):
        """Reports of one run (with per-label job counts) or of the user's runs."""
        from executor.store.queries import get_run

        try:
            located = locate_run(wms_workflow_id)
        except RunNotFound as exc:
            return [], str(exc)
        store = open_existing(located.db)
        if store is None:
            return [], f"no pilot monitoring database at {located.db} (PILOT_HOME, PILOT_DB)"
        with store:
            if located.run_id is not None:
                try:
                    run = get_run(store, located.run_id)
                except RunNotFound as exc:
                    return [], str(exc)
                report = run_report(store, run, detailed=True, exit_codes=return_exit_codes)
                _, message = run_state(run)
                return [report], message or _HOW_TO_LOOK.format(run=run["id"])
            owner = None if user == "all" else (user or getpass.getuser())
            runs = listed_runs(store, owner=owner, hist_days=float(hist or 0))
            return [run_report(store, run, detailed=False) for run in runs], ""

    def get_status(self, wms_workflow_id, hist=1, is_global=False):
        """The run's state (``bps status`` exits with its value) and a message."""
        from executor.store.queries import get_run

        try:
            located = locate_run(wms_workflow_id)
            store = open_existing(located.db)
            if store is None or located.run_id is None:
                return WmsStates.UNKNOWN, f"no pilot run {wms_workflow_id!r} in {located.db}"
            with store:
                return run_state(get_run(store, located.run_id))
        except RunNotFound as exc:
            return WmsStates.UNKNOWN, str(exc)

    def cancel(self, wms_id, pass_thru=None):
        """Cancel a run from anywhere; ``(True, "")`` once it is recorded cancelled."""
        from executor.runs.cancel import cancel
        from executor.store.queries import get_run

        try:
            located = locate_run(wms_id)
            store = open_existing(located.db)
            if store is None or located.run_id is None:
                return False, f"no pilot run {wms_id!r} in {located.db}"
            with store:
                run = get_run(store, located.run_id)
                if run["state"] != RunState.RUNNING.value:
                    return False, f"run {run['id']} already ended: {run['state']}"
                wait = float(pass_thru) if pass_thru and str(pass_thru).isdigit() else 30.0
                state = cancel(store, run["id"], wait=wait)
        except PilotError as exc:
            return False, str(exc)
        if state == RunState.CANCELLED.value:
            return True, ""
        return False, f"run {run['id']} is {state}; the driver did not stop within {wait:g}s"

    def ping(self, pass_thru):
        """0 when pilot can record and run work here: its database and its default site."""
        from executor.sites import get_site
        from executor.store import Store, locate
        from executor.store.queries import list_runs

        try:
            site = get_site(pass_thru or "local")
            db = locate(site_db=site.monitoring_db).db
            if db.is_file():
                with Store(db) as store:
                    list_runs(store, 1)
            elif not os.access(_nearest_existing(db.parent), os.W_OK):
                return 1, f"cannot create the pilot database {db}: its directory is not writable"
        except PilotError as exc:
            return 1, str(exc)
        return 0, f"pilot {__version__}: site {site.name!r}, database {db}"

    def run_submission_checks(self):
        """Fail early on a site pilot cannot load (a typo in ``computeSite``)."""
        from executor.sites import get_site

        get_site(site_name(self.config))


def _final_job_again(store: Any, run: dict[str, Any], final: str | None) -> Path | None:
    """A revision of the run's workflow that runs its final job again, or ``None``.

    DAGMan runs a ``FINAL`` node at the end of every pass of a DAG, a rescue DAG's too:
    the final job of a restarted run must see (transfer) the outputs of the jobs that ran
    again. pilot never reruns a job that succeeded unless a revised workflow redefines it
    (``pilot restart --workflow``), so when the final job succeeded (it ran after some
    jobs failed) and other jobs will run again, this writes the run's workflow with one
    change, the final job's ``PILOT_BPS_PASS`` (the run's pass: 2 on its first restart).
    """
    from executor.formats.saved import read_saved
    from executor.store.queries import job_states

    states = job_states(store, run["id"])
    done = JobState.SUCCEEDED.value
    if not final or states.get(final) != done or all(s == done for s in states.values()):
        return None
    workflow = read_saved(Path(run["workflow_copy"]))
    passes = int(run.get("restarts") or 0) + 2
    for job in workflow["jobs"]:
        if job["name"] == final:
            job["environment"] = {**job.get("environment", {}), "PILOT_BPS_PASS": str(passes)}
    path = Path(run["run_dir"]) / f"bps_pass_{passes}.json"
    path.write_text(json.dumps(workflow, indent=1) + "\n")
    return path


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
