"""Field ownership and the reduced server-side apply."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from services.machinery import errors, managedfields, patch

DEPLOY = patch.patch_meta_for("apps", "Deployment")
T0, T1, T2 = "2024-05-01T00:00:00Z", "2024-05-01T00:01:00Z", "2024-05-01T00:02:00Z"


def config(**spec: Any) -> dict[str, Any]:
    body = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}]},
        },
    }
    body.update(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "team": "a"}},
        "spec": body,
    }


def apply(live: dict[str, Any] | None, applied: dict[str, Any], *, manager: str = "kubectl", force: bool = False, now: str = T0) -> dict[str, Any]:  # fmt: skip
    return managedfields.apply(
        live, applied, manager=manager, force=force, schema=DEPLOY, api_version="apps/v1", now=now
    )


def entry(obj: dict[str, Any], manager: str) -> dict[str, Any]:
    (found,) = [e for e in obj["metadata"]["managedFields"] if e["manager"] == manager]
    return found


def test_fields_v1_shape() -> None:
    fields = managedfields.fields_v1(config(), schema=DEPLOY)
    assert fields == {
        "f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},  # a LabelSelector is owned as one value
            "f:template": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"web"}': {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {'k:{"containerPort":80}': {".": {}, "f:containerPort": {}}},
                        }
                    }
                },
            },
        },
    }


def test_fields_v1_sets_and_round_trip() -> None:
    obj = {"metadata": {"name": "x", "finalizers": ["a", "example.com/b"]}}
    fields = managedfields.fields_v1(obj, schema=patch.patch_meta_for("", "ConfigMap"))
    assert fields == {"f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"example.com/b"': {}}}}
    paths = managedfields.field_set(config(), schema=DEPLOY)
    assert managedfields.from_fields_v1(managedfields.to_fields_v1(paths)) == paths


def test_apply_creates() -> None:
    obj = apply(None, config())
    assert obj["spec"]["replicas"] == 2
    assert obj["metadata"]["name"] == "web"
    (only,) = obj["metadata"]["managedFields"]
    assert only == {
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": managedfields.fields_v1(config(), schema=DEPLOY),
    }


def test_apply_does_not_touch_its_inputs() -> None:
    live = apply(None, config())
    before_live, applied = copy.deepcopy(live), config(replicas=3)
    before_applied = copy.deepcopy(applied)
    apply(live, applied, now=T1)
    assert live == before_live and applied == before_applied


def test_reapply_without_a_field_removes_it() -> None:
    live = apply(None, config())
    smaller = config()
    del smaller["metadata"]["labels"]["team"]
    del smaller["spec"]["replicas"]
    obj = apply(live, smaller, now=T1)
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert "replicas" not in obj["spec"]
    assert "f:replicas" not in entry(obj, "kubectl")["fieldsV1"]["f:spec"]
    assert entry(obj, "kubectl")["time"] == T1


def test_reapply_without_a_container_removes_it() -> None:
    two = config()
    two["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    live = apply(None, two)
    obj = apply(live, config(), now=T1)
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["web"]


def test_removed_map_is_pruned() -> None:
    live = apply(None, config())
    bare = config()
    del bare["metadata"]["labels"]
    assert "labels" not in apply(live, bare, now=T1)["metadata"]


def test_fields_owned_by_others_survive_removal() -> None:
    live = apply(None, config())
    live = apply(
        live, {**config(), "metadata": {"name": "web", "labels": {"team": "a"}}}, manager="other", now=T1
    )
    smaller = config()
    del smaller["metadata"]["labels"]["team"]
    obj = apply(live, smaller, now=T2)
    assert obj["metadata"]["labels"] == {"app": "web", "team": "a"}  # "other" still owns team


def test_apply_merges_with_fields_set_by_others() -> None:
    live = apply(None, config())
    updated = copy.deepcopy(live)
    updated["metadata"]["annotations"] = {"note": "x"}
    updated["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    managedfields.record_update(
        live, updated, manager="kubectl-edit", api_version="apps/v1", now=T1, schema=DEPLOY
    )
    obj = apply(updated, config(), now=T2)
    assert obj["metadata"]["annotations"] == {"note": "x"}
    assert obj["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}


def scaled_by_controller() -> dict[str, Any]:
    live = apply(None, config())
    updated = copy.deepcopy(live)
    updated["spec"]["replicas"] = 5
    return managedfields.record_update(
        live, updated, manager="kube-controller-manager", api_version="apps/v1", now=T1, schema=DEPLOY
    )


def test_record_update_moves_ownership() -> None:
    obj = scaled_by_controller()
    assert entry(obj, "kube-controller-manager") == {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": T1,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    assert "f:replicas" not in entry(obj, "kubectl")["fieldsV1"]["f:spec"]


def test_conflict_with_another_manager() -> None:
    live = scaled_by_controller()
    # kubectl still thinks it owns replicas=2; first hand ownership back to the controller alone.
    live = managedfields.apply(
        live, config(replicas=5), manager="kubectl", force=False, schema=DEPLOY, api_version="apps/v1", now=T1
    )
    updated = copy.deepcopy(live)
    updated["spec"]["replicas"] = 7
    live = managedfields.record_update(
        live, updated, manager="kube-controller-manager", api_version="apps/v1", now=T1, schema=DEPLOY
    )
    with pytest.raises(errors.ApiError) as info:
        apply(live, config(replicas=3), now=T2)
    err = info.value
    assert err.code == 409 and err.reason == "Conflict"
    assert err.message == (
        'Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1: .spec.replicas'
    )
    assert [c.as_dict() for c in err.causes] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "kube-controller-manager" using apps/v1',
            "field": ".spec.replicas",
        }
    ]


def test_same_value_is_shared_not_a_conflict() -> None:
    live = scaled_by_controller()
    obj = apply(live, config(replicas=5), now=T2)
    assert obj["spec"]["replicas"] == 5
    assert entry(obj, "kube-controller-manager")["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" in entry(obj, "kubectl")["fieldsV1"]["f:spec"]


def test_force_takes_ownership() -> None:
    live = apply(None, config())
    live = apply(live, config(replicas=4), manager="other", force=True, now=T1)
    assert live["spec"]["replicas"] == 4
    with pytest.raises(errors.ApiError):
        apply(live, config(replicas=9), now=T2)
    obj = apply(live, config(replicas=9), force=True, now=T2)
    assert obj["spec"]["replicas"] == 9
    assert "f:replicas" in entry(obj, "kubectl")["fieldsV1"]["f:spec"]
    assert "f:replicas" not in entry(obj, "other")["fieldsV1"].get("f:spec", {})


def test_several_conflicts_message() -> None:
    live = apply(None, config())
    with pytest.raises(errors.ApiError) as info:
        apply(live, config(replicas=4, selector={"matchLabels": {"app": "x"}}), manager="other", now=T1)
    assert info.value.message == (
        'Apply failed with 2 conflicts: conflicts with "kubectl":\n- .spec.replicas\n- .spec.selector'
    )
    assert [c.field for c in info.value.causes] == [".spec.replicas", ".spec.selector"]


def test_conflict_path_inside_a_keyed_list() -> None:
    live = apply(None, config())
    other = config()
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    with pytest.raises(errors.ApiError) as info:
        apply(live, other, manager="other", now=T1)
    assert [c.field for c in info.value.causes] == ['.spec.template.spec.containers[name="web"].image']


def test_apply_rejects_managed_fields_and_bad_lists() -> None:
    with pytest.raises(errors.ApiError) as info:
        apply(None, {**config(), "metadata": {"name": "web", "managedFields": [{"manager": "x"}]}})
    assert info.value.code == 400
    nameless = config()
    nameless["spec"]["template"]["spec"]["containers"] = [{"image": "x"}]
    with pytest.raises(errors.ApiError) as info:
        apply(None, nameless)
    assert info.value.code == 400


def test_ignored_fields_are_neither_merged_nor_owned() -> None:
    live = apply(None, config())
    live["status"] = {"replicas": 2}
    applied = {**config(), "status": {"replicas": 99}}
    obj = managedfields.apply(
        live, applied, manager="kubectl", force=False, schema=DEPLOY, api_version="apps/v1", now=T1,
        ignored_fields=("status",),
    )  # fmt: skip
    assert obj["status"] == {"replicas": 2}
    assert "f:status" not in entry(obj, "kubectl")["fieldsV1"]


def test_record_update_on_create_and_status_subresource() -> None:
    obj = copy.deepcopy(config())
    managedfields.record_update(
        None, obj, manager="kubectl-create", api_version="apps/v1", now=T0, schema=DEPLOY
    )
    (created,) = obj["metadata"]["managedFields"]
    assert created["operation"] == "Update"
    assert created["fieldsV1"] == managedfields.fields_v1(config(), schema=DEPLOY)
    new = copy.deepcopy(obj)
    new["status"] = {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
    managedfields.record_update(
        obj, new, manager="kube-controller-manager", api_version="apps/v1", now=T1, subresource="status",
        schema=DEPLOY,
    )  # fmt: skip
    status = entry(new, "kube-controller-manager")
    assert status["subresource"] == "status"
    assert status["fieldsV1"] == {
        "f:status": {
            "f:conditions": {'k:{"type":"Available"}': {".": {}, "f:status": {}, "f:type": {}}},
            "f:replicas": {},
        }
    }


POD = patch.patch_meta_for("", "Pod")
CREATED = [
    {
        "metadata": {
            "name": "p",
            "labels": {"b": "1", "a": None},
            "finalizers": ["x", "x", "a"],
            "annotations": {},
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx",
                    "ports": [{"containerPort": 80}, {"containerPort": 81, "name": "m"}],
                },
                {"name": "side", "env": [{"name": "E", "value": "v"}, "odd"], "resources": {}},
            ],
            "nodeSelector": {"z": "1", "a": "2"},
        },
        "status": {"phase": "Pending"},
    },
    {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "a"}, {"name": "c", "args": ["x"]}]},
    },
    {"metadata": {"uid": "u"}, "spec": {"containers": []}},
    {"metadata": {}, "spec": None},
]


@pytest.mark.parametrize("obj", CREATED)
@pytest.mark.parametrize("ignored", [(), ("status",)])
def test_record_update_on_create_matches_an_update_from_nothing(
    obj: dict[str, Any], ignored: tuple[str, ...]
) -> None:
    """A create's shortcut owns exactly what an update from an object with no fields would."""
    created = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(obj)}
    updated = copy.deepcopy(created)
    options: dict[str, Any] = {
        "manager": "m",
        "api_version": "v1",
        "now": T0,
        "schema": POD,
        "ignored_fields": ignored,
    }
    managedfields.record_update(None, created, **options)
    managedfields.record_update({"metadata": {"name": "p"}}, updated, **options)
    assert orjson.dumps(created) == orjson.dumps(updated)  # key order too: FieldsV1 keys sorted, "." first


def test_record_update_removal_and_reset() -> None:
    live = apply(None, config())
    new = copy.deepcopy(live)
    del new["metadata"]["labels"]["team"]
    managedfields.record_update(
        live, new, manager="kubectl-edit", api_version="apps/v1", now=T1, schema=DEPLOY
    )
    assert "f:team" not in entry(new, "kubectl")["fieldsV1"]["f:metadata"]["f:labels"]
    assert not [e for e in new["metadata"]["managedFields"] if e["manager"] == "kubectl-edit"]
    reset = copy.deepcopy(new)
    reset["metadata"]["managedFields"] = [{}]
    managedfields.record_update(
        new, reset, manager="kubectl-edit", api_version="apps/v1", now=T2, schema=DEPLOY
    )
    assert "managedFields" not in reset["metadata"]


def test_unchanged_write_keeps_entries() -> None:
    live = apply(None, config())
    same = copy.deepcopy(live)
    managedfields.record_update(
        live, same, manager="kubectl-edit", api_version="apps/v1", now=T1, schema=DEPLOY
    )
    assert same["metadata"]["managedFields"] == live["metadata"]["managedFields"]
