"""Shared pod helpers: readiness and availability, deletion order, owner references, template
hashes, expectations and slow-start batches."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from services.client import errors, fake, resources, store
from services.controllers import podutil
from services.machinery import selectors

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def pod(name: str, *, node: str = "", phase: str = "Running", ready: bool | None = None, since: datetime.datetime = T0,
        created: datetime.datetime = T0, restarts: int = 0, labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}]}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "lastTransitionTime": podutil.format_time(since)}]  # fmt: skip
    return {"metadata": {"name": name, "namespace": "default", "labels": labels or {},
                         "creationTimestamp": podutil.format_time(created)},
            "spec": {"nodeName": node} if node else {}, "status": status}  # fmt: skip


def test_ready_and_available_honour_min_ready_seconds() -> None:
    p = pod("p", node="n", ready=True, since=T0)
    assert podutil.is_ready(p) and podutil.is_available(p, 0, T0)
    assert not podutil.is_available(p, 10, T0 + datetime.timedelta(seconds=10))
    assert podutil.is_available(p, 10, T0 + datetime.timedelta(seconds=11))
    assert not podutil.is_available(pod("q", ready=False), 0, T0)
    assert not podutil.is_ready(pod("r"))


def test_active_excludes_finished_and_deleting_pods() -> None:
    assert podutil.is_active(pod("a"))
    assert not podutil.is_active(pod("b", phase="Succeeded"))
    deleting = pod("c")
    deleting["metadata"]["deletionTimestamp"] = podutil.format_time(T0)
    assert not podutil.is_active(deleting)


def test_deletion_rank_gives_up_the_least_useful_pods_first() -> None:
    later = T0 + datetime.timedelta(minutes=5)
    pods = [
        pod("ready-old", node="n", ready=True, created=T0),
        pod("ready-new", node="n", ready=True, created=later, since=later),
        pod("unscheduled", phase="Pending"),
        pod("pending", node="n", phase="Pending"),
        pod("not-ready", node="n", ready=False),
        pod("ready-restarted", node="n", ready=True, restarts=3),
    ]
    order = [p["metadata"]["name"] for p in sorted(pods, key=podutil.deletion_rank)]
    assert order == ["unscheduled", "pending", "not-ready", "ready-new", "ready-restarted", "ready-old"]


def test_template_hash_is_stable_safe_and_ignores_its_own_label() -> None:
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    first = podutil.template_hash(template)
    assert first == podutil.template_hash({"spec": template["spec"], "metadata": {"labels": {"app": "web"}}})
    assert set(first) <= set(podutil.SAFE_ALPHABET) and 1 <= len(first) <= 10
    labelled = {**template, "metadata": {"labels": {"app": "web", podutil.POD_TEMPLATE_HASH_LABEL: first}}}
    assert podutil.template_hash(labelled) == first
    assert podutil.equal_ignore_hash(labelled, template)
    assert podutil.template_hash(template, 1) != first
    changed = {**template, "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}
    assert podutil.template_hash(changed) != first


def test_fnv32a_matches_the_reference_vectors() -> None:
    assert podutil.fnv32a(b"") == 0x811C9DC5
    assert podutil.fnv32a(b"a") == 0xE40C292C
    assert podutil.fnv32a(b"foobar") == 0xBF9CF968


def test_selector_of_reads_label_selectors_and_replication_controller_maps() -> None:
    assert podutil.selector_of({"selector": {"matchLabels": {"a": "1"}}}).matches({"a": "1", "b": "2"})
    assert podutil.selector_of({"selector": {"a": "1"}}).matches({"a": "1"})
    defaulted = podutil.selector_of({"template": {"metadata": {"labels": {"x": "y"}}}})
    assert defaulted.matches({"x": "y"}) and not defaulted.matches({})
    assert not podutil.selector_of({}).matches({"a": "1"})  # no selector at all selects nothing


def test_expectations_wait_for_observed_writes_or_expire() -> None:
    now = [0.0]
    exp = podutil.Expectations(ttl=10.0, clock=lambda: now[0])
    assert exp.satisfied("k")
    exp.expect("k", adds=2)
    exp.creation_observed("k")
    assert not exp.satisfied("k")
    exp.creation_observed("k")
    assert exp.satisfied("k")
    exp.expect("k", deletes=["default/a", "default/b"])
    exp.deletion_observed("k", "default/a")
    assert not exp.satisfied("k")
    now[0] = 11.0
    assert exp.satisfied("k")  # expired: a lost event does not wedge the key
    exp.forget("k")
    assert exp.satisfied("k")


async def test_slow_start_grows_batches_and_stops_at_the_first_failure() -> None:
    calls: list[int] = []

    async def ok() -> None:
        calls.append(1)

    assert await podutil.slow_start(10, ok) == (10, None)
    assert len(calls) == 10
    attempts = 0

    async def fails_from_the_fourth() -> None:
        nonlocal attempts
        attempts += 1
        if attempts >= 4:
            raise errors.ApiError(403, "Forbidden", "exceeded quota")

    done, failure = await podutil.slow_start(10, fails_from_the_fourth)
    assert attempts == 7 and done == 3  # batches of 1, 2, then 4 with failures: stop
    assert isinstance(failure, errors.ApiError)


async def test_claim_adopts_matching_orphans_and_releases_mismatches() -> None:
    api = fake.FakeApi()
    owner = await api.create(resources.REPLICASETS, {"metadata": {"name": "rs", "namespace": "default"}})
    ref = podutil.owner_reference(owner, api_version="apps/v1", kind="ReplicaSet")
    orphan = await api.create(
        resources.PODS, {"metadata": {"name": "orphan", "namespace": "default", "labels": {"app": "a"}}}
    )
    owned = await api.create(resources.PODS, {"metadata": {"name": "owned", "namespace": "default",
                                                           "labels": {"app": "b"}, "ownerReferences": [ref]}})  # fmt: skip
    theirs = await api.create(resources.PODS, {"metadata": {"name": "theirs", "namespace": "default", "labels": {"app": "a"},
                                                            "ownerReferences": [{**ref, "uid": "other"}]}})  # fmt: skip
    selector = podutil.selector_of({"selector": {"matchLabels": {"app": "a"}}})

    async def yes() -> bool:
        return True

    claimed = await podutil.claim(api, resources.PODS, owner=owner, owner_ref=ref, candidates=[orphan, owned, theirs],
                                  selector=selector, can_adopt=yes)  # fmt: skip
    assert [p["metadata"]["name"] for p in claimed] == ["orphan"]
    assert podutil.is_controlled_by(await api.get(resources.PODS, "orphan", namespace="default"), owner)
    assert not (await api.get(resources.PODS, "owned", namespace="default"))["metadata"].get(
        "ownerReferences"
    )


@pytest.mark.parametrize("status,expected", [({"replicas": 0}, {}), ({"a": 1, "b": [], "c": None}, {"a": 1})])
def test_omit_zero(status: dict[str, Any], expected: dict[str, Any]) -> None:
    assert podutil.omit_zero(status) == expected


def test_claim_candidates_are_the_owners_pods_and_the_orphans_that_may_match() -> None:
    pods = store.Store(podutil.INDEXERS)
    owner = {"metadata": {"name": "rs", "namespace": "a", "uid": "u1"}}
    other = {"metadata": {"name": "rs2", "namespace": "a", "uid": "u2"}}

    def pod(name: str, *owners: dict[str, Any], namespace: str = "a", app: str = "web",
            controller: bool = True) -> dict[str, Any]:  # fmt: skip
        refs = [{"uid": o["metadata"]["uid"], "name": o["metadata"]["name"], "kind": "ReplicaSet",
                 "controller": controller} for o in owners]  # fmt: skip
        return {"metadata": {"name": name, "namespace": namespace, "labels": {"app": app}, "ownerReferences": refs}}

    for obj in (pod("mine", owner, app="other"), pod("theirs", other), pod("orphan"), pod("orphan-db", app="db"),
                pod("elsewhere", namespace="b"), pod("loosely-owned", other, controller=False)):  # fmt: skip
        pods.put(obj)

    def names(who: dict[str, Any], selector: selectors.LabelSelector) -> list[str]:
        return sorted(o["metadata"]["name"] for o in podutil.claim_candidates(pods, who, selector))

    web = selectors.from_label_selector_dict({"matchLabels": {"app": "web"}})
    assert names(owner, web) == ["loosely-owned", "mine", "orphan"]  # owned whatever its labels; no controller: an orphan
    either = selectors.from_label_selector_dict({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]})
    assert names(owner, either) == ["loosely-owned", "mine", "orphan", "orphan-db"]
    some_app = selectors.from_label_selector_dict({"matchExpressions": [{"key": "app", "operator": "Exists"}]})
    assert names(owner, some_app) == ["loosely-owned", "mine", "orphan", "orphan-db"]  # every orphan of the namespace
    assert names(owner, selectors.NOTHING) == ["mine"]
    pods.put(pod("orphan", owner))  # adopted: filed under its owner, no longer an orphan
    assert names(owner, web) == ["loosely-owned", "mine", "orphan"]
    assert names(other, web) == ["loosely-owned", "theirs"]
