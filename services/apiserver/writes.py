"""create, update, patch, delete: the object lifecycle over compare-and-swap writes.

Every write reads the object fresh from the store (never from the cache), makes
the new version, runs admission, and writes it only if the object is still at
the revision that was read. A lost race is retried for patches and
unconditional updates (as the upstream registry does) and is a 409 Conflict for
updates that named a resourceVersion.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from services.apiserver import admission, context, registry, responses, storage, validation
from services.apiserver.reads import render_object
from services.apiserver.request import flag, int_param, param
from services.kine import types
from services.machinery import errors, managedfields, meta, patch

log = logging.getLogger(__name__)

RETRIES = 8
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "unsupported",
}


def _dry_run(ctx: context.Request) -> bool:
    values = ctx.query.get("dryRun", [])
    for value in values:
        if value != "All":
            raise errors.bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _manager(ctx: context.Request, default: str) -> str:
    manager = param(ctx.query, "fieldManager")
    if len(manager) > 128:
        raise errors.bad_request("fieldManager: Too long: must have at most 128 bytes")
    return manager or default


def _user_agent_manager(ctx: context.Request) -> str:
    agent = ctx.headers.get("user-agent", "unknown")
    return agent.split("/", 1)[0] or "unknown"


def _check_identity(ctx: context.Request, obj: dict[str, Any]) -> None:
    info = ctx.resource
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if kind and kind != info.kind:
        raise errors.bad_request(f"the object provided is unrecognized (must be of type {info.kind}): kind {kind}")
    if api_version and api_version != info.api_version:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({info.api_version})"
        )
    obj["apiVersion"], obj["kind"] = info.api_version, info.kind
    md = obj.setdefault("metadata", {})
    if not isinstance(md, dict):
        raise errors.bad_request("metadata must be an object")
    if info.namespaced:
        ns = md.get("namespace") or ctx.info.namespace
        if ctx.info.namespace and ns != ctx.info.namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if not ns:
            raise errors.bad_request("the namespace of the object must be given")
        md["namespace"] = ns
    else:
        md.pop("namespace", None)


def _validate(ctx: context.Request, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    info = ctx.resource
    causes = meta.validate_object_meta(obj, namespaced=info.namespaced, name_rule=admission.name_rule(info), kind=info.kind)
    causes += admission.validate(ctx, obj, old)
    if causes:
        raise errors.invalid(info.kind, obj.get("metadata", {}).get("name", ""), causes, group=info.group)


# -- create ----------------------------------------------------------------------------------


async def create(ctx: context.Request) -> responses.Response:
    obj = ctx.object_body()
    _check_identity(ctx, obj)
    validation.check_fields(ctx, obj)
    info = ctx.resource
    if info.virtual:
        return responses.json(await admission.review(ctx, obj), 201)
    dry_run = _dry_run(ctx)
    manager = _manager(ctx, _user_agent_manager(ctx))
    md = obj["metadata"]
    if not md.get("name") and not md.get("generateName"):
        raise errors.invalid(info.kind, "", [errors.Cause("FieldValueRequired", "name or generateName is required", "metadata.name")], group=info.group)  # fmt: skip
    for _ in range(RETRIES):
        candidate = patch.clone(obj) if md.get("generateName") and not md.get("name") else obj
        revision, stored = await _create_once(ctx, candidate, manager=manager, dry_run=dry_run)
        if revision is not None:
            return render_object(ctx, stored, 201)
        if not md.get("generateName") or md.get("name"):
            raise errors.already_exists(info.plural, candidate["metadata"]["name"], group=info.group)
    raise errors.timeout("could not find a free generated name")


async def _create_once(
    ctx: context.Request, obj: dict[str, Any], *, manager: str, dry_run: bool, applied: bool = False
) -> tuple[int | None, dict[str, Any]]:
    md = obj["metadata"]
    if not md.get("name"):
        md["name"] = meta.generate_name(md["generateName"])
    await admission.check_namespace(ctx, md.get("namespace", ""))
    now = meta.now_rfc3339()
    md["uid"] = meta.new_uid()
    md["creationTimestamp"] = now
    if "spec" in obj or ctx.resource.custom:  # upstream tracks generation for kinds with a spec
        md["generation"] = 1
    else:
        md.pop("generation", None)
    for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
        md.pop(field, None)
    await admission.mutate(ctx, obj, None)
    _validate(ctx, obj)
    if not applied:  # server-side apply recorded its own Apply entry already
        managedfields.record_update(None, obj, manager=manager, operation="Update", api_version=ctx.resource.api_version,
                                    now=now, **_ownership(ctx.resource, ""))  # fmt: skip
    key = ctx.resource.key(md.get("namespace", ""), md["name"])
    if dry_run:
        return 0, obj
    try:
        revision = await ctx.api.store.create(key, obj)
    except types.StoreError as exc:
        raise storage.store_unavailable(exc) from None
    if revision is None:
        return None, obj
    await admission.after_create(ctx, obj)
    md["resourceVersion"] = str(revision)
    return revision, obj


def _ownership(info: Any, subresource: str) -> dict[str, Any]:
    """Field-ownership options for managedFields: the kind's merge keys; status belongs to /status."""
    schema = patch.patch_meta_for(info.group, info.kind) if patch.is_strategic_supported(info.group, info.kind) else None
    ignored = ("status",) if "status" in info.subresources and subresource != "status" else ()
    return {"schema": schema, "ignored_fields": ignored}


# -- update ------------------------------------------------------------------------------------


async def _current(ctx: context.Request) -> storage.Stored | None:
    return await _fresh(ctx.api, ctx.resource.key(ctx.info.namespace, ctx.info.name))


async def _fresh(api: context.Api, key: str) -> storage.Stored | None:
    try:
        return await api.store.get(key)
    except types.StoreError as exc:
        raise storage.store_unavailable(exc) from None


async def reads(
    api: context.Api, info: registry.ResourceInfo, namespace: str, name: str
) -> AsyncIterator[tuple[storage.Stored | None, bool]]:
    """(current object, from the watch cache?) for each attempt of a read-modify-write.

    The first guess is the watch cache's copy (a private one), as kube-apiserver's GuaranteedUpdate
    takes it: the write's compare-and-swap on the revision refuses it if the cache was behind, and
    the next attempt reads the store. A decision taken on the guess other than a successful write
    (an error, a no-op) must be confirmed on the store's copy: the cache can lag, never lead.
    """
    cache = api.running_cache(info)
    obj = cache.get(namespace, name) if cache is not None else None
    if obj is not None:
        yield storage.Stored(patch.clone(obj), int(obj["metadata"]["resourceVersion"])), True
    key = info.key(namespace, name)
    for _ in range(RETRIES):
        yield await _fresh(api, key), False


def _not_found(ctx: context.Request) -> errors.ApiError:
    return errors.not_found(ctx.resource.plural, ctx.info.name, group=ctx.resource.group)


async def update(ctx: context.Request, *, subresource: str = "") -> responses.Response:
    obj = ctx.object_body()
    _check_identity(ctx, obj)
    validation.check_fields(ctx, obj)
    name = obj["metadata"].get("name")
    if name != ctx.info.name:
        raise errors.bad_request(f"the name of the object ({name}) does not match the name on the URL ({ctx.info.name})")
    wanted = obj["metadata"].get("resourceVersion", "")
    manager = _manager(ctx, _user_agent_manager(ctx))
    async for current, cached in reads(ctx.api, ctx.resource, ctx.info.namespace, ctx.info.name):
        if current is None:
            if admission.create_on_update(ctx.resource) and not subresource:
                return await create(ctx)
            raise _not_found(ctx)
        if wanted and wanted != str(current.revision):
            if cached:
                continue
            raise errors.stale(ctx.resource.plural, ctx.info.name, group=ctx.resource.group)
        try:
            result = await _write(ctx, current, patch.clone(obj), subresource=subresource, manager=manager, cached=cached)
        except errors.ApiError:
            if cached:
                continue
            raise
        if result is not None:
            return result
        if wanted and not cached:
            raise errors.stale(ctx.resource.plural, ctx.info.name, group=ctx.resource.group)
    raise errors.conflict(ctx.resource.plural, ctx.info.name, "too many concurrent writers", group=ctx.resource.group)


def _merge_for_subresource(old: dict[str, Any], new: dict[str, Any], *, subresource: str, has_status: bool) -> dict[str, Any]:
    """What a write may change: the status subresource only status, the main resource all but status."""
    if subresource == "status":
        out = patch.clone(old)
        if "status" in new:
            out["status"] = new["status"]
        else:
            out.pop("status", None)
        # Labels and annotations may change through status (upstream allows it for most kinds).
        return out
    if has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    return new


async def _write(
    ctx: context.Request,
    current: storage.Stored,
    new: dict[str, Any],
    *,
    subresource: str,
    manager: str,
    operation: str = "Update",
    cached: bool = False,
) -> responses.Response | None:
    """Write ``new`` over ``current`` if it is still current; None when someone wrote first.

    ``cached``: ``current`` is the watch cache's copy; an answer that writes nothing (a no-op, a
    dry run) is then None too, for the caller to confirm on the store's copy.
    """
    info = ctx.resource
    old = current.obj
    new = _merge_for_subresource(old, new, subresource=subresource, has_status="status" in info.subresources)
    md, old_md = new.setdefault("metadata", {}), old.get("metadata", {})
    for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"):
        if field in old_md:
            md[field] = old_md[field]
        else:
            md.pop(field, None)
    md.pop("resourceVersion", None)
    if "generation" in old_md:
        md["generation"] = old_md["generation"]
        if subresource != "status" and _spec_changed(old, new):
            md["generation"] += 1
    else:
        md.pop("generation", None)
    await admission.mutate(ctx, new, old)
    _validate(ctx, new, old)
    admission.check_immutable(ctx, old, new)
    now = meta.now_rfc3339()
    if operation != "Apply":
        managedfields.record_update(old, new, manager=manager, operation=operation, api_version=info.api_version,
                                    now=now, subresource=subresource, **_ownership(info, subresource))  # fmt: skip
    key = info.key(old_md.get("namespace", ""), old_md.get("name", ""))
    if _dry_run(ctx):
        if cached:
            return None
        new["metadata"]["resourceVersion"] = str(current.revision)
        return render_object(ctx, new)
    if md.get("deletionTimestamp") and not md.get("finalizers") and not admission.deferred(info, new):
        return await _remove(ctx, key, current, new)
    if _same(old, new):
        return None if cached else render_object(ctx, old)
    try:
        revision = await ctx.api.store.update(key, new, expected=current.revision)
    except types.StoreError as exc:
        raise storage.store_unavailable(exc) from None
    if revision is None:
        return None
    new["metadata"]["resourceVersion"] = str(revision)
    return render_object(ctx, new)


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """An update that changes nothing writes nothing (and keeps the resourceVersion), as upstream does."""
    strip = lambda o: {**o, "metadata": {k: v for k, v in o.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}}  # noqa: E731
    return strip(old) == strip(new)


def _spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    ignore = {"metadata", "status", "apiVersion", "kind"}
    keys = (set(old) | set(new)) - ignore
    return any(old.get(k) != new.get(k) for k in keys)


# -- patch --------------------------------------------------------------------------------------


async def patch_(ctx: context.Request, *, subresource: str = "") -> responses.Response:
    kind = PATCH_TYPES.get(ctx.content_type)
    info = ctx.resource
    if kind is None or kind == "unsupported" or (kind == "strategic" and not patch.is_strategic_supported(info.group, info.kind)):
        raise errors.unsupported_media_type(ctx.content_type)
    body = ctx.json_body()
    if kind == "apply":
        return await _apply(ctx, body, subresource=subresource)
    manager = _manager(ctx, _user_agent_manager(ctx))
    async for current, cached in reads(ctx.api, ctx.resource, ctx.info.namespace, ctx.info.name):
        if current is None:
            raise _not_found(ctx)
        try:
            patched = _apply_patch(kind, current.obj, body, info)
            validation.check_fields(ctx, patched)
            wanted = patched.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != str(current.revision) and _patch_names_rv(kind, body):
                raise errors.stale(info.plural, ctx.info.name, group=info.group)
            _check_identity(ctx, patched)
            result = await _write(ctx, current, patched, subresource=subresource, manager=manager,
                                  operation="Update", cached=cached)  # fmt: skip
        except errors.ApiError:
            if cached:
                continue
            raise
        if result is not None:
            return result
    raise errors.conflict(info.plural, ctx.info.name, "too many concurrent writers", group=info.group)


def _patch_names_rv(kind: str, body: Any) -> bool:
    if kind == "json":
        return any(isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in body)
    return isinstance(body, dict) and "resourceVersion" in (body.get("metadata") or {})


def _apply_patch(kind: str, obj: dict[str, Any], body: Any, info: Any) -> dict[str, Any]:
    base = patch.clone(obj)
    if kind == "json":
        if not isinstance(body, list):
            raise errors.bad_request("a JSON patch must be a list of operations")
        return patch.json_patch(base, body)
    if not isinstance(body, dict):
        raise errors.bad_request("a merge patch must be a JSON object")
    if kind == "merge":
        return patch.merge_patch(base, body)
    return patch.strategic_merge_patch(base, body, patch.patch_meta_for(info.group, info.kind))


async def _apply(ctx: context.Request, body: Any, *, subresource: str) -> responses.Response:
    info = ctx.resource
    manager = param(ctx.query, "fieldManager")
    if not manager:
        raise errors.invalid(info.kind, ctx.info.name, [errors.Cause("FieldValueRequired", "is required for apply patch", "fieldManager")], group=info.group)  # fmt: skip
    if not isinstance(body, dict):
        raise errors.bad_request("an apply patch must be an object")
    force = flag(ctx.query, "force")
    schema = patch.patch_meta_for(info.group, info.kind) if patch.is_strategic_supported(info.group, info.kind) else None
    for _ in range(RETRIES):
        current = await _current(ctx)
        live = current.obj if current is not None else None
        applied = patch.clone(body)
        _check_identity(ctx, applied)
        validation.check_fields(ctx, applied)
        if applied["metadata"].get("name") != ctx.info.name:
            raise errors.bad_request("the name of the object does not match the name on the URL")
        merged = managedfields.apply(live, applied, manager=manager, force=force, schema=schema, api_version=info.api_version,
                                     now=meta.now_rfc3339(), subresource=subresource, ignored_fields=_ownership(info, subresource)["ignored_fields"])  # fmt: skip
        if current is None:
            ctx.body = b""
            revision, stored = await _create_once(ctx, merged, manager=manager, dry_run=_dry_run(ctx), applied=True)
            if revision is not None:
                return render_object(ctx, stored, 201)
            continue
        result = await _write(ctx, current, merged, subresource=subresource, manager=manager, operation="Apply")
        if result is not None:
            return result
    raise errors.conflict(info.plural, ctx.info.name, "too many concurrent writers", group=info.group)


# -- delete --------------------------------------------------------------------------------------


def _delete_options(ctx: context.Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if ctx.body:
        body = ctx.json_body()
        if isinstance(body, dict):
            options = body
    grace = int_param(ctx.query, "gracePeriodSeconds")
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    policy = param(ctx.query, "propagationPolicy")
    if policy:
        options["propagationPolicy"] = policy
    if "orphanDependents" in ctx.query:
        options["orphanDependents"] = flag(ctx.query, "orphanDependents")
    if options.get("propagationPolicy") not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(f'propagationPolicy: Unsupported value: "{options["propagationPolicy"]}"')
    return options


async def delete(ctx: context.Request) -> responses.Response:
    options = _delete_options(ctx)
    info = ctx.resource
    for _ in range(RETRIES):
        current = await _current(ctx)
        if current is None:
            raise _not_found(ctx)
        result = await _delete_once(ctx, current, options)
        if result is not None:
            return result
    raise errors.conflict(info.plural, ctx.info.name, "too many concurrent writers", group=info.group)


async def _delete_once(ctx: context.Request, current: storage.Stored, options: dict[str, Any]) -> responses.Response | None:
    info = ctx.resource
    obj = current.obj
    md = obj.get("metadata", {})
    pre = options.get("preconditions") or {}
    if pre.get("uid") and pre["uid"] != md.get("uid"):
        raise errors.conflict(info.plural, md.get("name", ""), f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {md.get('uid')}", group=info.group)  # fmt: skip
    if pre.get("resourceVersion") and pre["resourceVersion"] != str(current.revision):
        raise errors.conflict(info.plural, md.get("name", ""), f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in object meta: {current.revision}", group=info.group)  # fmt: skip
    await admission.check_delete(ctx, obj)
    key = info.key(md.get("namespace", ""), md.get("name", ""))
    new = patch.clone(obj)
    nmd = new["metadata"]
    finalizers = list(nmd.get("finalizers") or [])
    policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else admission.default_propagation(info))
    if policy == "Orphan" and "orphan" not in finalizers and admission.has_dependents_semantics(info):
        finalizers.append("orphan")
    if policy == "Foreground" and "foregroundDeletion" not in finalizers:
        finalizers.append("foregroundDeletion")
    grace = admission.grace_period(ctx, obj, options)
    if _dry_run(ctx):
        return render_object(ctx, obj)
    if finalizers or grace or admission.deferred(info, new):
        if not nmd.get("deletionTimestamp") or grace < (nmd.get("deletionGracePeriodSeconds") or 0):
            nmd["deletionTimestamp"] = meta.now_rfc3339() if not grace else meta.rfc3339_in(grace)
            nmd["deletionGracePeriodSeconds"] = grace
        nmd["finalizers"] = finalizers or None
        if not finalizers:
            nmd.pop("finalizers")
        admission.on_terminate(ctx, new)
        if _same(obj, new):
            return render_object(ctx, obj)
        revision = await _store_call(ctx.api.store.update(key, new, expected=current.revision))
        if revision is None:
            return None
        nmd["resourceVersion"] = str(revision)
        return render_object(ctx, new, 202 if options.get("orphanDependents") is False else 200)
    return await _remove(ctx, key, current, obj)


async def _remove(ctx: context.Request, key: str, current: storage.Stored, obj: dict[str, Any]) -> responses.Response | None:
    revision = await _store_call(ctx.api.store.delete(key, expected=current.revision))
    if revision is None:
        return None
    await admission.after_delete(ctx, obj)
    out = patch.clone(obj)
    out.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return render_object(ctx, out)


async def _store_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except types.StoreError as exc:
        raise storage.store_unavailable(exc) from None


async def delete_collection(ctx: context.Request) -> responses.Response:
    from services.apiserver import reads

    options = _delete_options(ctx)
    pred = reads.predicate(ctx)
    prefix = ctx.resource.collection_prefix(ctx.info.namespace)
    items, revision, _, _ = await _store_call(ctx.api.store.list(prefix))
    deleted = []
    for item in items:
        if pred is not None and not pred(item.obj):
            continue
        sub = context.Request(
            api=ctx.api,
            info=ctx.info,
            resource=ctx.resource,
            query=ctx.query,
            headers=ctx.headers,
            body=b"",
            user=ctx.user,
        )
        response = await _delete_once(sub, item, options)
        if response is not None:
            deleted.append(item.obj)
    info = ctx.resource
    body = {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": {"resourceVersion": str(revision)}, "items": deleted}
    return responses.json(body)
