"""Admission: what the server does to and checks about objects beyond generic metadata.

One module per concern would be the upstream shape; here the plugins are small
functions called at fixed points of the write path (``writes.py``):

- namespace lifecycle: no objects in a missing or terminating namespace; the
  built-in namespaces cannot be deleted;
- defaulting as Kubernetes does, per kind (``defaults.py``);
- validation beyond object metadata, per kind (with the CEL rules of custom resources, which
  need the stored object on update, and the compilation of a CRD's rules);
- immutable fields;
- deletion: pods' grace period, namespaces' two-phase delete.
"""

from __future__ import annotations

import logging
from typing import Any

from services.apiserver import allocators, context, crds, defaults, priority, quota, registry, validation
from services.machinery import errors

log = logging.getLogger(__name__)

PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Kinds whose names are DNS-1123 labels rather than subdomains.
LABEL_NAMED = frozenset({("", "Namespace"), ("", "Service"), ("", "ReplicationController"), ("apps", "Deployment"),
                         ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("batch", "CronJob")})  # fmt: skip
# Kinds that may be created by a PUT to a missing name (upstream's AllowCreateOnUpdate).
CREATE_ON_UPDATE = frozenset({("", "Endpoints"), ("", "Event"), ("events.k8s.io", "Event"),
                              ("coordination.k8s.io", "Lease"), ("", "Node")})  # fmt: skip


def name_rule(info: registry.ResourceInfo) -> str:
    if (info.group, info.kind) in LABEL_NAMED:
        return "label"
    if info.custom:
        return "subdomain"
    return "path" if info.group == "rbac.authorization.k8s.io" else "subdomain"


def create_on_update(info: registry.ResourceInfo) -> bool:
    return (info.group, info.kind) in CREATE_ON_UPDATE


async def check_namespace(ctx: context.Request, namespace: str) -> None:
    """Creating in a namespace needs it to exist and not be terminating."""
    if not ctx.resource.namespaced or not namespace:
        return
    ns_info = ctx.api.registry.lookup("", "v1", "namespaces")
    assert ns_info is not None
    cache = await ctx.api.cache(ns_info)
    found = cache.get("", namespace)
    if found is None:
        await cache.sync()
        found = cache.get("", namespace)
    if found is None:
        raise errors.not_found("namespaces", namespace)
    if (found.get("status") or {}).get("phase") == "Terminating":
        raise errors.forbidden(
            f'{ctx.resource.plural} "{ctx.info.name or ""}" is forbidden: unable to create new content in '
            f"namespace {namespace} because it is being terminated",
            resource=ctx.resource.plural,
            group=ctx.resource.group,
        )


def node_restriction(ctx: context.Request, obj: dict[str, Any]) -> None:
    """A node may write only its own Node, its own Lease, and pods bound to it (upstream NodeRestriction).

    The node authorizer cannot see names on create (they are in the body), so this admission check does.
    """
    user = ctx.user
    if user is None or "system:nodes" not in user.groups or not user.name.startswith("system:node:"):
        return
    node = user.name.removeprefix("system:node:")
    info = ctx.resource
    name = obj.get("metadata", {}).get("name", "")
    if (info.group, info.kind) == ("coordination.k8s.io", "Lease") and obj["metadata"].get(
        "namespace"
    ) == "kube-node-lease":
        if name != node:
            raise errors.forbidden(
                f'leases.coordination.k8s.io "{name}" is forbidden: node "{node}" can only access leases with the same name',
                resource="leases",
                name=name,
                group=info.group,
            )
    elif (info.group, info.kind) == ("", "Node") and name != node:
        raise errors.forbidden(
            f'nodes "{name}" is forbidden: node "{node}" is not allowed to modify node "{name}"',
            resource="nodes",
            name=name,
        )
    elif (info.group, info.kind) == ("", "Pod") and ctx.info.verb == "create":
        if (obj.get("spec") or {}).get("nodeName") != node:
            raise errors.forbidden(
                f'pods "{name}" is forbidden: node "{node}" can only create pods with spec.nodeName set to itself',
                resource="pods",
                name=name,
            )


async def mutate(ctx: context.Request, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    node_restriction(ctx, obj)
    defaults.apply(ctx.resource, obj, old)
    if old is None and ctx.resource.group == "" and ctx.resource.kind == "Pod":
        await priority.admit(ctx, obj)
    if old is None:
        await quota.admit(ctx, obj)  # LimitRange defaults and bounds, then ResourceQuota
    if ctx.resource.group == "" and ctx.resource.kind == "Service":
        await allocators.allocate(ctx, obj, old)


def validate(ctx: context.Request, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[errors.Cause]:
    """Kind-specific causes; ``old`` is the stored object on update (CEL transition rules need it)."""
    causes = defaults.validate(ctx.resource, obj) + validation.validate_schema(ctx, obj, old)
    kind = (ctx.resource.group, ctx.resource.kind)
    if kind == ("apiextensions.k8s.io", "CustomResourceDefinition"):
        causes += crds.validate_rules(obj)
    elif kind == ("", "ResourceQuota"):
        causes += quota.validate_spec(obj.get("spec") or {})  # scopes against resources, on create and update
    return causes


def check_immutable(ctx: context.Request, old: dict[str, Any], new: dict[str, Any]) -> None:
    causes = defaults.immutable_changes(ctx.resource, old, new)
    if causes:
        raise errors.invalid(
            ctx.resource.kind, new.get("metadata", {}).get("name", ""), causes, group=ctx.resource.group
        )


async def after_create(ctx: context.Request, obj: dict[str, Any]) -> None:
    return None


async def after_delete(ctx: context.Request, obj: dict[str, Any]) -> None:
    if ctx.resource.group == "" and ctx.resource.kind == "Service":
        await allocators.release(ctx, obj)


async def check_delete(ctx: context.Request, obj: dict[str, Any]) -> None:
    info = ctx.resource
    name = obj.get("metadata", {}).get("name", "")
    if (info.group, info.kind) == ("scheduling.k8s.io", "PriorityClass"):
        priority.check_delete(obj)
    if info.group == "" and info.kind == "Namespace" and name in PROTECTED_NAMESPACES:
        raise errors.forbidden(
            f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            resource="namespaces",
            name=name,
        )


def default_propagation(info: registry.ResourceInfo) -> str:
    # Upstream orphans by default for the older workload APIs only via their strategies;
    # for everything served here the default is background deletion.
    return "Background"


def has_dependents_semantics(info: registry.ResourceInfo) -> bool:
    return True


def grace_period(ctx: context.Request, obj: dict[str, Any], options: dict[str, Any]) -> int:
    """Seconds a delete waits (pods being run by a node); 0 deletes at once."""
    info = ctx.resource
    if not (info.group == "" and info.kind == "Pod"):
        return 0
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = options.get("gracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return max(0, int(grace))


def deferred(info: registry.ResourceInfo, obj: dict[str, Any]) -> bool:
    """Whether a delete waits for finalization beyond metadata.finalizers (namespaces' spec.finalizers)."""
    return info.group == "" and info.kind == "Namespace" and bool((obj.get("spec") or {}).get("finalizers"))


def on_terminate(ctx: context.Request, obj: dict[str, Any]) -> None:
    if ctx.resource.group == "" and ctx.resource.kind == "Namespace":
        obj.setdefault("status", {})["phase"] = "Terminating"


async def review(ctx: context.Request, obj: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a virtual object (TokenReview, SubjectAccessReview, ...) and return it with its status."""
    from services.apiserver import reviews

    return await reviews.evaluate(ctx, obj)
