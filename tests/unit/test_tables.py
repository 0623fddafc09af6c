"""Table output: the columns and cells ``kubectl get`` prints, computed on the server."""

from __future__ import annotations

import datetime

import pytest

from services.apiserver import builtin, registry, tables

NOW = datetime.datetime(2026, 1, 10, 12, 0, 0, tzinfo=datetime.UTC)
KUBECTL_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


def ago(**delta: float) -> str:
    return (NOW - datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


REG = registry.Registry(builtin.builtin_resources())


def info(group: str, plural: str) -> registry.ResourceInfo:
    found = REG.lookup(group, "v1", plural)
    assert found is not None
    return found


def table(group: str, plural: str, *objects: dict, include: str = "None") -> dict:
    return tables.to_table(info(group, plural), list(objects), include_object=include, list_meta={}, now=NOW)


def row(group: str, plural: str, obj: dict) -> dict:
    """One object's cells, by column name."""
    t = table(group, plural, obj)
    names = [c["name"] for c in t["columnDefinitions"]]
    return dict(zip(names, t["rows"][0]["cells"], strict=True))


def meta(name: str = "x", **extra: object) -> dict:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


# -- negotiation and durations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (KUBECTL_ACCEPT, True),
        ("application/json;as=Table;g=meta.k8s.io;v=v1", True),
        ("application/json", False),
        ("", False),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json", False),
        ("application/json, application/json;as=Table;v=v1;g=meta.k8s.io", False),
        ("application/yaml", False),
    ],
)
def test_wants_table(accept: str, expected: bool) -> None:
    assert tables.wants_table(accept) is expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 600, "3h10m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (2 * 365 * 86400, "2y"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


# -- the Table itself ------------------------------------------------------------------------------


def test_table_shape_and_row_objects() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("p1", labels={"a": "b"}),
        "spec": {"containers": []},
    }
    t = tables.to_table(
        info("", "pods"),
        [pod],
        include_object="Metadata",
        list_meta={"resourceVersion": "42", "continue": ""},
        now=NOW,
    )
    assert (t["kind"], t["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert t["metadata"] == {"resourceVersion": "42"}
    names = [c["name"] for c in t["columnDefinitions"]]
    assert names == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    assert [c["priority"] for c in t["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert t["columnDefinitions"][0]["format"] == "name"
    assert t["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": pod["metadata"],
    }
    full = tables.to_table(info("", "pods"), [pod], include_object="Object", list_meta={}, now=NOW)
    assert full["rows"][0]["object"] == pod
    bare = tables.to_table(
        info("", "pods"), [pod], include_object="None", list_meta={}, with_columns=False, now=NOW
    )
    assert "object" not in bare["rows"][0]
    assert bare["columnDefinitions"] == []


def test_default_table() -> None:
    t = table(
        "rbac.authorization.k8s.io",
        "roles",
        {"metadata": meta("r", creationTimestamp="2026-01-01T00:00:00Z")},
    )
    assert [(c["name"], c["type"]) for c in t["columnDefinitions"]] == [
        ("Name", "string"),
        ("Created At", "date"),
    ]
    assert t["rows"][0]["cells"] == ["r", "2026-01-01T00:00:00Z"]


# -- pods -------------------------------------------------------------------------------------------


def running_container(name: str = "c", *, ready: bool = True, restarts: int = 0, **extra: object) -> dict:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {}}, **extra}


def pod(status: dict, *, containers: int = 1, **spec: object) -> dict:
    return {
        "metadata": meta("web"),
        "spec": {"containers": [{"name": f"c{i}"} for i in range(containers)], **spec},
        "status": status,
    }


def test_running_pod() -> None:
    cells = row(
        "",
        "pods",
        pod(
            {
                "phase": "Running",
                "podIPs": [{"ip": "10.42.0.5"}],
                "containerStatuses": [running_container("c0"), running_container("c1", ready=False)],
            },
            containers=2,
            nodeName="n1",
        ),
    )
    assert cells["Name"] == "web"
    assert cells["Ready"] == "1/2"
    assert cells["Status"] == "Running"
    assert cells["Restarts"] == "0"
    assert cells["Age"] == "5m"
    assert (cells["IP"], cells["Node"], cells["Nominated Node"], cells["Readiness Gates"]) == (
        "10.42.0.5",
        "n1",
        "<none>",
        "<none>",
    )


def test_pending_pod_without_status() -> None:
    cells = row("", "pods", pod({"phase": "Pending"}))
    assert (cells["Ready"], cells["Status"], cells["IP"], cells["Node"]) == (
        "0/1",
        "Pending",
        "<none>",
        "<none>",
    )


def test_crashloop_with_restarts_and_last_restart_age() -> None:
    status = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "c0",
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=2)}},
            }
        ],
    }
    cells = row("", "pods", pod(status))
    assert cells["Status"] == "CrashLoopBackOff"
    assert cells["Restarts"] == "4 (2m ago)"
    assert cells["Ready"] == "0/1"


def test_container_creating_and_completed() -> None:
    creating = {
        "phase": "Pending",
        "containerStatuses": [{"name": "c0", "state": {"waiting": {"reason": "ContainerCreating"}}}],
    }
    assert row("", "pods", pod(creating))["Status"] == "ContainerCreating"
    done = {
        "phase": "Succeeded",
        "containerStatuses": [
            {"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ],
    }
    t = table("", "pods", pod(done))
    assert t["rows"][0]["cells"][2] == "Completed"
    assert t["rows"][0]["conditions"][0]["type"] == "Completed"
    error = {
        "phase": "Failed",
        "containerStatuses": [{"name": "c0", "state": {"terminated": {"exitCode": 2}}}],
    }
    assert row("", "pods", pod(error))["Status"] == "ExitCode:2"


def test_terminating_and_reason() -> None:
    deleting = pod({"phase": "Running", "containerStatuses": [running_container("c0")]})
    deleting["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert row("", "pods", deleting)["Status"] == "Terminating"
    evicted = pod({"phase": "Failed", "reason": "Evicted"})
    assert row("", "pods", evicted)["Status"] == "Evicted"
    gated = pod(
        {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        }
    )
    assert row("", "pods", gated)["Status"] == "SchedulingGated"


def test_init_containers() -> None:
    spec = {"initContainers": [{"name": "i0"}, {"name": "i1"}]}
    status = {
        "phase": "Pending",
        "initContainerStatuses": [
            {"name": "i0", "state": {"terminated": {"exitCode": 0}}, "restartCount": 0},
            {"name": "i1", "state": {"running": {}}, "restartCount": 1},
        ],
    }
    cells = row("", "pods", pod(status, **spec))
    assert cells["Status"] == "Init:1/2"
    assert cells["Restarts"] == "1"
    waiting = dict(
        status, initContainerStatuses=[{"name": "i0", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]
    )
    assert row("", "pods", pod(waiting, **spec))["Status"] == "Init:ImagePullBackOff"
    failed = dict(status, initContainerStatuses=[{"name": "i0", "state": {"terminated": {"exitCode": 3}}}])
    assert row("", "pods", pod(failed, **spec))["Status"] == "Init:ExitCode:3"


def test_sidecar_counts_as_a_container() -> None:
    spec = {"initContainers": [{"name": "side", "restartPolicy": "Always"}]}
    status = {
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "side", "started": True, "ready": True, "state": {"running": {}}}],
        "containerStatuses": [running_container("c0")],
    }
    cells = row("", "pods", pod(status, **spec))
    assert (cells["Ready"], cells["Status"]) == ("2/2", "Running")


def test_readiness_gates() -> None:
    p = pod(
        {"phase": "Running", "conditions": [{"type": "example.com/ok", "status": "True"}]},
        readinessGates=[{"conditionType": "example.com/ok"}, {"conditionType": "example.com/other"}],
    )
    assert row("", "pods", p)["Readiness Gates"] == "1/2"


# -- nodes ------------------------------------------------------------------------------------------


def test_nodes() -> None:
    node = {
        "metadata": meta(
            "n1",
            labels={
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/master": "true",
                "kubernetes.io/hostname": "n1",
            },
            creationTimestamp=ago(days=3, hours=4),
        ),
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "addresses": [
                {"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "Hostname", "address": "n1"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.37.0+k3spy",
                "osImage": "Debian",
                "kernelVersion": "6.1",
                "containerRuntimeVersion": "",
            },
        },
    }
    cells = row("", "nodes", node)
    assert cells["Status"] == "Ready,SchedulingDisabled"
    assert cells["Roles"] == "control-plane,master"
    assert cells["Age"] == "3d4h"
    assert cells["Version"] == "v1.37.0+k3spy"
    assert (cells["Internal-IP"], cells["External-IP"]) == ("192.168.1.10", "<none>")
    assert (cells["OS-Image"], cells["Kernel-Version"], cells["Container-Runtime"]) == (
        "Debian",
        "6.1",
        "<unknown>",
    )
    bare = row(
        "",
        "nodes",
        {"metadata": meta("n2"), "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
    )
    assert (bare["Status"], bare["Roles"]) == ("NotReady", "<none>")
    assert row("", "nodes", {"metadata": meta("n3")})["Status"] == "Unknown"


# -- workloads --------------------------------------------------------------------------------------


TEMPLATE = {
    "selector": {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
    },
    "template": {
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}, {"name": "s", "image": "side:2"}]}
    },
}


def test_deployment() -> None:
    dep = {
        "metadata": meta("web"),
        "spec": {"replicas": 3, **TEMPLATE},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    t = table("apps", "deployments", dep)
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert t["rows"][0]["cells"] == [
        "web",
        "2/3",
        3,
        2,
        "5m",
        "c,s",
        "nginx:1,side:2",
        "app=web,tier in (a,b)",
    ]


def test_replicaset_statefulset_daemonset() -> None:
    rs = {
        "metadata": meta("web-1"),
        "spec": {"replicas": 2, **TEMPLATE},
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    assert table("apps", "replicasets", rs)["rows"][0]["cells"][:5] == ["web-1", 2, 2, 1, "5m"]
    sts = {"metadata": meta("db"), "spec": {"replicas": 3, **TEMPLATE}, "status": {"readyReplicas": 3}}
    assert row("apps", "statefulsets", sts) == {
        "Name": "db",
        "Ready": "3/3",
        "Age": "5m",
        "Containers": "c,s",
        "Images": "nginx:1,side:2",
    }
    ds = {
        "metadata": meta("agent"),
        "spec": {**TEMPLATE, "template": {"spec": {"nodeSelector": {"os": "linux"}, "containers": []}}},
        "status": {
            "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2,
            "numberReady": 1,
            "updatedNumberScheduled": 2,
            "numberAvailable": 1,
        },
    }
    cells = row("apps", "daemonsets", ds)
    assert [cells[k] for k in ("Desired", "Current", "Ready", "Up-to-date", "Available")] == [2, 2, 1, 2, 1]
    assert cells["Node Selector"] == "os=linux"


def test_jobs_and_cronjobs() -> None:
    job = {
        "metadata": meta("j"),
        "spec": {"completions": 3, **TEMPLATE},
        "status": {"succeeded": 1, "startTime": ago(minutes=3)},
    }
    cells = row("batch", "jobs", job)
    assert (cells["Status"], cells["Completions"], cells["Duration"]) == ("Running", "1/3", "3m")
    done = {
        "metadata": meta("j"),
        "spec": {},
        "status": {
            "succeeded": 1,
            "startTime": ago(minutes=10),
            "completionTime": ago(minutes=9, seconds=30),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    cells = row("batch", "jobs", done)
    assert (cells["Status"], cells["Completions"], cells["Duration"]) == ("Complete", "1/1", "30s")
    cron = {
        "metadata": meta("c"),
        "spec": {
            "schedule": "*/5 * * * *",
            "suspend": False,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}},
        },
        "status": {"active": [{"name": "c-1"}], "lastScheduleTime": ago(minutes=1)},
    }
    cells = row("batch", "cronjobs", cron)
    assert [cells[k] for k in ("Schedule", "Timezone", "Suspend", "Active", "Last Schedule")] == [
        "*/5 * * * *",
        "<none>",
        "False",
        1,
        "60s",
    ]


# -- services and networking --------------------------------------------------------------------


def test_services() -> None:
    svc = {
        "metadata": meta("web"),
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.43.0.20",
            "clusterIPs": ["10.43.0.20"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"},
        },
    }
    assert row("", "services", svc) == {
        "Name": "web",
        "Type": "NodePort",
        "Cluster-IP": "10.43.0.20",
        "External-IP": "<none>",
        "Port(s)": "80:30080/TCP,53/UDP",
        "Age": "5m",
        "Selector": "app=web",
    }
    lb = {"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIP": "None", "ports": []}}
    cells = row("", "services", lb)
    assert (cells["External-IP"], cells["Port(s)"], cells["Selector"]) == ("<pending>", "<none>", "<none>")
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}
    assert row("", "services", lb)["External-IP"] == "192.168.1.10"
    ext = {"metadata": meta("e"), "spec": {"type": "ExternalName", "externalName": "example.com"}}
    assert row("", "services", ext)["External-IP"] == "example.com"


def test_endpoints() -> None:
    subsets = [{"addresses": [{"ip": f"10.42.0.{i}"} for i in range(1, 6)], "ports": [{"port": 80}]}]
    cells = row("", "endpoints", {"metadata": meta("web"), "subsets": subsets})
    assert cells["Endpoints"] == "10.42.0.1:80,10.42.0.2:80,10.42.0.3:80 + 2 more..."
    assert row("", "endpoints", {"metadata": meta("none")})["Endpoints"] == "<none>"


# -- the rest ---------------------------------------------------------------------------------------


def test_namespaces_configmaps_secrets() -> None:
    assert (
        row("", "namespaces", {"metadata": meta("ns"), "status": {"phase": "Active"}})["Status"] == "Active"
    )
    assert (
        row(
            "", "configmaps", {"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}
        )["Data"]
        == 3
    )
    secret = row("", "secrets", {"metadata": meta("s"), "type": "Opaque", "data": {"a": "MQ=="}})
    assert (secret["Type"], secret["Data"]) == ("Opaque", 1)
    assert row("", "serviceaccounts", {"metadata": meta("default")})["Secrets"] == 0


def test_events() -> None:
    event = {
        "metadata": meta("web.1"),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{c}"},
        "reason": "Pulled",
        "message": "Image pulled \n",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": ago(minutes=10),
        "lastTimestamp": ago(minutes=1),
        "count": 3,
    }
    cells = row("", "events", event)
    assert [cells[k] for k in ("Last Seen", "Type", "Reason", "Object", "Message")] == [
        "60s",
        "Normal",
        "Pulled",
        "pod/web",
        "Image pulled",
    ]
    assert (cells["Subobject"], cells["Source"], cells["First Seen"], cells["Count"]) == (
        "spec.containers{c}",
        "kubelet, n1",
        "10m",
        3,
    )
    new_style = {
        "metadata": meta("e2"),
        "eventTime": ago(seconds=30),
        "regarding": {"kind": "Node", "name": "n1"},
        "reason": "Starting",
        "note": "started",
        "type": "Normal",
        "reportingController": "kubelet",
    }
    cells = row("events.k8s.io", "events", new_style)
    assert [cells[k] for k in ("Last Seen", "Object", "Message", "Count", "Source")] == [
        "30s",
        "node/n1",
        "started",
        1,
        "kubelet",
    ]


def test_volumes() -> None:
    pv = {
        "metadata": meta("pv1"),
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "default", "name": "data"},
            "storageClassName": "local-path",
        },
        "status": {"phase": "Bound"},
    }
    cells = row("", "persistentvolumes", pv)
    assert [
        cells[k] for k in ("Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim", "StorageClass")
    ] == [
        "1Gi",
        "RWO",
        "Delete",
        "Bound",
        "default/data",
        "local-path",
    ]
    pvc = {
        "metadata": meta("data"),
        "spec": {"volumeName": "pv1", "storageClassName": "local-path"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]},
    }
    cells = row("", "persistentvolumeclaims", pvc)
    assert [cells[k] for k in ("Status", "Volume", "Capacity", "Access Modes")] == [
        "Bound",
        "pv1",
        "1Gi",
        "RWO",
    ]


def test_leases_and_storageclasses() -> None:
    lease = {"metadata": meta("n1"), "spec": {"holderIdentity": "n1"}}
    assert row("coordination.k8s.io", "leases", lease)["Holder"] == "n1"
    sc = {
        "metadata": meta("local-path", annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    cells = row("storage.k8s.io", "storageclasses", sc)
    assert cells["Name"] == "local-path (default)"
    assert cells["VolumeBindingMode"] == "WaitForFirstConsumer"


# -- custom resources ---------------------------------------------------------------------------


def crd_info(columns: tuple[dict, ...]) -> registry.ResourceInfo:
    return registry.ResourceInfo(
        group="stable.example.com",
        version="v1",
        kind="CronTab",
        plural="crontabs",
        singular="crontab",
        namespaced=True,
        verbs=builtin.CRUD,
        custom=True,
        printer_columns=columns,
    )


def test_crd_printer_columns() -> None:
    columns = (
        {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "First", "type": "string", "jsonPath": ".spec.items[0].name", "priority": 1},
        {"name": "Label", "type": "string", "jsonPath": ".metadata.labels['app.kubernetes.io/name']"},
        {"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
    obj = {
        "metadata": meta("ct", labels={"app.kubernetes.io/name": "cron"}),
        "spec": {"cronSpec": "* * * * */5", "replicas": 2.0, "items": [{"name": "a"}]},
        "status": {
            "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]
        },
    }
    t = tables.to_table(crd_info(columns), [obj], include_object="Metadata", list_meta={}, now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == [
        "Name",
        "Spec",
        "Replicas",
        "Ready",
        "First",
        "Label",
        "Missing",
        "Age",
    ]
    assert t["columnDefinitions"][4]["priority"] == 1
    assert t["rows"][0]["cells"] == ["ct", "* * * * */5", 2, "True", "a", "cron", None, "5m"]


def test_crd_without_columns_prints_age() -> None:
    t = tables.to_table(
        crd_info(()), [{"metadata": meta("ct")}], include_object="None", list_meta={}, now=NOW
    )
    assert [(c["name"], c["type"]) for c in t["columnDefinitions"]] == [("Name", "string"), ("Age", "date")]
    assert t["rows"][0]["cells"] == ["ct", "5m"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".a.b", [1]),
        ("{.a.b}", [1]),
        (".list[*].n", ["x", "y"]),
        (".list[-1].n", ["y"]),
        (".list[5].n", []),
        (".list[?(@.n!='x')].n", ["y"]),
        (".a['b']", [1]),
        (".a.c", []),
        ("a.b", []),
    ],
)
def test_jsonpath(path: str, expected: list) -> None:
    assert tables.jsonpath({"a": {"b": 1}, "list": [{"n": "x"}, {"n": "y"}]}, path) == expected


def test_every_builtin_resource_prints() -> None:
    for resource in REG.all():
        t = tables.to_table(resource, [{"metadata": meta()}], include_object="None", list_meta={}, now=NOW)
        assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"]), resource.plural
