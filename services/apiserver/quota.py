"""The LimitRanger and ResourceQuota admission plugins, on create.

LimitRanger: for each LimitRange of the namespace, a ``Container`` entry's ``defaultRequest`` and
``default`` fill a container's missing requests and limits (recorded in the pod annotation
``kubernetes.io/limit-ranger`` as upstream does), then its ``min`` and ``max`` bound them: a
container outside them is refused with 403 in upstream's words ("maximum cpu usage per Container
is 1, but limit is 2").

ResourceQuota: for each ResourceQuota of the namespace that covers the new object, what the
object would add (a pod's ``pods``, ``requests.*`` and ``limits.*`` from its containers; one
``count/<resource>`` for any object; the legacy names ``services``, ``secrets``, ``configmaps``,
``persistentvolumeclaims``, ``replicationcontrollers``, ``resourcequotas`` and a claim's
``requests.storage``) is added to what the objects of the namespace that the quota covers already
use, counted from the watch cache; above ``hard`` the create is refused: "exceeded quota: NAME,
requested: pods=1, used: pods=2, limited: pods=2". A quota on ``requests.cpu`` (and the like) also
refuses pods it covers that do not state it ("failed quota: NAME: must specify requests.cpu for:
CONTAINER"). Usage is counted at admission, not reserved (the cache is synced with the store
first, so what was created before counts): two creates racing past the last unit at the same
moment may both pass, and the resourcequota controller's status then shows the overshoot.

Scoped quotas (``spec.scopes``, ``spec.scopeSelector``) cover only the pods their scopes match
(``services.machinery.quotascope``), and no object of another kind. A ResourceQuota being created
is checked first as upstream's validation checks its scopes (422 with its messages: "unsupported
scope applied to resource", "conflicting scopes", the operator and values rules of the selector).
"""

from __future__ import annotations

import fractions
import time
import weakref
from collections.abc import Iterable
from typing import Any

from services.apiserver import context, validation
from services.machinery import errors, quantity, quotascope

Obj = dict[str, Any]

LEGACY_COUNTS = {
    ("", "services"): "services",
    ("", "secrets"): "secrets",
    ("", "configmaps"): "configmaps",
    ("", "persistentvolumeclaims"): "persistentvolumeclaims",
    ("", "replicationcontrollers"): "replicationcontrollers",
    ("", "resourcequotas"): "resourcequotas",
}
COMPUTE = ("cpu", "memory", "ephemeral-storage")
LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"


async def admit(ctx: context.Request, obj: Obj) -> None:
    namespace = (obj.get("metadata") or {}).get("namespace") or ctx.info.namespace
    if not ctx.resource.namespaced or not namespace:
        return
    kind = (ctx.resource.group, ctx.resource.kind)
    is_pod, is_claim = kind == ("", "Pod"), kind == ("", "PersistentVolumeClaim")
    if is_pod:
        apply_limit_ranges(obj, await _policies(ctx, "limitranges", namespace))
    quotas = [
        q for q in await _policies(ctx, "resourcequotas", namespace) if _enforced(q, obj, is_pod=is_pod, is_claim=is_claim)
    ]
    if quotas:
        # Synced first: an object created a moment ago must count (only namespaces with quotas pay this).
        existing = await _list(ctx, ctx.resource.plural, namespace, group=ctx.resource.group, synced=True)
        live = [o for o in existing if not (is_pod and _terminal(o))]
        counted, adds = _count_names(ctx), object_usage(kind, obj)
        for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            spec = quota.get("spec") or {}
            mine = [o for o in live if quotascope.covers(spec, o, is_pod=is_pod, is_claim=is_claim)]
            check_quota(obj, quota, used=usage(kind, mine, counted=counted), counted=counted, adds=adds, is_pod=is_pod)


# -- LimitRanger -------------------------------------------------------------------------------------


def apply_limit_ranges(pod: Obj, ranges: Iterable[Obj]) -> None:
    spec = pod.setdefault("spec", {})
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    notes: list[str] = []
    for item in ranges:
        for limit in (item.get("spec") or {}).get("limits") or ():
            if limit.get("type") != "Container":
                continue
            for container in containers:
                notes += _default_container(container, limit)
                _check_bounds(pod, container, limit)
    if notes:
        pod.setdefault("metadata", {}).setdefault("annotations", {})[LIMIT_RANGER_ANNOTATION] = (
            "LimitRanger plugin set: " + "; ".join(notes)
        )


def _default_container(container: Obj, limit: Obj) -> list[str]:
    resources = container.setdefault("resources", {})
    set_requests, set_limits = [], []
    for name, value in (limit.get("defaultRequest") or {}).items():
        if name not in (resources.get("requests") or {}):
            resources.setdefault("requests", {})[name] = value
            set_requests.append(name)
    for name, value in (limit.get("default") or {}).items():
        if name not in (resources.get("limits") or {}):
            resources.setdefault("limits", {})[name] = value
            set_limits.append(name)
            if name not in (resources.get("requests") or {}):  # a request defaults to its limit
                resources.setdefault("requests", {})[name] = value
                set_requests.append(name)
    notes = []
    if set_requests:
        notes.append(f"{', '.join(set_requests)} request for container {container.get('name', '')}")
    if set_limits:
        notes.append(f"{', '.join(set_limits)} limit for container {container.get('name', '')}")
    return notes


def _check_bounds(pod: Obj, container: Obj, limit: Obj) -> None:
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName") or ""
    for resource, bound in (limit.get("max") or {}).items():
        if resource not in limits:
            _refuse(name, f"maximum {resource} usage per Container is {bound}.  No limit is specified")
        if _amount(limits[resource]) > _amount(bound):
            _refuse(name, f"maximum {resource} usage per Container is {bound}, but limit is {limits[resource]}")
    for resource, bound in (limit.get("min") or {}).items():
        given = requests.get(resource, limits.get(resource))
        if given is None:
            _refuse(name, f"minimum {resource} usage per Container is {bound}.  No request is specified")
        if _amount(given) < _amount(bound):
            _refuse(name, f"minimum {resource} usage per Container is {bound}, but request is {given}")


def _refuse(pod_name: str, message: str) -> None:
    raise errors.forbidden(f'pods "{pod_name}" is forbidden: {message}', resource="pods", name=pod_name)


# -- ResourceQuota ------------------------------------------------------------------------------------


def check_quota(obj: Obj, quota: Obj, *, used: dict[str, fractions.Fraction], counted: tuple[str, ...],
                adds: dict[str, fractions.Fraction], is_pod: bool) -> None:  # fmt: skip
    """Refuse ``obj`` if it would take ``quota`` past its ``hard``, given what covered objects ``used``."""
    delta = {name: fractions.Fraction(1) for name in counted} | adds
    hard = (quota.get("spec") or {}).get("hard") or {}
    name = quota["metadata"]["name"]
    if is_pod:
        _require_stated(obj, hard, quota=name)
    over = [r for r in sorted(hard) if r in delta and used.get(r, 0) + delta[r] > _amount(hard[r])]
    if over:
        requested = ",".join(f"{r}={_format(r, delta[r])}" for r in over)
        in_use = ",".join(f"{r}={_format(r, used.get(r, fractions.Fraction(0)))}" for r in over)
        limited = ",".join(f"{r}={hard[r]}" for r in over)
        raise errors.forbidden(
            f"exceeded quota: {name}, requested: {requested}, used: {in_use}, limited: {limited}",
            resource=counted[0].removeprefix("count/") if counted else "",
            name=(obj.get("metadata") or {}).get("name", ""),
        )


def usage(kind: tuple[str, str], objects: list[Obj], *, counted: tuple[str, ...]) -> dict[str, fractions.Fraction]:
    """What ``objects`` (live ones of one kind) use together, under each of the names a quota may hold."""
    used = {name: fractions.Fraction(len(objects)) for name in counted}
    for obj in objects:
        for key, value in object_usage(kind, obj).items():
            used[key] = used.get(key, fractions.Fraction(0)) + value
    return used


def object_usage(kind: tuple[str, str], obj: Obj) -> dict[str, fractions.Fraction]:
    """What one object counts against a quota beyond its ``count/...``."""
    if kind == ("", "Pod"):
        return {} if _terminal(obj) else pod_usage(obj)
    if kind == ("", "PersistentVolumeClaim"):
        storage = (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        return {"requests.storage": _amount(storage)} if storage is not None else {}
    return {}


def pod_usage(pod: Obj) -> dict[str, fractions.Fraction]:
    """What one pod counts against a quota (init containers: the larger of any one and the sum)."""
    spec = pod.get("spec") or {}
    usage: dict[str, fractions.Fraction] = {"pods": fractions.Fraction(1)}
    for kind in ("requests", "limits"):
        for resource in COMPUTE:
            app = sum((_container_amount(c, kind, resource) for c in spec.get("containers") or ()), fractions.Fraction(0))
            init = max((_container_amount(c, kind, resource) for c in spec.get("initContainers") or ()), default=0)
            total = max(app, fractions.Fraction(init))
            if total:
                usage[f"{kind}.{resource}"] = total
                if kind == "requests" and resource != "ephemeral-storage":
                    usage[resource] = total  # the bare names mean requests
    return usage


def _require_stated(pod: Obj, hard: dict[str, Any], *, quota: str) -> None:
    missing = []
    for key in sorted(hard):
        kind, _, resource = key.partition(".")
        if kind not in ("requests", "limits") or resource not in ("cpu", "memory"):
            continue
        lacking = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or ()
                   if resource not in ((c.get("resources") or {}).get(kind) or {})]  # fmt: skip
        if lacking:
            missing.append(f"{key} for: {','.join(lacking)}")
    if missing:
        name = (pod.get("metadata") or {}).get("name", "")
        raise errors.forbidden(f"failed quota: {quota}: must specify {'; '.join(missing)}", resource="pods", name=name)


def _count_names(ctx: context.Request) -> tuple[str, ...]:
    info = ctx.resource
    names = [f"count/{info.plural}" + (f".{info.group}" if info.group else "")]
    legacy = LEGACY_COUNTS.get((info.group, info.plural))
    if legacy:
        names.append(legacy)
    return tuple(names)


async def _list(ctx: context.Request, plural: str, namespace: str, *, group: str = "", synced: bool = False) -> list[Obj]:
    info = ctx.api.registry.lookup(group, "v1", plural) or next(
        (i for i in ctx.api.registry.all() if i.group == group and i.plural == plural), None
    )
    if info is None:
        return []
    cache = await ctx.api.cache(info)
    if synced:
        await cache.sync()
    return cache.list(namespace, None)


# -- ResourceQuota validation ---------------------------------------------------------------------

EXISTS_ONLY_MESSAGE = (
    "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, "
    "ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity"
)


def validate_spec(spec: Obj) -> list[errors.Cause]:
    """Upstream's checks of a quota's scopes and scope selector, with its fields and messages (bad
    values printed as Go prints the internal types: ``[]core.ResourceQuotaScope{"BestEffort"}``)."""
    hard = sorted(str(k) for k in spec.get("hard") or {}) if isinstance(spec.get("hard"), dict) else []
    scopes = [str(s) for s in spec.get("scopes") or ()] if isinstance(spec.get("scopes"), list) else []
    given_scopes = _go_scopes(spec.get("scopes"))
    causes: list[errors.Cause] = []
    for scope in scopes:
        if scope not in quotascope.SCOPES:
            causes.append(_invalid("spec.scopes", given_scopes, "unsupported scope"))
        causes += _unsupported_for(scope, hard, "spec.scopes", given_scopes)
    causes += _conflicts(scopes, "spec.scopes", given_scopes)
    selector = spec.get("scopeSelector")
    if isinstance(selector, dict):
        causes += _validate_selector(selector, hard, given_scopes=given_scopes)
    return list(dict.fromkeys(causes))  # one (field, message) once, as upstream's aggregated message


def _validate_selector(selector: Obj, hard: list[str], *, given_scopes: str) -> list[errors.Cause]:
    path = "spec.scopeSelector.matchExpressions"
    causes: list[errors.Cause] = []
    seen: list[str] = []
    for req in quotascope.requirements({"scopeSelector": selector}):
        if req.scope not in quotascope.SCOPES:
            causes.append(_invalid(f"{path}.scopeName", validation.go_quote(req.scope), "unsupported scope"))
        causes += _unsupported_for(req.scope, hard, path, _go_selector(selector))
        if req.scope in quotascope.EXISTS_ONLY and req.operator != "Exists":
            causes.append(_invalid(f"{path}.operator", validation.go_quote(req.operator), EXISTS_ONLY_MESSAGE))
        if req.operator in ("In", "NotIn") and not req.values:
            causes.append(errors.Cause(
                "FieldValueRequired",
                "Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                f"{path}.values",
            ))  # fmt: skip
        elif req.operator in ("Exists", "DoesNotExist") and req.values:
            message = "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector"
            causes.append(_invalid(f"{path}.values", _go_strings(req.values), message))
        elif req.operator not in quotascope.OPERATORS:
            causes.append(_invalid(f"{path}.operator", validation.go_quote(req.operator), "not a valid selector operator"))
        seen.append(req.scope)
    return causes + _conflicts(seen, path, given_scopes)  # upstream quotes spec.scopes here


def _unsupported_for(scope: str, hard: list[str], path: str, shown: str) -> list[errors.Cause]:
    return [
        _invalid(path, shown, "unsupported scope applied to resource")
        for resource in hard
        if quotascope.is_standard(resource) and not quotascope.allows(scope, resource)
    ]


def _conflicts(scopes: list[str], path: str, shown: str) -> list[errors.Cause]:
    return [_invalid(path, shown, "conflicting scopes") for pair in quotascope.CONFLICTING if set(pair) <= set(scopes)]


def _invalid(field: str, shown: str, detail: str) -> errors.Cause:
    return errors.Cause("FieldValueInvalid", f"Invalid value: {shown}: {detail}", field)


def _go_strings(values: Iterable[str], *, type_name: str = "string") -> str:
    return f"[]{type_name}{{" + ", ".join(validation.go_quote(v) for v in values) + "}"


def _go_scopes(value: Any) -> str:
    if not isinstance(value, list):
        return "[]core.ResourceQuotaScope(nil)"
    return _go_strings((str(v) for v in value), type_name="core.ResourceQuotaScope")


def _go_selector(selector: Obj) -> str:
    items = []
    given = selector.get("matchExpressions")
    for expr in given if isinstance(given, list) else ():
        expr = expr if isinstance(expr, dict) else {}
        values = expr.get("values")
        shown = _go_strings(str(v) for v in values) if isinstance(values, list) else "[]string(nil)"
        items.append(
            f"core.ScopedResourceSelectorRequirement{{ScopeName:{validation.go_quote(str(expr.get('scopeName') or ''))}, "
            f"Operator:{validation.go_quote(str(expr.get('operator') or ''))}, Values:{shown}}}"
        )
    return f"core.ScopeSelector{{MatchExpressions:[]core.ScopedResourceSelectorRequirement{{{', '.join(items)}}}}}"


# (api, plural, namespace) -> when the store last confirmed the namespace has none (monotonic)
_NONE_SEEN: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], float]] = weakref.WeakKeyDictionary()
LIVE_LOOKUP_TTL = 30.0  # seconds, as upstream's admission plugins cache a live lookup


async def _policies(ctx: context.Request, plural: str, namespace: str) -> list[Obj]:
    """LimitRanges or ResourceQuotas of the namespace, as the store has them now: where the cache
    holds some, it is synced first (a policy changed a moment ago counts); where it holds none, the
    store is asked at most every 30 s per namespace, as upstream's live lookup does, so namespaces
    without policies (most) pay nothing per create."""
    found = await _list(ctx, plural, namespace)
    if found:
        return await _list(ctx, plural, namespace, synced=True)
    seen = _NONE_SEEN.setdefault(ctx.api, {})
    now = time.monotonic()
    if now - seen.get((plural, namespace), -LIVE_LOOKUP_TTL) < LIVE_LOOKUP_TTL:
        return []
    found = await _list(ctx, plural, namespace, synced=True)
    if not found:
        seen[(plural, namespace)] = now
    return found


def _enforced(quota: Obj, obj: Obj, *, is_pod: bool, is_claim: bool) -> bool:
    spec = quota.get("spec") or {}
    return bool(spec.get("hard")) and quotascope.covers(spec, obj, is_pod=is_pod, is_claim=is_claim)


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _container_amount(container: Obj, kind: str, resource: str) -> fractions.Fraction:
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    return _amount(value) if value is not None else fractions.Fraction(0)


def _amount(value: Any) -> fractions.Fraction:
    try:
        return quantity.parse(value if isinstance(value, str | int | float) else str(value))
    except (quantity.QuantityError, ValueError, ZeroDivisionError):
        return fractions.Fraction(0)


def _format(resource: str, value: fractions.Fraction) -> str:
    binary = resource.endswith(("memory", "storage"))  # bytes print as Ki/Mi/Gi when exact
    return quantity.format(value, binary=binary)
