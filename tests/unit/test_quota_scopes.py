"""Scoped ResourceQuotas: which pods a scope matches, which specs validation refuses, and what
admission counts against a scoped quota."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from services.apiserver import quota
from services.machinery import errors, quotascope

POD = ("", "Pod")


def pod(*, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": resources}], **spec}}


def selector(scope: str, operator: str, *values: str) -> dict[str, Any]:
    expr: dict[str, Any] = {"scopeName": scope, "operator": operator}
    if values:
        expr["values"] = list(values)
    return {"scopeSelector": {"matchExpressions": [expr]}}


def covered(spec: dict[str, Any], obj: dict[str, Any], *, is_pod: bool = True) -> bool:
    return quotascope.covers(spec, obj, is_pod=is_pod)


# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "best_effort"),
    [
        (pod(), True),
        (pod(requests={"cpu": "100m"}), False),
        (pod(limits={"memory": "64Mi"}), False),
        (pod(requests={"cpu": "0"}), True),  # only positive amounts count
        (pod(requests={"ephemeral-storage": "1Gi"}), True),  # not a QoS resource
        ({"spec": {"containers": [{"name": "c"}], "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}}, False),
        ({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}], "resources": {}}}, True),
    ],
)  # fmt: skip
def test_best_effort_is_the_qos_class(obj: dict[str, Any], best_effort: bool) -> None:
    assert quotascope.best_effort(obj) is best_effort
    assert covered({"scopes": ["BestEffort"]}, obj) is best_effort
    assert covered({"scopes": ["NotBestEffort"]}, obj) is not best_effort


@pytest.mark.parametrize(("deadline", "terminating"), [(None, False), (0, True), (30, True), (-1, False)])
def test_terminating_means_an_active_deadline(deadline: int | None, terminating: bool) -> None:
    obj = pod() if deadline is None else pod(activeDeadlineSeconds=deadline)
    assert covered({"scopes": ["Terminating"]}, obj) is terminating
    assert covered({"scopes": ["NotTerminating"]}, obj) is not terminating


@pytest.mark.parametrize(
    ("spec", "high", "none"),
    [
        (selector("PriorityClass", "In", "high", "mid"), True, False),
        (selector("PriorityClass", "NotIn", "high"), False, True),
        (selector("PriorityClass", "NotIn", "low"), True, True),
        (selector("PriorityClass", "Exists"), True, False),
        (selector("PriorityClass", "DoesNotExist"), False, True),
    ],
)
def test_priority_class_selector(spec: dict[str, Any], high: bool, none: bool) -> None:
    assert covered(spec, pod(priorityClassName="high")) is high
    assert covered(spec, pod()) is none


def test_cross_namespace_affinity() -> None:
    spec = {"scopes": ["CrossNamespacePodAffinity"]}
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"a": "b"}}}
    assert not covered(spec, pod(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}))
    named = {**term, "namespaces": ["other"]}
    assert covered(spec, pod(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [named]}}))
    anywhere = {"weight": 1, "podAffinityTerm": {**term, "namespaceSelector": {}}}
    assert covered(spec, pod(affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [anywhere]}}))
    assert not covered(spec, pod())


def test_every_requirement_must_match_and_other_kinds_match_no_scope() -> None:
    spec = {"scopes": ["NotBestEffort"], **selector("PriorityClass", "In", "high")}
    assert covered(spec, pod(requests={"cpu": "1"}, priorityClassName="high"))
    assert not covered(spec, pod(priorityClassName="high"))
    assert not covered(spec, pod(requests={"cpu": "1"}))
    config_map = {"metadata": {"name": "cm"}}
    assert not covered({"scopes": ["NotTerminating"]}, config_map, is_pod=False)
    assert covered({}, config_map, is_pod=False)  # an unscoped quota covers everything


def claim(*, asks: str | None = None, has: str | None = None, target: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if has:
        status["currentVolumeAttributesClassName"] = has
    if target:
        status["modifyVolumeStatus"] = {"targetVolumeAttributesClassName": target, "status": "InProgress"}
    spec: dict[str, Any] = {"resources": {"requests": {"storage": "1Gi"}}}
    if asks:
        spec["volumeAttributesClassName"] = asks
    return {"metadata": {"name": "data"}, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("spec", "gold", "moving_to_gold", "plain"),
    [
        (selector("VolumeAttributesClass", "In", "gold"), True, True, False),
        (selector("VolumeAttributesClass", "NotIn", "gold"), False, True, True),  # silver is still there
        (selector("VolumeAttributesClass", "Exists"), True, True, False),
        (selector("VolumeAttributesClass", "DoesNotExist"), False, False, True),
        ({"scopes": ["VolumeAttributesClass"]}, True, True, False),
    ],
)
def test_volume_attributes_class_matches_any_class_of_a_claim(
    spec: dict[str, Any], gold: bool, moving_to_gold: bool, plain: bool
) -> None:
    def claimed(obj: dict[str, Any]) -> bool:
        return quotascope.covers(spec, obj, is_pod=False, is_claim=True)

    assert claimed(claim(asks="gold", has="gold")) is gold
    assert claimed(claim(asks="gold", has="silver", target="gold")) is moving_to_gold
    assert claimed(claim()) is plain
    assert quotascope.volume_attributes_classes(claim(asks="gold", has="silver", target="gold")) == ["gold", "silver"]


def test_pods_and_claims_match_only_their_own_scopes() -> None:
    vac = selector("VolumeAttributesClass", "DoesNotExist")
    assert not covered(vac, pod())  # a pod matches no claim scope
    assert not quotascope.covers({"scopes": ["NotTerminating"]}, claim(), is_pod=False, is_claim=True)
    both = {"scopes": ["NotTerminating"], **selector("VolumeAttributesClass", "DoesNotExist")}
    assert not covered(both, pod()) and not quotascope.covers(both, claim(), is_pod=False, is_claim=True)


# -- validation ----------------------------------------------------------------------------------


def messages(spec: dict[str, Any]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in quota.validate_spec(spec)]


def test_valid_specs_pass() -> None:
    assert messages({"hard": {"pods": "1", "count/configmaps": "3"}, "scopes": ["BestEffort"]}) == []
    assert messages({"hard": {"requests.cpu": "1", "pods": "2"}, "scopes": ["NotBestEffort", "Terminating"]}) == []
    assert messages({"hard": {"limits.memory": "1Gi"}, **selector("PriorityClass", "In", "high")}) == []
    assert messages({"hard": {"pods": "1"}, **selector("CrossNamespacePodAffinity", "Exists")}) == []
    assert messages({"hard": {"configmaps": "1"}}) == []
    gold = selector("VolumeAttributesClass", "In", "gold")
    assert messages({"hard": {"persistentvolumeclaims": "2", "requests.storage": "5Gi"}, **gold}) == []
    assert messages({"hard": {"requests.storage": "5Gi"}, "scopes": ["VolumeAttributesClass"]}) == []


def test_scopes_refuse_resources_they_cannot_track() -> None:
    assert messages({"hard": {"requests.cpu": "1", "pods": "2"}, "scopes": ["BestEffort"]}) == [
        'spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort"}: unsupported scope applied to resource'
    ]
    found = messages({"hard": {"configmaps": "1", "requests.storage": "1Gi"}, "scopes": ["Terminating"]})
    assert found == [
        'spec.scopes: Invalid value: []core.ResourceQuotaScope{"Terminating"}: unsupported scope applied to resource'
    ]  # one message for both resources, as upstream's aggregated one
    assert messages({"hard": {"pods": "1"}, "scopes": ["BestEffort", "NotBestEffort"]}) == [
        'spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort", "NotBestEffort"}: conflicting scopes'
    ]
    assert messages({"hard": {"pods": "1", "requests.storage": "1Gi"}, "scopes": ["VolumeAttributesClass"]}) == [
        'spec.scopes: Invalid value: []core.ResourceQuotaScope{"VolumeAttributesClass"}: unsupported scope applied to resource'
    ]
    assert messages({"hard": {"pods": "1"}, "scopes": ["Sometimes"]}) == [
        'spec.scopes: Invalid value: []core.ResourceQuotaScope{"Sometimes"}: unsupported scope'
    ]


def test_scope_selector_rules() -> None:
    path = "spec.scopeSelector.matchExpressions"
    assert messages({"hard": {"pods": "1"}, **selector("BestEffort", "In", "x")}) == [
        f"{path}.operator: Invalid value: \"In\": {quota.EXISTS_ONLY_MESSAGE}"
    ]
    assert messages({"hard": {"pods": "1"}, **selector("PriorityClass", "In")}) == [
        f"{path}.values: Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"
    ]
    assert messages({"hard": {"pods": "1"}, **selector("PriorityClass", "Exists", "high")}) == [
        f"{path}.values: Invalid value: []string{{\"high\"}}: must be no value when `operator` is 'Exist' or "
        "'DoesNotExist' for scope selector"
    ]
    assert messages({"hard": {"pods": "1"}, **selector("PriorityClass", "Matches", "high")}) == [
        f'{path}.operator: Invalid value: "Matches": not a valid selector operator'
    ]
    assert messages({"hard": {"pods": "1"}, **selector("Weekdays", "Exists")}) == [
        f'{path}.scopeName: Invalid value: "Weekdays": unsupported scope'
    ]
    assert messages({"hard": {"secrets": "1"}, **selector("BestEffort", "Exists")}) == [
        f"{path}: Invalid value: core.ScopeSelector{{MatchExpressions:[]core.ScopedResourceSelectorRequirement{{"
        'core.ScopedResourceSelectorRequirement{ScopeName:"BestEffort", Operator:"Exists", Values:[]string(nil)}}}: '
        "unsupported scope applied to resource"
    ]
    both = {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
        {"scopeName": "Terminating", "operator": "Exists"}, {"scopeName": "NotTerminating", "operator": "Exists"}]}}  # fmt: skip
    assert messages(both) == [f"{path}: Invalid value: []core.ResourceQuotaScope(nil): conflicting scopes"]


def test_an_invalid_spec_is_a_422_with_causes() -> None:
    causes = quota.validate_spec({"hard": {"requests.cpu": "1"}, "scopes": ["BestEffort"]})
    err = errors.invalid("ResourceQuota", "q", causes)
    assert err.code == 422 and causes[0].reason == "FieldValueInvalid" and causes[0].field == "spec.scopes"


# -- admission ----------------------------------------------------------------------------------


def scoped_quota(name: str, hard: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"hard": hard, **spec}}


def admit(new: dict[str, Any], existing: list[dict[str, Any]], *quotas: dict[str, Any]) -> None:
    """What ``quota.admit`` does once it has the namespace's quotas and live pods."""
    counted = ("count/pods",)  # what quota._count_names gives pods ("pods" comes from pod_usage)
    for item in quotas:
        spec = item["spec"]
        if not quotascope.covers(spec, new, is_pod=True):
            continue
        mine = [o for o in existing if quotascope.covers(spec, o, is_pod=True)]
        used = quota.usage(POD, mine, counted=counted)
        quota.check_quota(new, item, used=used, counted=counted, adds=quota.object_usage(POD, new), is_pod=True)


def test_a_scoped_quota_counts_and_limits_only_what_it_matches() -> None:
    best = scoped_quota("best", {"pods": "1"}, scopes=["BestEffort"])
    burst = scoped_quota("burst", {"pods": "5", "requests.cpu": "1"}, scopes=["NotBestEffort"])
    burstable = pod(requests={"cpu": "500m"})
    admit(pod(), [burstable, burstable], best, burst)  # the two burstable pods are not best-effort
    with pytest.raises(errors.ApiError) as caught:
        admit(pod(), [pod(), burstable], best, burst)
    assert caught.value.code == 403
    assert str(caught.value) == "exceeded quota: best, requested: pods=1, used: pods=1, limited: pods=1"
    with pytest.raises(errors.ApiError) as caught:
        admit(pod(requests={"cpu": "600m"}), [pod(), burstable], best, burst)
    assert "exceeded quota: burst, requested: requests.cpu=600m, used: requests.cpu=500m" in str(caught.value)


def test_must_specify_only_where_the_quota_matches() -> None:
    cpu = scoped_quota("cpu", {"requests.cpu": "2"}, **selector("PriorityClass", "In", "high"))
    admit(pod(limits={"memory": "1Gi"}), [], cpu)  # no class: the quota does not cover it
    with pytest.raises(errors.ApiError) as caught:
        admit(pod(limits={"memory": "1Gi"}, priorityClassName="high"), [], cpu)
    assert str(caught.value) == "failed quota: cpu: must specify requests.cpu for: c"


def test_usage_sums_the_given_objects() -> None:
    used = quota.usage(POD, [pod(requests={"cpu": "250m"}), pod(requests={"cpu": "1", "memory": "1Gi"})], counted=("count/pods",))
    assert used["pods"] == used["count/pods"] == 2 and used["requests.cpu"] == Fraction(5, 4) and used["requests.memory"] == 2**30


def test_a_volume_attributes_class_quota_limits_the_claims_it_matches() -> None:
    kind, counted = ("", "PersistentVolumeClaim"), ("count/persistentvolumeclaims", "persistentvolumeclaims")
    gold = scoped_quota("gold", {"persistentvolumeclaims": "1", "requests.storage": "3Gi"},
                        **selector("VolumeAttributesClass", "In", "gold"))  # fmt: skip
    existing = [claim(asks="gold"), claim(asks="silver"), claim()]
    mine = [o for o in existing if quotascope.covers(gold["spec"], o, is_pod=False, is_claim=True)]
    used = quota.usage(kind, mine, counted=counted)
    assert used["persistentvolumeclaims"] == 1 and used["requests.storage"] == 2**30
    new = claim(asks="gold")
    with pytest.raises(errors.ApiError) as caught:
        quota.check_quota(new, gold, used=used, counted=counted, adds=quota.object_usage(kind, new), is_pod=False)
    assert caught.value.code == 403
    assert str(caught.value) == (
        "exceeded quota: gold, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=1, "
        "limited: persistentvolumeclaims=1"
    )
