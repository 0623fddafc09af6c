"""JSON patch, merge patch and strategic merge patch (results as kubectl gets them from upstream)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.machinery import errors, patch

POD_META = patch.patch_meta_for("", "Pod")
DEPLOY_META = patch.patch_meta_for("apps", "Deployment")


def pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b", "c"]},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "args": ["--x", "--y"],
                },
                {"name": "sidecar", "image": "side:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "k1", "operator": "Exists"}],
            "nodeSelector": {"disk": "ssd"},
        },
    }


def smp(obj: dict[str, Any], body: Any, meta: patch.PatchMeta = POD_META) -> dict[str, Any]:
    before = copy.deepcopy(obj)
    out = patch.strategic_merge_patch(obj, body, meta)
    assert obj == before  # input untouched
    return out


def names(items: list[dict[str, Any]]) -> list[str]:
    return [i["name"] for i in items]


# --- strategic merge patch ---------------------------------------------------------------------


def test_container_list_merges_by_name() -> None:
    out = smp(
        pod(), {"spec": {"containers": [{"name": "app", "image": "app:2"}, {"name": "new", "image": "n:1"}]}}
    )
    containers = out["spec"]["containers"]
    # Patch items keep the patch's order; items only on the server follow, as upstream orders them.
    assert names(containers) == ["app", "new", "sidecar"]
    assert containers[0]["image"] == "app:2"
    assert containers[0]["args"] == ["--x", "--y"]  # untouched fields stay
    assert containers[2] == {"name": "sidecar", "image": "side:1"}


def test_env_merges_by_name_inside_container() -> None:
    body = {
        "spec": {
            "containers": [
                {"name": "app", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}
            ]
        }
    }
    env = smp(pod(), body)["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}]


def test_ports_merge_by_container_port() -> None:
    body = {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]}}
    ports = smp(pod(), body)["spec"]["containers"][0]["ports"]
    assert ports == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]


def test_patch_delete_of_a_list_element() -> None:
    out = smp(pod(), {"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}})
    assert names(out["spec"]["containers"]) == ["app"]
    body = {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}
    assert smp(pod(), body)["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]


def test_patch_delete_without_merge_key_is_400() -> None:
    with pytest.raises(errors.ApiError) as info:
        smp(pod(), {"spec": {"containers": [{"$patch": "delete", "image": "x"}]}})
    assert info.value.code == 400
    assert "does not contain declared merge key: name" in info.value.message


def test_patch_replace_of_a_list() -> None:
    body = {"spec": {"containers": [{"name": "only", "image": "o:1"}, {"$patch": "replace"}]}}
    assert smp(pod(), body)["spec"]["containers"] == [{"name": "only", "image": "o:1"}]


def test_patch_replace_of_a_map() -> None:
    out = smp(pod(), {"metadata": {"labels": {"$patch": "replace", "new": "1"}}})
    assert out["metadata"]["labels"] == {"new": "1"}
    assert out["metadata"]["name"] == "p"


def test_patch_delete_of_a_map() -> None:
    out = smp(pod(), {"spec": {"nodeSelector": {"$patch": "delete"}}})
    assert "nodeSelector" not in out["spec"]


def test_unknown_patch_directive_is_400() -> None:
    with pytest.raises(errors.ApiError) as info:
        smp(pod(), {"metadata": {"labels": {"$patch": "explode"}}})
    assert info.value.code == 400
    assert info.value.message.startswith("unknown patch type: explode")


def test_retain_keys_clears_other_union_members() -> None:
    obj = pod()
    body = {
        "spec": {
            "volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/d"}}]
        }
    }
    assert smp(obj, body)["spec"]["volumes"] == [{"name": "data", "hostPath": {"path": "/d"}}]


def test_retain_keys_must_cover_the_patch() -> None:
    body = {"spec": {"volumes": [{"name": "data", "$retainKeys": ["name"], "hostPath": {"path": "/d"}}]}}
    with pytest.raises(errors.ApiError) as info:
        smp(pod(), body)
    assert info.value.code == 422


def test_deployment_strategy_retain_keys() -> None:
    obj = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    body = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert smp(obj, body, DEPLOY_META)["spec"]["strategy"] == {"type": "Recreate"}


def test_set_element_order_reorders_containers() -> None:
    body = {
        "spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "app:3"}],
        }
    }
    out = smp(pod(), body)
    assert names(out["spec"]["containers"]) == ["sidecar", "app"]
    assert out["spec"]["containers"][1]["image"] == "app:3"
    assert "$setElementOrder/containers" not in out["spec"]


def test_set_element_order_with_new_element() -> None:
    body = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "mid"}, {"name": "sidecar"}],
            "containers": [{"name": "mid", "image": "m:1"}],
        }
    }
    assert names(smp(pod(), body)["spec"]["containers"]) == ["app", "mid", "sidecar"]


def test_set_element_order_mismatch_is_400() -> None:
    body = {"spec": {"$setElementOrder/containers": [{"name": "app"}], "containers": [{"name": "zzz"}]}}
    with pytest.raises(errors.ApiError) as info:
        smp(pod(), body)
    assert info.value.code == 400


def test_delete_from_primitive_list_on_finalizers() -> None:
    out = smp(pod(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zzz"]}})
    assert out["metadata"]["finalizers"] == ["a", "c"]


def test_delete_from_primitive_list_with_order() -> None:
    # What kubectl sends when an edit drops finalizer "a" and moves "c" first.
    body = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "$setElementOrder/finalizers": ["c", "b"]}
    }
    assert smp(pod(), body)["metadata"]["finalizers"] == ["c", "b"]


def test_finalizers_merge_as_a_set() -> None:
    out = smp(pod(), {"metadata": {"finalizers": ["b", "d"]}})
    assert sorted(out["metadata"]["finalizers"]) == ["a", "b", "c", "d"]
    assert out["metadata"]["finalizers"].count("b") == 1


def test_null_deletes() -> None:
    out = smp(pod(), {"metadata": {"labels": {"tier": None}}, "spec": {"nodeSelector": None}})
    assert out["metadata"]["labels"] == {"app": "web"}
    assert "nodeSelector" not in out["spec"]


def test_nulls_under_new_keys_are_dropped() -> None:
    out = smp(pod(), {"spec": {"securityContext": {"runAsUser": 1, "fsGroup": None}}})
    assert out["spec"]["securityContext"] == {"runAsUser": 1}


def test_tolerations_args_and_command_are_replaced() -> None:
    body = {
        "spec": {
            "tolerations": [{"key": "k2", "operator": "Exists"}],
            "containers": [{"name": "app", "args": ["--z"], "command": ["run"]}],
        }
    }
    out = smp(pod(), body)
    assert out["spec"]["tolerations"] == [{"key": "k2", "operator": "Exists"}]
    assert out["spec"]["containers"][0]["args"] == ["--z"]
    assert out["spec"]["containers"][0]["command"] == ["run"]


def test_labels_merge() -> None:
    out = smp(pod(), {"metadata": {"labels": {"app": "api", "new": "x"}}})
    assert out["metadata"]["labels"] == {"app": "api", "tier": "fe", "new": "x"}


def test_pod_template_in_deployment_uses_pod_meta() -> None:
    obj = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}
        }
    }
    body = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "2"}]}}}}
    out = smp(obj, body, DEPLOY_META)
    assert out["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "1"},
        {"name": "b", "image": "2"},
    ]


def test_cronjob_template_meta() -> None:
    meta = patch.patch_meta_for("batch", "CronJob")
    containers = (
        meta.child("spec")
        .child("jobTemplate")
        .child("spec")
        .child("template")
        .child("spec")
        .child("containers")
    )
    assert (containers.strategy, containers.merge_key) == ("merge", "name")


def test_service_ports_merge_by_port() -> None:
    meta = patch.patch_meta_for("", "Service")
    obj = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    out = smp(obj, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, meta)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


def test_node_conditions_merge_by_type_and_taints_replaced() -> None:
    meta = patch.patch_meta_for("", "Node")
    obj = {
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "MemoryPressure", "status": "False"},
            ]
        },
    }
    body = {"spec": {"taints": []}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    out = smp(obj, body, meta)
    assert out["spec"]["taints"] == []
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "MemoryPressure", "status": "False"},
    ]


def test_lists_of_lists_are_422() -> None:
    with pytest.raises(errors.ApiError) as info:
        smp({"metadata": {"finalizers": [["a"]]}}, {"metadata": {"finalizers": [["b"]]}})
    assert info.value.code == 422


def test_non_object_patch_is_400() -> None:
    with pytest.raises(errors.ApiError) as info:
        smp(pod(), [1, 2])
    assert info.value.code == 400


def test_is_strategic_supported() -> None:
    assert patch.is_strategic_supported("", "Pod")
    assert patch.is_strategic_supported("apps", "Deployment")
    assert not patch.is_strategic_supported("example.com", "Widget")
    assert not patch.is_strategic_supported("helm.cattle.io", "HelmChart")


def test_meta_from_paths() -> None:
    meta = patch.meta_from_paths(
        {("spec", "items"): ("merge", "id"), ("spec", "items", "*", "tags"): ("merge", "")}
    )
    obj = {"spec": {"items": [{"id": 1, "tags": ["a"]}]}}
    out = smp(obj, {"spec": {"items": [{"id": 1, "tags": ["b"]}, {"id": 2}]}}, meta)
    assert out["spec"]["items"] == [{"id": 1, "tags": ["b", "a"]}, {"id": 2}]


# --- JSON patch and merge patch -------------------------------------------------------------------


def test_json_patch() -> None:
    obj = pod()
    ops = [
        {"op": "replace", "path": "/spec/containers/0/image", "value": "app:9"},
        {"op": "add", "path": "/metadata/labels/new", "value": "1"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    out = patch.json_patch(obj, ops)
    assert out["spec"]["containers"][0]["image"] == "app:9"
    assert out["metadata"]["labels"]["new"] == "1"
    assert out["metadata"]["finalizers"] == ["b", "c"]
    assert obj == pod()


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/metadata/labels/missing"}],
        [{"op": "test", "path": "/metadata/name", "value": "other"}],
        [{"op": "explode", "path": "/a"}],
        [{"op": "add", "path": "no-slash", "value": 1}],
        [{"op": "add", "path": "/metadata/labels/x"}],
        [{"op": "replace", "path": "", "value": [1]}],
    ],
)
def test_json_patch_failures_are_422(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(errors.ApiError) as info:
        patch.json_patch(pod(), ops)
    assert info.value.code == 422
    assert info.value.reason == "Invalid"
    assert info.value.message == "the server rejected our request due to an error in our request"
    assert info.value.causes


def test_json_patch_body_must_be_a_list() -> None:
    with pytest.raises(errors.ApiError) as info:
        patch.json_patch(pod(), {"op": "add", "path": "/a", "value": 1})
    assert info.value.code == 400
    assert info.value.message == "json: cannot unmarshal object into Go value of type jsonpatch.Patch"


def test_json_patch_operation_limit() -> None:
    ops = [{"op": "test", "path": "/kind", "value": "Pod"}] * (patch.MAX_JSON_PATCH_OPERATIONS + 1)
    with pytest.raises(errors.ApiError) as info:
        patch.json_patch(pod(), ops)
    assert info.value.code == 413


def test_merge_patch() -> None:
    obj = pod()
    out = patch.merge_patch(
        obj, {"metadata": {"labels": {"tier": None, "x": "1"}}, "spec": {"tolerations": None}}
    )
    assert out["metadata"]["labels"] == {"app": "web", "x": "1"}
    assert "tolerations" not in out["spec"]
    out = patch.merge_patch(obj, {"spec": {"containers": [{"name": "only"}]}})
    assert out["spec"]["containers"] == [{"name": "only"}]  # lists are replaced whole
    assert obj == pod()
    with pytest.raises(errors.ApiError):
        patch.merge_patch(obj, [1])
