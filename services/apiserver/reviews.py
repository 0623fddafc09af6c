"""Reviews: objects that are evaluated, never stored (TokenReview, *SubjectAccessReview)."""

from __future__ import annotations

from typing import Any

from services.apiserver import context
from services.apiserver.auth import types as auth_types
from services.machinery import errors


async def evaluate(ctx: context.Request, obj: dict[str, Any]) -> dict[str, Any]:
    kind = ctx.resource.kind
    spec = obj.get("spec") or {}
    if kind == "TokenReview":
        obj["status"] = await _token_review(ctx, spec)
    elif kind == "SelfSubjectAccessReview":
        if ctx.user is None:
            raise errors.unauthorized()
        obj["status"] = await _access(ctx, ctx.user, spec, namespace="")
    elif kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
        user = auth_types.UserInfo(
            name=spec.get("user", ""), groups=tuple(spec.get("groups") or ()), uid=spec.get("uid", "")
        )
        namespace = ctx.info.namespace if kind == "LocalSubjectAccessReview" else ""
        obj["status"] = await _access(ctx, user, spec, namespace=namespace)
    elif kind == "SelfSubjectRulesReview":
        if ctx.user is None:
            raise errors.unauthorized()
        obj["status"] = _rules(ctx, ctx.user, spec.get("namespace", ""))
    elif kind == "SelfSubjectReview":
        user = ctx.user
        obj["status"] = {"userInfo": {"username": user.name, "groups": list(user.groups), "uid": user.uid}} if user else {}
    else:
        raise errors.method_not_allowed(f"{kind} cannot be created")
    obj.setdefault("metadata", {})["creationTimestamp"] = None
    return obj


async def _token_review(ctx: context.Request, spec: dict[str, Any]) -> dict[str, Any]:
    token = spec.get("token", "")
    user = await ctx.api.authenticator.authenticate(auth_types.Credentials(bearer_token=token)) if token else None
    if user is None:
        return {"authenticated": False, "user": {}}
    return {
        "authenticated": True,
        "user": {"username": user.name, "uid": user.uid, "groups": list(user.groups),
                 "extra": {k: list(v) for k, v in user.extra.items()}},  # fmt: skip
        "audiences": spec.get("audiences") or [],
    }


async def _access(ctx: context.Request, user: auth_types.UserInfo, spec: dict[str, Any], *, namespace: str) -> dict[str, Any]:
    attrs = spec.get("resourceAttributes")
    if attrs:
        attributes = auth_types.Attributes(
            user=user,
            verb=attrs.get("verb", ""),
            namespace=namespace or attrs.get("namespace", ""),
            api_group=attrs.get("group", ""),
            api_version=attrs.get("version", ""),
            resource=attrs.get("resource", ""),
            subresource=attrs.get("subresource", ""),
            name=attrs.get("name", ""),
        )
    else:
        nonres = spec.get("nonResourceAttributes") or {}
        attributes = auth_types.Attributes(user=user, verb=nonres.get("verb", ""), resource_request=False, path=nonres.get("path", ""))
    decision = await ctx.api.authorizer.authorize(attributes)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    return status


def _rules(ctx: context.Request, user: auth_types.UserInfo, namespace: str) -> dict[str, Any]:
    rbac = getattr(ctx.api, "rbac", None)
    if rbac is None:
        return {"resourceRules": [], "nonResourceRules": [], "incomplete": True, "evaluationError": "no RBAC authorizer"}
    resource_rules, non_resource_rules = [], []
    for rule in rbac.rules_for(user, namespace):
        if rule.non_resource_urls:
            non_resource_rules.append({"verbs": sorted(rule.verbs), "nonResourceURLs": list(rule.non_resource_urls)})
            continue
        entry: dict[str, Any] = {"verbs": sorted(rule.verbs), "apiGroups": sorted(rule.api_groups), "resources": sorted(rule.resources)}
        if rule.resource_names:
            entry["resourceNames"] = sorted(rule.resource_names)
        resource_rules.append(entry)
    return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}
