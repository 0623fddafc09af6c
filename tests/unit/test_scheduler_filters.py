"""Filters against plain dicts: quantities, requests, taints, affinity, ports, volumes, spreading."""

from __future__ import annotations

from typing import Any

import pytest

from services.machinery import quantity
from services.scheduler import algorithm, cache, filters, podinfo, types

READY = [{"type": "Ready", "status": "True"}]


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110", labels: dict[str, str] | None = None,
         taints: list[dict[str, str]] | None = None, unschedulable: bool = False,
         conditions: list[dict[str, str]] | None = None, **extra: str) -> dict[str, Any]:  # fmt: skip
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, **extra}
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": allocatable, "capacity": allocatable,
                   "conditions": READY if conditions is None else conditions},
    }  # fmt: skip


def pod(name: str = "p", *, cpu: str | None = None, memory: str | None = None, labels: dict[str, str] | None = None,
        namespace: str = "default", node_name: str = "", **spec: Any) -> dict[str, Any]:  # fmt: skip
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": requests}}], "nodeName": node_name, **spec},
        "status": {"phase": "Pending"},
    }  # fmt: skip


def cluster(*nodes: dict[str, Any], pods: tuple[dict[str, Any], ...] = ()) -> cache.Cache:
    made = cache.Cache()
    for n in nodes:
        made.set_node(n)
    for p in pods:
        made.add_pod(podinfo.from_pod(p))
    return made


def check(
    obj: dict[str, Any], on: str, made: cache.Cache, listers: types.Listers | None = None
) -> filters.Status | None:
    state, rejected = filters.prefilter(podinfo.from_pod(obj), made, listers or types.MemoryListers())
    assert rejected is None, rejected
    target = made.node(on)
    assert target is not None
    return filters.filter_node(state, target)


def reasons(status: filters.Status | None) -> tuple[str, ...]:
    return () if status is None else status.reasons


# -- quantities and requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "milli", "whole"),
    [("100m", 100, 1), ("1", 1000, 1), ("0.5", 500, 1), ("1.5", 1500, 2), ("1e3", 1_000_000, 1000),
     ("1Gi", 2**30 * 1000, 2**30), ("512Mi", 2**29 * 1000, 2**29), ("1k", 1_000_000, 1000),
     ("1M", 10**9, 10**6), ("250u", 1, 1), ("2E-3", 2, 1), (3, 3000, 3)],
)  # fmt: skip
def test_quantities(text: str | int, milli: int, whole: int) -> None:
    assert quantity.milli_value(text) == milli
    assert quantity.value(text) == whole


@pytest.mark.parametrize("text", ["", "abc", "1Qi", "--1", "1.2.3"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(quantity.QuantityError):
        quantity.parse(text)
    assert quantity.safe_amount("cpu", text) == 0


def test_pod_requests_count_sidecars_init_containers_limits_and_overhead() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            {"resources": {"limits": {"cpu": "200m", "memory": "128Mi"}}},  # requests default to limits
        ],
        "initContainers": [
            {"resources": {"requests": {"cpu": "2"}}},  # runs alone: the peak for cpu
            {"restartPolicy": "Always", "resources": {"requests": {"memory": "1Gi"}}},  # a sidecar
        ],
        "overhead": {"cpu": "10m"},
    }
    got = podinfo.pod_requests(spec)
    assert got["cpu"] == 2000 + 10
    assert got["memory"] == 64 * 2**20 + 128 * 2**20 + 2**30
    nonzero = podinfo.pod_requests({"containers": [{}]}, nonzero=True)
    assert nonzero == {"cpu": 100, "memory": 200 * 2**20}


# -- resources and counts ------------------------------------------------------------------------


def test_resources_fit_reports_every_shortage() -> None:
    made = cluster(node("n", cpu="1", memory="1Gi", pods="1"),
                   pods=(pod("there", cpu="500m", memory="512Mi", node_name="n"),))  # fmt: skip
    status = check(pod(cpu="600m", memory="600Mi"), "n", made)
    assert (
        status is not None
        and status.code == filters.UNSCHEDULABLE
        and status.plugin == filters.NODE_RESOURCES_FIT
    )
    assert status.reasons == ("Too many pods", "Insufficient cpu", "Insufficient memory")
    assert check(pod(), "n", made).reasons == ("Too many pods",)  # type: ignore[union-attr]


def test_resources_fit_extended_resources_and_exact_fit() -> None:
    made = cluster(node("n", cpu="1", **{"nvidia.com/gpu": "1"}))
    gpu = pod(cpu="1")
    gpu["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    assert reasons(check(gpu, "n", made)) == ("Insufficient nvidia.com/gpu",)
    assert check(pod(cpu="1000m"), "n", made) is None  # exactly what is left fits


def with_storage(obj: dict[str, Any], amount: str, *, field: str = "requests") -> dict[str, Any]:
    """``obj`` with an ephemeral-storage request (or limit) on its container."""
    obj["spec"]["containers"][0]["resources"].setdefault(field, {})["ephemeral-storage"] = amount
    return obj


def test_resources_fit_ephemeral_storage() -> None:
    made = cluster(node("n", **{"ephemeral-storage": "10Gi"}), node("bare"),
                   pods=(with_storage(pod("there", node_name="n"), "6Gi"),))  # fmt: skip
    status = check(with_storage(pod(), "5Gi"), "n", made)
    assert status is not None and status.code == filters.UNSCHEDULABLE
    assert status.plugin == filters.NODE_RESOURCES_FIT
    assert status.reasons == ("Insufficient ephemeral-storage",)
    assert check(with_storage(pod(), "4Gi"), "n", made) is None  # exactly what is left fits
    assert reasons(check(with_storage(pod(), "5Gi", field="limits"), "n", made)) == (
        "Insufficient ephemeral-storage",
    )  # requests default to limits
    both = with_storage(pod(cpu="5"), "5Gi")
    assert reasons(check(both, "n", made)) == ("Insufficient cpu", "Insufficient ephemeral-storage")
    # a node that reports no ephemeral storage has none to give, but pods asking none still fit it
    assert reasons(check(with_storage(pod(), "1Mi"), "bare", made)) == ("Insufficient ephemeral-storage",)
    assert check(pod(), "bare", made) is None


def test_ephemeral_storage_in_the_failed_scheduling_message() -> None:
    made = cluster(node("a", **{"ephemeral-storage": "1Gi"}), node("b", **{"ephemeral-storage": "2Gi"}))
    scheduler = algorithm.Algorithm()
    decision = scheduler.schedule(podinfo.from_pod(with_storage(pod(), "2Gi")), made, types.MemoryListers())
    assert decision.node == "b"
    made.assume(podinfo.from_pod(with_storage(pod("first"), "2Gi")), "b")
    decision = scheduler.schedule(podinfo.from_pod(with_storage(pod(), "2Gi")), made, types.MemoryListers())
    assert not decision.node and decision.error is not None
    assert decision.error.message() == "0/2 nodes are available: 2 Insufficient ephemeral-storage."


def test_assumed_pods_take_room_until_forgotten() -> None:
    made = cluster(node("n", cpu="1"))
    first = podinfo.from_pod(pod("first", cpu="800m"))
    made.assume(first, "n")
    assert reasons(check(pod("second", cpu="300m"), "n", made)) == ("Insufficient cpu",)
    made.forget(first.key)
    assert check(pod("second", cpu="300m"), "n", made) is None


def test_finished_pods_free_their_room() -> None:
    done = pod("done", cpu="1", node_name="n")
    done["status"]["phase"] = "Succeeded"
    made = cluster(node("n", cpu="1"), pods=(pod("running", cpu="1", node_name="n"),))
    made.add_pod(podinfo.from_pod(done))
    assert reasons(check(pod(cpu="100m"), "n", made)) == ("Insufficient cpu",)
    finished = pod("running", cpu="1", node_name="n")
    finished["status"]["phase"] = "Failed"
    made.add_pod(podinfo.from_pod(finished))
    assert check(pod(cpu="100m"), "n", made) is None


# -- node state, taints, selectors ---------------------------------------------------------------


def test_unschedulable_node_unless_tolerated() -> None:
    made = cluster(node("n", unschedulable=True))
    assert reasons(check(pod(), "n", made)) == ("node(s) were unschedulable",)
    tolerant = pod(
        tolerations=[
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    assert check(tolerant, "n", made) is None


def test_not_ready_nodes_carry_the_lifecycle_taint() -> None:
    made = cluster(node("down", conditions=[{"type": "Ready", "status": "False"}]),
                   node("silent", conditions=[{"type": "Ready", "status": "Unknown"}]))  # fmt: skip
    assert reasons(check(pod(), "down", made)) == (
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }",
    )
    assert reasons(check(pod(), "silent", made)) == (
        "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
    )
    # the default NoExecute tolerations do not tolerate NoSchedule
    noexecute = pod(
        tolerations=[{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]
    )
    assert check(noexecute, "down", made) is not None


def test_taints_and_tolerations() -> None:
    taints = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
              {"key": "soft", "value": "x", "effect": "PreferNoSchedule"}]  # fmt: skip
    made = cluster(node("n", taints=taints))
    status = check(pod(), "n", made)
    assert status is not None and status.code == filters.UNRESOLVABLE
    assert status.reasons == ("node(s) had untolerated taint {dedicated: gpu}",)
    for toleration in (
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists"},
        {"operator": "Exists"},
    ):
        assert check(pod(tolerations=[toleration]), "n", made) is None, toleration
    wrong = {"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}
    assert check(pod(tolerations=[wrong]), "n", made) is not None


def test_node_selector_and_required_node_affinity() -> None:
    made = cluster(node("a", labels={"zone": "a", "gen": "3"}), node("b", labels={"zone": "b", "gen": "5"}))
    nope = ("node(s) didn't match Pod's node affinity/selector",)
    assert reasons(check(pod(nodeSelector={"zone": "b"}), "a", made)) == nope
    assert check(pod(nodeSelector={"zone": "b"}), "b", made) is None

    def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }

    def expr(key: str, op: str, *values: str) -> dict[str, Any]:
        return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}

    cases = [
        (expr("zone", "In", "a", "c"), {"a"}),
        (expr("zone", "NotIn", "a"), {"b"}),
        (expr("zone", "Exists"), {"a", "b"}),
        (expr("zone", "DoesNotExist"), set()),
        (expr("gen", "Gt", "4"), {"b"}),
        (expr("gen", "Lt", "4"), {"a"}),
        ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}, {"b"}),
        ({}, set()),  # an empty term matches nothing
    ]
    for term, fits in cases:
        got = {n for n in ("a", "b") if check(pod(affinity=affinity(term)), n, made) is None}
        assert got == fits, term
    either = affinity(expr("zone", "In", "a"), expr("gen", "Gt", "4"))  # terms are ORed
    assert {n for n in ("a", "b") if check(pod(affinity=either), n, made) is None} == {"a", "b"}


def test_node_name_and_host_ports() -> None:
    made = cluster(node("a"), node("b"))
    assert reasons(check(pod(node_name="b"), "a", made)) == ("node(s) didn't match the requested node name",)
    holder = pod("holder", node_name="a")
    holder["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    made.add_pod(podinfo.from_pod(holder))

    def wants(port: int, protocol: str = "TCP", ip: str = "") -> dict[str, Any]:
        made_pod = pod()
        made_pod["spec"]["containers"][0]["ports"] = [
            {"containerPort": 1, "hostPort": port, "protocol": protocol, "hostIP": ip}
        ]
        return made_pod

    conflict = ("node(s) didn't have free ports for the requested pod ports",)
    assert reasons(check(wants(8080), "a", made)) == conflict
    assert reasons(check(wants(8080, ip="10.0.0.1"), "a", made)) == conflict  # 0.0.0.0 holds every address
    assert check(wants(8080, "UDP"), "a", made) is None
    assert check(wants(8081), "a", made) is None
    assert check(wants(8080), "b", made) is None


# -- volumes -------------------------------------------------------------------------------------


def test_local_volume_node_affinity_and_claim_problems() -> None:
    made = cluster(node("a"), node("b"))
    volume = {"metadata": {"name": "pv-a"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}}  # fmt: skip
    listers = types.MemoryListers(
        claims={
            "default/data": {
                "metadata": {"name": "data", "namespace": "default"},
                "spec": {"volumeName": "pv-a"},
            },
            "default/later": {
                "metadata": {"name": "later", "namespace": "default"},
                "spec": {"storageClassName": "local-path"},
            },
            "default/now": {
                "metadata": {"name": "now", "namespace": "default"},
                "spec": {"storageClassName": "fast"},
            },
        },  # fmt: skip
        volumes={"pv-a": volume},
        storage_classes={"local-path": {"volumeBindingMode": "WaitForFirstConsumer"}, "fast": {}},
    )

    def with_claim(name: str) -> dict[str, Any]:
        return pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": name}}])

    assert check(with_claim("data"), "a", made, listers) is None
    assert reasons(check(with_claim("data"), "b", made, listers)) == (
        "node(s) had volume node affinity conflict",
    )
    assert check(with_claim("later"), "b", made, listers) is None  # provisioned where the pod goes
    unbound = podinfo.from_pod(with_claim("later"))
    assert [c["metadata"]["name"] for c in filters.unbound_delayed_claims(unbound, listers)] == ["later"]
    for claim, why in (("now", "pod has unbound immediate PersistentVolumeClaims"),
                       ("missing", 'persistentvolumeclaim "missing" not found')):  # fmt: skip
        _, rejected = filters.prefilter(podinfo.from_pod(with_claim(claim)), made, listers)
        assert rejected is not None and rejected.reasons == (why,) and rejected.code == filters.UNRESOLVABLE


# -- inter-pod affinity and spreading ------------------------------------------------------------

HOST = "kubernetes.io/hostname"


def anti(app: str, key: str = HOST) -> dict[str, Any]:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}  # fmt: skip


def near(app: str, key: str = HOST, **term: Any) -> dict[str, Any]:
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key, **term}]}}  # fmt: skip


def test_pod_anti_affinity_both_ways() -> None:
    made = cluster(node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z1"}), node("c", labels={"zone": "z2"}),
                   pods=(pod("db-0", labels={"app": "db"}, node_name="a", affinity=anti("db", "zone")),))  # fmt: skip
    # the placed pod's anti-affinity keeps other db pods out of its zone
    existing = ("node(s) didn't satisfy existing pods anti-affinity rules",)
    assert reasons(check(pod(labels={"app": "db"}), "b", made)) == existing
    assert check(pod(labels={"app": "db"}), "c", made) is None
    assert check(pod(labels={"app": "web"}), "b", made) is None
    # the incoming pod's own anti-affinity
    status = check(pod(labels={"app": "web"}, affinity=anti("db")), "a", made)
    assert reasons(status) == ("node(s) didn't match pod anti-affinity rules",)
    assert status is not None and status.code == filters.UNSCHEDULABLE
    assert check(pod(labels={"app": "web"}, affinity=anti("db")), "b", made) is None


def test_pod_affinity_and_the_first_pod_of_a_group() -> None:
    made = cluster(node("a", labels={"zone": "z1"}), node("b", labels={"zone": "z2"}),
                   pods=(pod("db-0", labels={"app": "db"}, node_name="a"),))  # fmt: skip
    assert check(pod(affinity=near("db", "zone")), "a", made) is None
    status = check(pod(affinity=near("db", "zone")), "b", made)
    assert reasons(status) == ("node(s) didn't match pod affinity rules",)
    assert status is not None and status.code == filters.UNRESOLVABLE
    # another namespace: only when the term names it
    assert check(pod(namespace="other", affinity=near("db", "zone")), "a", made) is not None
    assert (
        check(pod(namespace="other", affinity=near("db", "zone", namespaces=["default"])), "a", made) is None
    )
    # nobody matches yet, but the pod matches its own term: it may start the group anywhere
    lonely = cluster(node("a", labels={"zone": "z1"}))
    assert check(pod(labels={"app": "cache"}, affinity=near("cache", "zone")), "a", lonely) is None
    assert check(pod(labels={"app": "x"}, affinity=near("cache", "zone")), "a", lonely) is not None


def test_affinity_namespace_selector() -> None:
    made = cluster(node("a"), pods=(pod("db-0", labels={"app": "db"}, node_name="a", namespace="team-1"),))
    listers = types.MemoryListers(namespaces={"team-1": {"team": "blue"}, "default": {}})
    selected = pod(affinity=near("db", namespaceSelector={"matchLabels": {"team": "blue"}}))
    assert check(selected, "a", made, listers) is None
    everywhere = pod(affinity=near("db", namespaceSelector={}))
    assert check(everywhere, "a", made, listers) is None
    other = pod(affinity=near("db", namespaceSelector={"matchLabels": {"team": "red"}}))
    assert check(other, "a", made, listers) is not None


def spread(
    max_skew: int = 1, key: str = "zone", when: str = "DoNotSchedule", **extra: Any
) -> list[dict[str, Any]]:
    return [{"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
             "labelSelector": {"matchLabels": {"app": "web"}}, **extra}]  # fmt: skip


def test_topology_spread_do_not_schedule() -> None:
    placed = (pod("w0", labels={"app": "web"}, node_name="a1"), pod("w1", labels={"app": "web"}, node_name="a2"),
              pod("w2", labels={"app": "web"}, node_name="b1"))  # fmt: skip
    made = cluster(node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("b1", labels={"zone": "b"}),
                   node("nolabel"), pods=placed)  # fmt: skip
    incoming = pod(labels={"app": "web"}, topologySpreadConstraints=spread())
    assert reasons(check(incoming, "a1", made)) == ("node(s) didn't match pod topology spread constraints",)
    assert check(incoming, "b1", made) is None
    missing = check(incoming, "nolabel", made)
    assert reasons(missing) == (
        "node(s) didn't match pod topology spread constraints (missing required label)",
    )
    assert missing is not None and missing.code == filters.UNRESOLVABLE
    assert check(pod(labels={"app": "web"}, topologySpreadConstraints=spread(max_skew=2)), "a1", made) is None
    # ScheduleAnyway never filters
    assert (
        check(pod(labels={"app": "web"}, topologySpreadConstraints=spread(when="ScheduleAnyway")), "a1", made)
        is None
    )
    # minDomains: fewer domains than asked means the global minimum is 0
    wide = pod(labels={"app": "web"}, topologySpreadConstraints=spread(max_skew=2, minDomains=3))
    assert reasons(check(wide, "a1", made)) == ("node(s) didn't match pod topology spread constraints",)


def test_spread_honours_node_affinity_when_counting() -> None:
    placed = tuple(pod(f"w{i}", labels={"app": "web"}, node_name="a") for i in range(3))
    made = cluster(node("a", labels={"zone": "a", "pool": "old"}), node("b", labels={"zone": "b", "pool": "new"}),
                   pods=placed)  # fmt: skip
    # only pool=new nodes count: zone a is not a domain, so zone b's skew is 1 - 1 = 0
    incoming = pod(labels={"app": "web"}, nodeSelector={"pool": "new"}, topologySpreadConstraints=spread())
    assert check(incoming, "b", made) is None
