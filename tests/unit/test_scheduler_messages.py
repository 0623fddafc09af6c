"""FailedScheduling wording as Kubernetes writes it, and the PodScheduled condition patch."""

from __future__ import annotations

from services.scheduler import algorithm, binder, filters, podinfo, types
from tests.unit.test_scheduler_filters import cluster, node, pod


def fit_error(obj: dict, *nodes: dict, pods: tuple = ()) -> algorithm.FitError:
    decision = algorithm.Algorithm().schedule(
        podinfo.from_pod(obj), cluster(*nodes, pods=pods), types.MemoryListers()
    )
    assert decision.error is not None
    return decision.error


def test_reasons_are_counted_and_sorted_as_strings() -> None:
    error = fit_error(
        pod(cpu="2", memory="4Gi"),
        node("cp", cpu="8", memory="16Gi", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        node("small-1", cpu="1", memory="1Gi"),
        node("small-2", cpu="1", memory="1Gi"),
        node("cordoned", unschedulable=True),
    )  # fmt: skip
    assert error.message() == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory."
    )


def test_common_reasons_word_for_word() -> None:
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}
    cases = [
        (pod(nodeSelector={"disk": "ssd"}), node("n"), "1 node(s) didn't match Pod's node affinity/selector"),
        (pod(), node("n", taints=[taint]), "1 node(s) had untolerated taint {dedicated: gpu}"),
        (pod(), node("n", unschedulable=True), "1 node(s) were unschedulable"),
        (pod(), node("n", pods="0"), "1 Too many pods"),
        (pod(cpu="5"), node("n"), "1 Insufficient cpu"),
        (pod(memory="9Gi"), node("n"), "1 Insufficient memory"),
    ]
    for obj, target, reason in cases:
        assert fit_error(obj, target).message() == f"0/1 nodes are available: {reason}.", reason


def test_prefilter_and_empty_cluster_messages() -> None:
    missing = pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}])
    error = fit_error(missing, node("a"), node("b"))
    assert error.message(
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    ) == (
        '0/2 nodes are available: persistentvolumeclaim "data" not found. '
        "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.."
    )
    assert error.plugins == {filters.VOLUME_BINDING}
    assert fit_error(pod()).message() == "no nodes available to schedule pods"


def test_status_patch_sets_the_condition_once() -> None:
    obj = pod()
    patch = binder.status_patch(obj, reason="Unschedulable", message="0/1 nodes are available: 1 Too many pods.",
                                nominated_node=None)  # fmt: skip
    assert patch is not None
    condition = patch["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert condition["lastTransitionTime"] and "nominatedNodeName" not in patch["status"]
    obj["status"]["conditions"] = [condition]
    assert (
        binder.status_patch(obj, reason="Unschedulable", message=condition["message"], nominated_node=None)
        is None
    )
    changed = binder.status_patch(obj, reason="Unschedulable", message="other", nominated_node="n1")
    assert changed is not None and changed["status"]["nominatedNodeName"] == "n1"
    assert changed["status"]["conditions"][0]["lastTransitionTime"] == condition["lastTransitionTime"]
    obj["status"]["nominatedNodeName"] = "n1"
    cleared = binder.status_patch(
        obj, reason="Unschedulable", message=condition["message"], nominated_node=""
    )
    assert cleared is not None and cleared["status"]["nominatedNodeName"] is None


def test_token_bucket() -> None:
    bucket = binder.TokenBucket(10.0, burst=3)
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    assert bucket.skipped == 2
    assert not binder.TokenBucket(0.0, burst=0).take()
