"""Subresources: status, scale, binding, eviction, token, finalize, and the node-routed streams."""

from __future__ import annotations

from typing import Any

from services.apiserver import context, reads, responses, writes
from services.machinery import errors, meta, patch, selectors

SCALABLE = frozenset({("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("", "replicationcontrollers")})
NODE_STREAMS = frozenset({"log", "exec", "attach", "portforward", "proxy"})


async def handle(ctx: context.Request) -> responses.Response | responses.Stream:
    info, resource = ctx.info, ctx.resource
    sub = info.subresource
    if sub not in resource.subresources:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    if sub == "status":
        return await _status(ctx)
    if sub == "scale":
        return await _scale(ctx)
    if sub == "binding" and info.verb == "create":
        return await bind(ctx, ctx.object_body())
    if sub == "eviction" and info.verb == "create":
        return await _evict(ctx)
    if sub == "token" and info.verb == "create":
        from services.apiserver import tokens

        return await tokens.token_request(ctx)
    if sub == "finalize" and info.verb == "update":
        return await _finalize(ctx)
    if sub in NODE_STREAMS:
        from services.apiserver import streams

        return await streams.handle(ctx)
    raise errors.method_not_allowed(f"{info.verb} is not supported on {resource.plural}/{sub}")


async def _status(ctx: context.Request) -> responses.Response:
    match ctx.info.verb:
        case "get":
            return await reads.get(ctx)
        case "update":
            return await writes.update(ctx, subresource="status")
        case "patch":
            return await writes.patch_(ctx, subresource="status")
    raise errors.method_not_allowed(f"{ctx.info.verb} is not supported on the status subresource")


# -- scale ----------------------------------------------------------------------------------


def to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata", {})
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    selector = spec.get("selector") or {}
    if "matchLabels" in selector or "matchExpressions" in selector:
        text = str(selectors.from_label_selector_dict(selector))
    else:  # replication controllers: a plain map
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in md},
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": text},
    }


async def _scale(ctx: context.Request) -> responses.Response:
    info = ctx.resource
    if (info.group, info.plural) not in SCALABLE and not info.custom:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    if ctx.info.verb == "get":
        cache = await ctx.api.cache(info)
        await cache.sync()
        obj = cache.get(ctx.info.namespace, ctx.info.name)
        if obj is None:
            raise errors.not_found(info.plural, ctx.info.name, group=info.group)
        return responses.json(to_scale(obj))
    if ctx.info.verb not in ("update", "patch"):
        raise errors.method_not_allowed(f"{ctx.info.verb} is not supported on the scale subresource")
    for _ in range(writes.RETRIES):
        current = await writes._current(ctx)  # noqa: SLF001 - same package
        if current is None:
            raise errors.not_found(info.plural, ctx.info.name, group=info.group)
        scale = to_scale(current.obj)
        if ctx.info.verb == "update":
            wanted = ctx.object_body()
        else:
            kind = writes.PATCH_TYPES.get(ctx.content_type)
            if kind not in ("json", "merge", "strategic"):
                raise errors.unsupported_media_type(ctx.content_type)
            wanted = writes._apply_patch(kind, scale, ctx.json_body(), info) if kind != "strategic" else patch.merge_patch(patch.clone(scale), ctx.json_body())  # noqa: SLF001
        rv = (wanted.get("metadata") or {}).get("resourceVersion")
        if rv and rv != str(current.revision):
            raise errors.stale(info.plural, ctx.info.name, group=info.group)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", ctx.info.name, [errors.Cause("FieldValueInvalid", "must be greater than or equal to 0", "spec.replicas")], group="autoscaling")  # fmt: skip
        new = patch.clone(current.obj)
        new.setdefault("spec", {})["replicas"] = replicas
        result = await writes._write(ctx, current, new, subresource="", manager=writes._manager(ctx, "kubectl"))  # noqa: SLF001
        if result is not None:
            import orjson

            return responses.json(to_scale(orjson.loads(result.body)) if result.status < 300 else orjson.loads(result.body), result.status)
    raise errors.conflict(info.plural, ctx.info.name, "too many concurrent writers", group=info.group)


# -- binding ----------------------------------------------------------------------------------


async def bind(ctx: context.Request, binding: dict[str, Any]) -> responses.Response:
    """Bind a pod to a node: set spec.nodeName once, add PodScheduled=True (409 if already bound)."""
    target = (binding.get("target") or {}).get("name")
    name = ctx.info.name or (binding.get("metadata") or {}).get("name", "")
    if not target:
        raise errors.invalid("Binding", name, [errors.Cause("FieldValueRequired", "Required value", "target.name")])
    info = ctx.api.registry.lookup("", "v1", "pods")
    assert info is not None
    key = info.key(ctx.info.namespace, name)
    async for current, cached in writes.reads(ctx.api, info, ctx.info.namespace, name):
        if current is None:
            raise errors.not_found("pods", name)
        pod = current.obj  # a private copy
        spec, md = pod.setdefault("spec", {}), pod["metadata"]
        uid = (binding.get("metadata") or {}).get("uid")
        refusal = None
        if uid and uid != md.get("uid"):
            refusal = f"the UID in the binding ({uid}) does not match the pod"
        elif md.get("deletionTimestamp"):
            refusal = "pod is being deleted, cannot be assigned to a host"
        elif spec.get("nodeName"):
            refusal = f'pod {name} is already assigned to node "{spec["nodeName"]}"'
        if refusal is not None:
            if cached:
                continue  # perhaps a stale copy: ask the store
            raise errors.conflict("pods", name, refusal)
        spec["nodeName"] = target
        annotations = (binding.get("metadata") or {}).get("annotations")
        if annotations:
            md.setdefault("annotations", {}).update(annotations)
        _set_condition(pod, "PodScheduled", "True")
        if await ctx.api.store.update(key, pod, expected=current.revision) is not None:
            return responses.json(errors.success(name=name, kind="pods"), 201)
    raise errors.conflict("pods", name, "too many concurrent writers")


def _set_condition(pod: dict[str, Any], kind: str, status: str) -> None:
    conditions = pod.setdefault("status", {}).setdefault("conditions", [])
    now = meta.now_rfc3339()
    for cond in conditions:
        if cond.get("type") == kind:
            if cond.get("status") != status:
                cond.update(status=status, lastTransitionTime=now)
            cond.pop("reason", None)
            cond.pop("message", None)
            return
    conditions.append({"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now})


# -- eviction ----------------------------------------------------------------------------------


async def _evict(ctx: context.Request) -> responses.Response:
    body = ctx.object_body()
    name = ctx.info.name
    pod_info = ctx.resource
    current = await ctx.api.store.get(pod_info.key(ctx.info.namespace, name))
    if current is None:
        raise errors.not_found("pods", name)
    pod = current.obj
    if not _terminal(pod):
        await _check_budgets(ctx, pod)
    options = body.get("deleteOptions") or {}
    sub = context.Request(ctx.api, ctx.info, pod_info, {}, ctx.headers, b"", ctx.user)
    result = await writes._delete_once(sub, current, options)  # noqa: SLF001
    if result is None:
        raise errors.conflict("pods", name, "the pod changed during eviction; try again")
    return responses.json(errors.success(name=name, kind="pods"), 201)


def _terminal(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


async def _check_budgets(ctx: context.Request, pod: dict[str, Any]) -> None:
    pdb_info = ctx.api.registry.lookup("policy", "v1", "poddisruptionbudgets")
    if pdb_info is None:
        return
    cache = await ctx.api.cache(pdb_info)
    await cache.sync()
    labels = pod.get("metadata", {}).get("labels") or {}
    for pdb in cache.list(ctx.info.namespace, None):
        selector = (pdb.get("spec") or {}).get("selector")
        if selector is None or not selectors.from_label_selector_dict(selector).matches(labels):
            continue
        allowed = (pdb.get("status") or {}).get("disruptionsAllowed", 0)
        if allowed < 1:
            raise errors.ApiError(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                causes=[errors.Cause("DisruptionBudget", f"The disruption budget {pdb['metadata']['name']} needs "
                                     f"{(pdb.get('status') or {}).get('desiredHealthy', 0)} healthy pods and has "
                                     f"{(pdb.get('status') or {}).get('currentHealthy', 0)} currently")],  # fmt: skip
                retry_after=10,
            )


# -- namespace finalize -------------------------------------------------------------------------


async def _finalize(ctx: context.Request) -> responses.Response:
    body = ctx.object_body()
    finalizers = (body.get("spec") or {}).get("finalizers") or []
    for _ in range(writes.RETRIES):
        current = await writes._current(ctx)  # noqa: SLF001
        if current is None:
            raise errors.not_found("namespaces", ctx.info.name)
        new = patch.clone(current.obj)
        new.setdefault("spec", {})["finalizers"] = finalizers
        if not finalizers:
            new["spec"].pop("finalizers")
        result = await writes._write(ctx, current, new, subresource="finalize", manager="finalize")  # noqa: SLF001
        if result is not None:
            return result
    raise errors.conflict("namespaces", ctx.info.name, "too many concurrent writers")
