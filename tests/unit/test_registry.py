"""The resource registry and the built-in table: Kubernetes' facts, lookups, change notices.

The built-in table is checked against the resource metadata lightkube-models ships
(plural, scope, verbs, subresources), read from its sources so the test needs no client.
"""

from __future__ import annotations

import ast
import importlib.metadata

import pytest

from services.apiserver import builtin, registry


def by_plural(group: str, plural: str) -> registry.ResourceInfo:
    for info in builtin.builtin_resources():
        if (info.group, info.plural) == (group, plural):
            return info
    raise AssertionError(f"{plural}.{group} missing")


# -- the table ----------------------------------------------------------------------------------


def test_every_listed_resource_is_built_in() -> None:
    served = {(i.group, i.version, i.plural) for i in builtin.builtin_resources()}
    expected = {
        ("", "v1", p)
        for p in (
            "namespaces pods nodes services endpoints configmaps secrets serviceaccounts events persistentvolumes "
            "persistentvolumeclaims replicationcontrollers limitranges resourcequotas podtemplates bindings"
        ).split()
    }
    expected |= {
        ("apps", "v1", p)
        for p in "deployments replicasets daemonsets statefulsets controllerrevisions".split()
    }
    expected |= {("batch", "v1", "jobs"), ("batch", "v1", "cronjobs")}
    expected |= {
        ("coordination.k8s.io", "v1", "leases"),
        ("discovery.k8s.io", "v1", "endpointslices"),
        ("events.k8s.io", "v1", "events"),
        ("networking.k8s.io", "v1", "ingresses"),
        ("networking.k8s.io", "v1", "ingressclasses"),
        ("networking.k8s.io", "v1", "networkpolicies"),
        ("storage.k8s.io", "v1", "storageclasses"),
        ("policy", "v1", "poddisruptionbudgets"),
        ("scheduling.k8s.io", "v1", "priorityclasses"),
        ("authentication.k8s.io", "v1", "tokenreviews"),
        ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
        ("k3s.cattle.io", "v1", "addons"),
    }
    expected |= {
        ("rbac.authorization.k8s.io", "v1", p)
        for p in "roles rolebindings clusterroles clusterrolebindings".split()
    }
    expected |= {
        ("authorization.k8s.io", "v1", p)
        for p in "selfsubjectaccessreviews subjectaccessreviews localsubjectaccessreviews selfsubjectrulesreviews".split()
    }
    assert expected <= served


def test_no_duplicates_and_singular_is_lowercase_kind() -> None:
    infos = builtin.builtin_resources()
    keys = [(i.group, i.version, i.plural) for i in infos]
    assert len(keys) == len(set(keys))
    for info in infos:
        assert info.singular == info.kind.lower()
        assert list(info.verbs) == sorted(info.verbs)
        for sub in info.subresources:
            assert sub in builtin.SUBRESOURCES


@pytest.mark.parametrize(
    ("group", "plural", "short"),
    [
        ("", "pods", ("po",)),
        ("", "nodes", ("no",)),
        ("", "services", ("svc",)),
        ("", "endpoints", ("ep",)),
        ("", "configmaps", ("cm",)),
        ("", "namespaces", ("ns",)),
        ("", "serviceaccounts", ("sa",)),
        ("", "events", ("ev",)),
        ("", "persistentvolumes", ("pv",)),
        ("", "persistentvolumeclaims", ("pvc",)),
        ("", "replicationcontrollers", ("rc",)),
        ("", "limitranges", ("limits",)),
        ("", "resourcequotas", ("quota",)),
        ("", "secrets", ()),
        ("apps", "deployments", ("deploy",)),
        ("apps", "replicasets", ("rs",)),
        ("apps", "daemonsets", ("ds",)),
        ("apps", "statefulsets", ("sts",)),
        ("batch", "cronjobs", ("cj",)),
        ("batch", "jobs", ()),
        ("networking.k8s.io", "ingresses", ("ing",)),
        ("networking.k8s.io", "networkpolicies", ("netpol",)),
        ("networking.k8s.io", "ingressclasses", ()),
        ("storage.k8s.io", "storageclasses", ("sc",)),
        ("policy", "poddisruptionbudgets", ("pdb",)),
        ("scheduling.k8s.io", "priorityclasses", ("pc",)),
        ("apiextensions.k8s.io", "customresourcedefinitions", ("crd", "crds")),
        ("coordination.k8s.io", "leases", ()),
        ("discovery.k8s.io", "endpointslices", ()),
    ],
)
def test_short_names(group: str, plural: str, short: tuple[str, ...]) -> None:
    assert by_plural(group, plural).short_names == short


def test_categories() -> None:
    in_all = {(i.group, i.plural) for i in builtin.builtin_resources() if "all" in i.categories}
    assert in_all == {
        ("", "pods"),
        ("", "services"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "daemonsets"),
        ("apps", "statefulsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    }
    assert by_plural("apiextensions.k8s.io", "customresourcedefinitions").categories == ("api-extensions",)


def test_subresources_and_field_selectors() -> None:
    pods = by_plural("", "pods")
    assert {"status", "binding", "eviction", "log", "exec", "attach", "portforward"} <= set(pods.subresources)
    assert {"spec.nodeName", "status.phase"} <= set(pods.field_selectors)
    assert by_plural("", "namespaces").subresources == ("status", "finalize")
    assert by_plural("", "serviceaccounts").subresources == ("token",)
    for plural in ("deployments", "replicasets", "statefulsets"):
        assert set(by_plural("apps", plural).subresources) == {"status", "scale"}
    assert "involvedObject.uid" in by_plural("", "events").field_selectors
    assert by_plural("", "secrets").field_selectors == ("type",)
    assert by_plural("", "nodes").field_selectors == ("spec.unschedulable",)
    assert builtin.subresource_gvk(by_plural("apps", "deployments"), "scale") == (
        "autoscaling",
        "v1",
        "Scale",
    )
    assert builtin.subresource_gvk(pods, "eviction") == ("policy", "v1", "Eviction")
    assert builtin.subresource_gvk(pods, "status") == ("", "v1", "Pod")


def test_virtual_resources_are_create_only() -> None:
    for info in builtin.builtin_resources():
        if info.virtual:
            assert info.verbs == ("create",)
    assert by_plural("authentication.k8s.io", "tokenreviews").virtual
    assert by_plural("", "bindings").virtual


def test_addon_is_namespaced_with_a_schema() -> None:
    addon = by_plural("k3s.cattle.io", "addons")
    assert addon.kind == "Addon" and addon.namespaced
    assert set(addon.schema["properties"]["spec"]["properties"]) == {"source", "checksum"}
    assert addon.storage_prefix == "/registry/k3s.cattle.io/addons/"


# -- agreement with lightkube-models ---------------------------------------------------------


def _lightkube_resources() -> dict[tuple[str, str, str], dict]:
    """(group, plural, subresource) -> {kind, namespaced, verbs} from lightkube's resource sources."""
    try:
        dist = importlib.metadata.distribution("lightkube-models")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("lightkube-models is not installed")
    out = {}
    for file in dist.files or []:
        if not (str(file).startswith("lightkube/resources/") and str(file).endswith(".py")):
            continue
        for node in ast.walk(ast.parse(dist.locate_file(file).read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = " ".join(ast.unparse(b) for b in node.bases)
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and ast.unparse(stmt.targets[0]) == "_api_info":
                    kw = {k.arg: k.value for k in stmt.value.keywords}
                    group, version, kind = (a.value for a in kw["resource"].args)
                    parent = kw.get("parent")
                    if parent is not None:
                        group, version = (a.value for a in parent.args[:2])
                    action = kw["action"].value if "action" in kw else ""
                    verbs = [v.value for v in kw["verbs"].elts]
                    out[(group, version, kw["plural"].value, action)] = {
                        "kind": kind,
                        "namespaced": "Namespaced" in bases,
                        "verbs": verbs,
                    }
    return out


_LIGHTKUBE_VERBS = {"post": "create", "put": "update"}


def test_builtins_agree_with_lightkube_models() -> None:
    known = _lightkube_resources()
    for info in builtin.builtin_resources():
        entry = known.get((info.group, info.version, info.plural, ""))
        if entry is None:
            assert info.group == "k3s.cattle.io", f"{info.resource_group} unknown to lightkube-models"
            continue
        assert entry["kind"] == info.kind
        assert entry["namespaced"] == info.namespaced, info.plural
        verbs = {_LIGHTKUBE_VERBS.get(v, v) for v in entry["verbs"] if not v.startswith("global_")}
        assert verbs == set(info.verbs), info.plural
        for sub in info.subresources:
            if sub in builtin.CONNECT_SUBRESOURCES:
                continue  # lightkube has no connect subresources
            sub_entry = known[(info.group, info.version, info.plural, sub)]
            sub_verbs = {_LIGHTKUBE_VERBS.get(v, v) for v in sub_entry["verbs"]}
            assert sub_verbs == set(builtin.subresource_verbs(sub)), f"{info.plural}/{sub}"
            assert sub_entry["kind"] == builtin.subresource_gvk(info, sub)[2], f"{info.plural}/{sub}"


# -- the registry ------------------------------------------------------------------------------


def crontab(version: str = "v1") -> registry.ResourceInfo:
    return registry.ResourceInfo(
        group="stable.example.com",
        version=version,
        kind="CronTab",
        plural="crontabs",
        singular="crontab",
        namespaced=True,
        verbs=builtin.CRUD,
        short_names=("ct",),
        subresources=("status",),
        custom=True,
    )


def test_lookup_by_path_and_kind() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    pods = reg.lookup("", "v1", "pods")
    assert pods is not None and pods.kind == "Pod"
    assert reg.by_kind("apps", "Deployment") is reg.lookup("apps", "v1", "deployments")
    assert reg.lookup("apps", "v1", "nothing") is None
    # The two Event kinds live in different groups.
    assert reg.by_kind("", "Event").group == ""
    assert reg.by_kind("events.k8s.io", "Event").group == "events.k8s.io"


def test_groups_core_first_then_table_order() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    groups = [g for g, _ in reg.groups()]
    assert groups[0] == ""
    assert groups[1:3] == ["apps", "batch"]
    assert dict(reg.groups())["apps"] == ["v1"]


def test_storage_prefixes() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    assert reg.lookup("", "v1", "nodes").key("", "n1") == "/registry/minions/n1"
    assert reg.lookup("", "v1", "services").key("default", "s") == "/registry/services/specs/default/s"
    assert reg.lookup("", "v1", "pods").collection_prefix("") == "/registry/pods/"
    assert reg.lookup("", "v1", "pods").collection_prefix("ns") == "/registry/pods/ns/"
    assert reg.lookup("networking.k8s.io", "v1", "ingresses").storage_prefix == "/registry/ingress/"
    assert crontab().key("ns", "a") == "/registry/stable.example.com/crontabs/ns/a"
    assert reg.lookup("apps", "v1", "deployments").resource_group == "deployments.apps"


def test_add_and_remove_notify_listeners() -> None:
    reg = registry.Registry(builtin.builtin_resources())
    calls: list[int] = []
    reg.on_change(lambda: calls.append(1))
    reg.add([crontab("v1"), crontab("v2")])
    assert calls == [1]
    assert dict(reg.groups())["stable.example.com"] == ["v1", "v2"]
    assert reg.by_kind("stable.example.com", "CronTab").version == "v1"
    reg.remove("stable.example.com", "crontabs")
    assert calls == [1, 1]
    assert "stable.example.com" not in dict(reg.groups())
    assert reg.by_kind("stable.example.com", "CronTab") is None
