"""The driver's forecast of each pool's work for the scaling policy (no Parsl needed)."""

from __future__ import annotations

from executor.driver.work_forecast import UNKNOWN_RUNTIME, WorkForecast
from executor.model.graph import Job, JobGraph
from executor.model.states import JobState


class SentBundles:
    """The bundles in flight, as :class:`~executor.driver.bundles.BundlesInFlight` lists them."""

    def __init__(self, *bundles: tuple[str, list[str], float]):
        self.bundles = bundles

    def members_sent(self):
        for pool, names, sent in self.bundles:
            yield pool, [(name, 1) for name in names], sent


def forecast_of(states, bundles, started=lambda name: True, estimates=None):
    jobs = [Job(name=name, label=name, command="true") for name in states]
    graph = JobGraph("g", jobs)
    work = WorkForecast(
        graph, states, bundles, lambda: estimates or {}, lambda name: "default",
        horizon=60.0, started=started,
    )  # fmt: skip
    return work.views(fresh=True)["default"]


def test_a_sent_bundle_none_of_whose_jobs_started_is_work_still_needing_a_worker():
    states = {"a": JobState.RUNNING, "b": JobState.RUNNING}
    bundles = SentBundles(("default", ["a"], 0.0), ("default", ["b"], 0.0))
    # Both handed to Parsl, only `a` started: `b` waits at the interchange for a worker.
    view = forecast_of(states, bundles, started=lambda name: name == "a")
    assert view.running.count == 1
    assert view.ready.count == 1 and view.ready.seconds == UNKNOWN_RUNTIME


def test_without_start_records_sent_jobs_count_as_running():
    states = {"a": JobState.RUNNING, "b": JobState.RUNNING, "c": JobState.READY}
    bundles = SentBundles(("default", ["a", "b"], 0.0))
    view = forecast_of(states, bundles, estimates={"a": 5.0, "b": 5.0, "c": 7.0})
    assert view.running.count == 2
    assert view.ready.count == 1 and view.ready.seconds == 7.0
