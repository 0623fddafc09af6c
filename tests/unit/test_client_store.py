"""The informer's indexed store: keys, the namespace index, custom indexes, replace, copy."""

from __future__ import annotations

from typing import Any

import pytest

from services.client import store


def pod(
    name: str, *, namespace: str = "default", node: str = "", rv: str = "1", owner: str = ""
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": rv}
    if owner:
        md["ownerReferences"] = [{"uid": owner, "kind": "ReplicaSet", "name": "rs"}]
    return {"metadata": md, "spec": {"nodeName": node} if node else {}}


def names(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def test_keys_are_namespace_slash_name_or_just_the_name() -> None:
    assert store.key_of(pod("a", namespace="ns")) == "ns/a"
    assert store.key_of({"metadata": {"name": "node-1"}}) == "node-1"
    assert store.key("ns", "a") == "ns/a"
    assert store.key(None, "n") == "n"
    assert store.split_key("ns/a") == ("ns", "a")
    assert store.split_key("node-1") == ("", "node-1")


def test_put_get_remove() -> None:
    s = store.Store()
    assert s.put(pod("a")) is None
    replaced = s.put(pod("a", rv="2"))
    assert replaced is not None and replaced["metadata"]["resourceVersion"] == "1"
    assert s.get("default/a")["metadata"]["resourceVersion"] == "2"  # type: ignore[index]
    assert s.get_by("default", "a") is s.get("default/a")
    assert "default/a" in s and len(s) == 1
    assert s.remove("default/a") is not None
    assert s.remove("default/a") is None
    assert len(s) == 0 and s.get("default/a") is None


def test_the_namespace_index_is_always_there() -> None:
    s = store.Store()
    for name, ns in (("a", "x"), ("b", "x"), ("c", "y")):
        s.put(pod(name, namespace=ns))
    assert names(s.list_namespace("x")) == ["a", "b"]
    assert names(s.by_index(store.NAMESPACE_INDEX, "y")) == ["c"]
    assert s.list_namespace("none") == []
    assert sorted(s.index_values(store.NAMESPACE_INDEX)) == ["x", "y"]


def test_a_custom_index_follows_updates_and_deletes() -> None:
    s = store.Store({"node": store.pods_by_node})
    s.put(pod("a", node="n1"))
    s.put(pod("b", node="n1"))
    s.put(pod("c"))  # unbound: filed under nothing
    assert names(s.by_index("node", "n1")) == ["a", "b"]
    s.put(pod("b", node="n2", rv="2"))  # moved
    assert names(s.by_index("node", "n1")) == ["a"]
    assert names(s.by_index("node", "n2")) == ["b"]
    s.remove("default/a")
    assert s.by_index("node", "n1") == []
    assert "n1" not in s.index_values("node"), "empty index entries are dropped"
    assert s.index_keys("node", "n2") == ["default/b"]


def test_an_object_can_be_filed_under_several_values() -> None:
    s = store.Store({"owner": store.by_owner_uid})
    obj = pod("a")
    obj["metadata"]["ownerReferences"] = [{"uid": "u1"}, {"uid": "u2"}, {"uid": "u1"}]
    s.put(obj)
    assert names(s.by_index("owner", "u1")) == ["a"]
    assert names(s.by_index("owner", "u2")) == ["a"]


def test_an_indexer_added_later_files_what_is_stored() -> None:
    s = store.Store()
    s.put(pod("a", node="n1"))
    s.add_indexer("node", store.pods_by_node)
    assert names(s.by_index("node", "n1")) == ["a"]
    with pytest.raises(ValueError):
        s.add_indexer("node", store.pods_by_node)
    with pytest.raises(KeyError):
        s.by_index("missing", "x")


def test_replace_rebuilds_content_and_indexes() -> None:
    s = store.Store({"node": store.pods_by_node})
    s.put(pod("old", node="n1"))
    s.replace([pod("a", node="n2"), pod("b", namespace="other")])
    assert sorted(s.keys()) == ["default/a", "other/b"]
    assert s.by_index("node", "n1") == []
    assert names(s.by_index("node", "n2")) == ["a"]
    assert names(s.list_namespace("other")) == ["b"]


def test_copy_is_deep_and_leaves_the_cached_object_alone() -> None:
    s = store.Store()
    s.put(pod("a", node="n1"))
    cached = s.get("default/a")
    assert cached is not None
    mine = store.copy(cached)
    mine["spec"]["nodeName"] = "n2"
    mine["metadata"]["labels"] = {"x": "y"}
    assert cached["spec"]["nodeName"] == "n1"
    assert "labels" not in cached["metadata"]
