"""The pod status the kubelet reports, computed from what the runtime and the probes say.

Pure functions, so the rules are unit-tested without processes: container states (waiting with a
reason, running, terminated with exit code and times), lastState from the previous attempt,
restartCount, ready and started; the phase by the kubelet's ``getPhase``; the conditions
PodReadyToStartContainers, Initialized, ContainersReady, Ready and PodScheduled, each keeping its
lastTransitionTime while its status stays the same; IPs, startTime and qosClass. Conditions and
fields other components own (for example the scheduler's or a disruption controller's) are kept.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from services.agent.runtimes import isolation, types

KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")


def rfc3339(when: float | datetime.datetime | None) -> str | None:
    if when is None:
        return None
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerView:
    """What the pod worker knows of one container."""

    info: types.ContainerInfo | None = None  # the latest attempt
    previous: types.ContainerInfo | None = None
    waiting: tuple[str, str] | None = None  # (reason, message) overriding the runtime's state
    ready: bool = False
    started: bool = False


def _terminated(info: types.ContainerInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "exitCode": info.exit_code if info.exit_code is not None else 0,
        "reason": info.reason or ("Completed" if info.exit_code == 0 else "Error"),
        "startedAt": rfc3339(info.started_at),
        "finishedAt": rfc3339(info.finished_at),
        "containerID": info.container_id,
    }
    if info.message:
        out["message"] = info.message
    return out


def container_status(
    container: Mapping[str, Any], view: ContainerView, *, default_waiting: str
) -> dict[str, Any]:
    info = view.info
    state: dict[str, Any]
    if view.waiting is not None:
        reason, message = view.waiting
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    elif info is None or info.state is types.State.CREATED:
        state = {"waiting": {"reason": default_waiting}}
    elif info.state is types.State.RUNNING:
        state = {"running": {"startedAt": rfc3339(info.started_at)}}
    else:
        state = {"terminated": _terminated(info)}
    last: dict[str, Any] = {}
    if view.waiting is not None and info is not None and info.state is types.State.EXITED:
        last = {"terminated": _terminated(info)}  # waiting to restart: the attempt that ended
    elif view.previous is not None and view.previous.state is types.State.EXITED:
        last = {"terminated": _terminated(view.previous)}
    running = "running" in state
    out: dict[str, Any] = {
        "name": container["name"],
        "state": state,
        "lastState": last,
        "ready": bool(view.ready and running),
        "restartCount": info.attempt if info is not None else 0,
        "image": container.get("image", ""),
        "imageID": info.image_id if info is not None else "",
        "started": bool(view.started and running),
    }
    if info is not None:
        out["containerID"] = info.container_id
    return out


def _state_kind(status: Mapping[str, Any]) -> str:
    return next(iter(status.get("state") or {"waiting": {}}))


def phase(
    pod: Mapping[str, Any], init_statuses: Sequence[Mapping[str, Any]], statuses: Sequence[Mapping[str, Any]]
) -> str:
    """The kubelet's getPhase."""
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    initialized = all(_init_done(s) for s in init_statuses)
    if not initialized:
        failed = any(_init_failed(s) for s in init_statuses)
        return "Failed" if failed and policy == "Never" else "Pending"
    running = waiting = stopped = succeeded = 0
    for status in statuses:
        kind = _state_kind(status)
        if kind == "running":
            running += 1
        elif kind == "terminated":
            stopped += 1
            succeeded += status["state"]["terminated"].get("exitCode") == 0
        elif (status.get("lastState") or {}).get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if policy == "OnFailure":
            return "Succeeded" if stopped == succeeded else "Running"
        return "Succeeded" if stopped == succeeded else "Failed"
    return "Pending"


def _init_done(status: Mapping[str, Any]) -> bool:
    return _state_kind(status) == "terminated" and status["state"]["terminated"].get("exitCode") == 0


def _init_failed(status: Mapping[str, Any]) -> bool:
    terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
        "terminated"
    )
    return bool(terminated) and terminated.get("exitCode") != 0 and not _init_done(status)


def _condition(kind: str, ok: bool, *, reason: str = "", message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
    if not ok and reason:
        out["reason"] = reason
    if not ok and message:
        out["message"] = message
    return out


def conditions(
    *, phase_: str, sandbox_ready: bool, init_statuses: Sequence[Mapping[str, Any]],
    statuses: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:  # fmt: skip
    done = phase_ in ("Succeeded", "Failed")
    incomplete = [s["name"] for s in init_statuses if not _init_done(s)]
    unready = [s["name"] for s in statuses if not s.get("ready")]
    reason = "PodCompleted" if done else ""
    init_ok = not incomplete or (done and phase_ == "Succeeded")
    out = [
        _condition("PodReadyToStartContainers", sandbox_ready and not done),
        _condition("Initialized", init_ok, reason=reason or "ContainersNotInitialized",
                   message=f"containers with incomplete status: [{' '.join(incomplete)}]"),
        _condition("ContainersReady", not unready, reason=reason or "ContainersNotReady",
                   message=f"containers with unready status: [{' '.join(unready)}]"),
        _condition("Ready", not unready, reason=reason or "ContainersNotReady",
                   message=f"containers with unready status: [{' '.join(unready)}]"),
        _condition("PodScheduled", True),
    ]  # fmt: skip
    return out


def compute(
    pod: Mapping[str, Any], *, views: Mapping[str, ContainerView], pod_ip: str, host_ip: str,
    sandbox_ready: bool, now: datetime.datetime,
) -> dict[str, Any]:  # fmt: skip
    """The whole new status, starting from the pod's current one (foreign fields kept)."""
    spec = pod.get("spec") or {}
    old = dict(pod.get("status") or {})
    init_specs = spec.get("initContainers") or []
    init_statuses = [container_status(c, views.get(c["name"], ContainerView()), default_waiting="PodInitializing")
                     for c in init_specs]  # fmt: skip
    app_waiting = "ContainerCreating" if all(_init_done(s) for s in init_statuses) else "PodInitializing"
    statuses = [container_status(c, views.get(c["name"], ContainerView()), default_waiting=app_waiting)
                for c in spec.get("containers") or []]  # fmt: skip
    phase_ = phase(pod, init_statuses, statuses)
    mine = conditions(
        phase_=phase_, sandbox_ready=sandbox_ready, init_statuses=init_statuses, statuses=statuses
    )
    status = {
        **old,
        "phase": phase_,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "qosClass": isolation.qos_class(pod),
    }
    if pod_ip:
        status.update(podIP=pod_ip, podIPs=[{"ip": pod_ip}])
    status["startTime"] = old.get("startTime") or rfc3339(now)
    status["containerStatuses"] = statuses
    if init_specs:
        status["initContainerStatuses"] = init_statuses
    else:
        status.pop("initContainerStatuses", None)
    status["conditions"] = merge_conditions(old.get("conditions") or [], mine, now=now)
    return status


def merge_conditions(
    old: Sequence[Mapping[str, Any]], mine: Sequence[Mapping[str, Any]], *, now: datetime.datetime
) -> list[dict[str, Any]]:
    """Ours replace theirs by type, keeping lastTransitionTime while the status is unchanged."""
    previous = {c.get("type"): c for c in old}
    out = []
    for cond in mine:
        before = previous.get(cond["type"])
        keep = (
            before is not None and before.get("status") == cond["status"] and before.get("lastTransitionTime")
        )
        out.append(
            {
                **cond,
                "lastProbeTime": None,
                "lastTransitionTime": before["lastTransitionTime"] if keep else rfc3339(now),
            }
        )  # type: ignore[index]
    ours = {c["type"] for c in mine}
    out.extend(dict(c) for c in old if c.get("type") not in ours)
    return out


def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when the status differs in anything but condition probe times."""

    def strip(status: Mapping[str, Any]) -> dict[str, Any]:
        conds = [{k: v for k, v in c.items() if k != "lastProbeTime"} for c in status.get("conditions") or []]
        return {**status, "conditions": sorted(conds, key=lambda c: str(c.get("type")))}

    return strip(old) != strip(new)
