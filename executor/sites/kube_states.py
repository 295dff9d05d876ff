"""Pod status as Parsl ``JobStatus``: the native-state table of the ``kubernetes`` backend.

A pod's phase says little on its own: the reasons in its status (the container's
``waiting``/``terminated`` reason, the pod's own ``reason``, the ``PodScheduled``
condition) decide whether a pilot is still coming, has ended, or can never start, and
they travel in the status's message, naming the pod and its image.
"""

from __future__ import annotations

from typing import Any

from parsl.jobs.states import JobState, JobStatus

# Pod phases -> Parsl JobState; a Pending or Failed pod's reasons refine this (translate).
# https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-phase
PHASES = {
    "Pending": JobState.PENDING,
    "Running": JobState.RUNNING,
    "Succeeded": JobState.COMPLETED,
    "Failed": JobState.FAILED,
    "Unknown": JobState.UNKNOWN,
}
# Waiting reasons of a container that will never start as it is: the pod has failed.
# ErrImagePull alone may be a registry hiccup; the kubelet's back-off comes next.
# https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff
NEVER_STARTS = {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                "CreateContainerConfigError", "CreateContainerError"}  # fmt: skip
IMAGE_REASONS = {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "ErrImagePull"}


def translate(pod: dict[str, Any], image: str) -> JobStatus:
    """A pod (as the API's JSON) as a Parsl ``JobStatus``, with its reason in the message."""
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    where = f"pod {name} (image {image})"
    if pod["metadata"].get("deletionTimestamp"):
        return JobStatus(JobState.MISSING, f"pod {name} is being deleted outside pilot")
    container = (status.get("containerStatuses") or [{}])[0]
    state = container.get("state") or {}
    waiting, ended = state.get("waiting") or {}, state.get("terminated") or {}
    phase = status.get("phase", "Unknown")
    if phase == "Pending":
        reason = waiting.get("reason", "")
        if reason in NEVER_STARTS:
            return JobStatus(JobState.FAILED, f"{where}: {reason}: {waiting.get('message', '')}")
        if reason in ("ErrImagePull",):
            return JobStatus(JobState.PENDING, f"{where}: {reason}: {waiting.get('message', '')}")
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                why = f"{condition.get('reason', '')}: {condition.get('message', '')}"
                return JobStatus(JobState.PENDING, f"{where}: {why}")
        return JobStatus(JobState.PENDING, f"{where}: {reason}" if reason else None)
    if phase == "Failed":
        if status.get("reason"):  # the pod's own reason: Evicted, DeadlineExceeded, ...
            why = f"{status['reason']}: {status.get('message', '').strip()}"
        elif ended.get("reason") == "OOMKilled":
            why = f"OOMKilled: the pod exceeded its memory limit (exit {ended.get('exitCode')})"
        else:
            why = f"exit code {ended.get('exitCode')} ({ended.get('reason', 'Error')})"
        return JobStatus(JobState.FAILED, f"{where}: {why}", exit_code=ended.get("exitCode"))
    if phase == "Succeeded":
        return JobStatus(JobState.COMPLETED, exit_code=0)
    return JobStatus(PHASES.get(phase, JobState.UNKNOWN))


def image_problem(pod: dict[str, Any]) -> bool:
    """Whether the pod waits because its image cannot be pulled."""
    container = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
    return (container.get("state") or {}).get("waiting", {}).get("reason") in IMAGE_REASONS
