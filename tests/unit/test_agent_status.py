"""Status computation (``services.agent.status``) and the restart backoff, without processes."""

from __future__ import annotations

import datetime

from services.agent import pods, podworker, status
from services.agent.runtimes import types

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def info(name: str, state: types.State, *, attempt: int = 0, code: int | None = None) -> types.ContainerInfo:
    return types.ContainerInfo("uid", name, attempt, state, f"process://{name}", "busybox", "sha256:x",
                               started_at=1.0, finished_at=2.0 if code is not None else None, exit_code=code,
                               reason="" if code is None else ("Completed" if code == 0 else "Error"))  # fmt: skip


def pod(policy: str = "Always", **spec: object) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "uid"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}], **spec}}  # fmt: skip


def compute(obj: dict, views: dict) -> dict:
    return status.compute(
        obj, views=views, pod_ip="10.42.0.2", host_ip="192.168.1.2", sandbox_ready=True, now=NOW
    )


def test_running_and_ready() -> None:
    out = compute(
        pod(), {"a": status.ContainerView(info=info("a", types.State.RUNNING), ready=True, started=True)}
    )
    assert out["phase"] == "Running" and out["qosClass"] == "BestEffort"
    assert {c["type"]: c["status"] for c in out["conditions"]}["Ready"] == "True"
    main = out["containerStatuses"][0]
    assert main["state"] == {"running": {"startedAt": "1970-01-01T00:00:01Z"}} and main["ready"]
    assert main["imageID"] == "sha256:x" and main["containerID"] == "process://a"
    assert out["podIPs"] == [{"ip": "10.42.0.2"}] and out["hostIPs"] == [{"ip": "192.168.1.2"}]


def test_crash_loop_shows_waiting_and_last_state() -> None:
    view = status.ContainerView(
        info=info("a", types.State.EXITED, attempt=3, code=1), waiting=("CrashLoopBackOff", "back-off 40s")
    )
    out = compute(pod(), {"a": view})
    main = out["containerStatuses"][0]
    assert main["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}
    assert main["lastState"]["terminated"]["exitCode"] == 1 and main["restartCount"] == 3
    assert out["phase"] == "Running" and not main["ready"]
    ready = next(c for c in out["conditions"] if c["type"] == "Ready")
    assert (
        ready["reason"] == "ContainersNotReady" and ready["message"] == "containers with unready status: [a]"
    )


def test_phases_by_policy() -> None:
    ok = {"a": status.ContainerView(info=info("a", types.State.EXITED, code=0))}
    failed = {"a": status.ContainerView(info=info("a", types.State.EXITED, code=2))}
    assert compute(pod("Never"), ok)["phase"] == "Succeeded"
    assert compute(pod("Never"), failed)["phase"] == "Failed"
    assert compute(pod("OnFailure"), ok)["phase"] == "Succeeded"
    assert compute(pod("OnFailure"), failed)["phase"] == "Running"
    assert compute(pod("Always"), ok)["phase"] == "Running"
    assert compute(pod(), {})["phase"] == "Pending"
    done = compute(pod("Never"), ok)
    assert {c["type"]: c.get("reason") for c in done["conditions"]}["Ready"] == "PodCompleted"


def test_init_containers_gate_the_app_containers() -> None:
    spec = pod("Never", initContainers=[{"name": "i", "image": "busybox"}])
    running = compute(spec, {"i": status.ContainerView(info=info("i", types.State.RUNNING))})
    assert running["phase"] == "Pending"
    assert running["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    init = next(c for c in running["conditions"] if c["type"] == "Initialized")
    assert init["status"] == "False" and init["message"] == "containers with incomplete status: [i]"
    failed = compute(spec, {"i": status.ContainerView(info=info("i", types.State.EXITED, code=1))})
    assert failed["phase"] == "Failed"
    done = compute(spec, {"i": status.ContainerView(info=info("i", types.State.EXITED, code=0))})
    assert done["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert done["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_transition_times_kept_and_foreign_conditions_kept() -> None:
    old = {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"},
                          {"type": "DisruptionTarget", "status": "True"}]}  # fmt: skip
    obj = {**pod(), "status": old}
    out = compute(
        obj, {"a": status.ContainerView(info=info("a", types.State.RUNNING), ready=False, started=True)}
    )
    conds = {c["type"]: c for c in out["conditions"]}
    assert conds["Ready"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert conds["Initialized"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert conds["DisruptionTarget"]["status"] == "True"
    assert not status.changed(
        out,
        compute(
            {**obj, "status": out},
            {"a": status.ContainerView(info=info("a", types.State.RUNNING), started=True)},
        ),
    )


def test_qos_classes() -> None:
    guaranteed = pod(containers=[{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}])
    burstable = pod(containers=[{"name": "a", "resources": {"requests": {"cpu": "100m"}}}])
    assert compute(guaranteed, {})["qosClass"] == "Guaranteed"
    assert compute(burstable, {})["qosClass"] == "Burstable"


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = pods.Backoff(initial=10, cap=300)
    key = ("uid", "a")
    assert backoff.remaining(key, since=100, now=100) == 0  # the first restart is immediate
    backoff.step(key, now=100)
    assert backoff.remaining(key, since=101, now=105) == 6
    delays = []
    for step in range(8):
        backoff.step(key, now=110 + step)
        delays.append(backoff.delay(key))
    assert delays == [20, 40, 80, 160, 300, 300, 300, 300]
    assert backoff.remaining(key, since=2000, now=2000) == 0  # idle for twice the cap: forgotten
    backoff.step(key, now=2000)
    assert backoff.delay(key) == 10
    assert (
        podworker.go_duration(10) == "10s" and podworker.go_duration(80) == "1m20s" and podworker.go_duration(300) == "5m0s"
    )
