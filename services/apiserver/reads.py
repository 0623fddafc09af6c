"""get, list and watch: served from the watch cache, continued pages from the store.

resourceVersion rules (reference §7): no RV is a consistent read (the cache
waits until it holds every acknowledged write); "0" is any recent state; X with
NotOlderThan is at least X; Exact reads the store at X (410 once compacted).
A paged list's first page comes from the cache and carries a continue token
with its revision; later pages read the store at that revision, so all pages
are one snapshot.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from services.apiserver import cache as cache_
from services.apiserver import context, responses, storage, tables
from services.apiserver.request import flag, int_param, param
from services.kine import types
from services.machinery import errors, selectors, tasks

log = logging.getLogger(__name__)

BOOKMARK_INTERVAL = 60.0
DEFAULT_WATCH_TIMEOUT = 1800
MAX_WATCH_TIMEOUT = 3600


def predicate(ctx: context.Request) -> cache_.Predicate | None:
    info = ctx.resource
    label_text = param(ctx.query, "labelSelector")
    field_text = param(ctx.query, "fieldSelector")
    if not label_text and not field_text:
        return None
    label = selectors.parse_label_selector(label_text) if label_text else None
    field = selectors.parse_field_selector(field_text) if field_text else None
    if field is not None:
        allowed = {"metadata.name", *info.field_selectors}
        if info.namespaced:
            allowed.add("metadata.namespace")
        selectors.check_field_selector(field, allowed, info.resource_group)

    def matches(obj: dict[str, Any]) -> bool:
        if label is not None and not label.matches(obj.get("metadata", {}).get("labels") or {}):
            return False
        if field is not None:
            values = selectors.object_fields(
                obj, kind=info.kind, group=info.group, namespaced=info.namespaced, extra=info.field_selectors
            )
            return field.matches(values)
        return True

    return matches


def _check_list_options(ctx: context.Request, *, watch: bool) -> tuple[str, str]:
    rv = param(ctx.query, "resourceVersion")
    match = param(ctx.query, "resourceVersionMatch")
    send_initial = "sendInitialEvents" in ctx.query
    causes = []
    if match and not rv and not (watch and send_initial):
        causes.append(errors.Cause("FieldValueRequired", "resourceVersionMatch is forbidden unless resourceVersion is provided", "resourceVersionMatch"))
    if match and param(ctx.query, "continue"):
        causes.append(errors.Cause("FieldValueForbidden", "resourceVersionMatch is forbidden when continue is provided", "resourceVersionMatch"))
    if match == "Exact" and rv == "0":
        causes.append(errors.Cause("FieldValueForbidden", 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"', "resourceVersionMatch"))
    if match and match not in ("Exact", "NotOlderThan"):
        causes.append(errors.Cause("FieldValueNotSupported", f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"', "resourceVersionMatch"))
    if send_initial and not watch:
        causes.append(errors.Cause("FieldValueForbidden", "sendInitialEvents is forbidden for list", "sendInitialEvents"))
    if watch and send_initial and match != "NotOlderThan":
        causes.append(errors.Cause("FieldValueForbidden", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan", "sendInitialEvents"))
    if watch and match and not send_initial:
        causes.append(errors.Cause("FieldValueForbidden", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided", "resourceVersionMatch"))
    if causes:
        raise errors.invalid("ListOptions", "", causes, group="meta.k8s.io")
    if rv and rv != "0" and not rv.isdigit():
        raise errors.bad_request(f'resourceVersion: Invalid value: "{rv}": must be a non-negative integer')
    return rv, match  # fmt: skip


async def _cache_at(ctx: context.Request, rv: str) -> cache_.ResourceCache:
    """The resource's cache, holding at least the state the request asks for."""
    cache = await ctx.api.cache(ctx.resource)
    if not rv:
        await cache.sync()
    elif rv != "0" and int(rv) > cache.revision:
        await cache.sync()
        if int(rv) > cache.revision:
            raise errors.timeout(f"Too large resource version: {rv}, current: {cache.revision}")
    return cache


# -- get ---------------------------------------------------------------------------------


async def get(ctx: context.Request) -> responses.Response:
    info = ctx.resource
    rv = param(ctx.query, "resourceVersion")
    if rv and rv != "0" and not rv.isdigit():
        raise errors.bad_request(f'resourceVersion: Invalid value: "{rv}"')
    cache = await _cache_at(ctx, rv)
    obj = cache.get(ctx.info.namespace, ctx.info.name)
    if obj is None:
        raise errors.not_found(info.plural, ctx.info.name, group=info.group)
    return render_object(ctx, obj)


def render_object(ctx: context.Request, obj: dict[str, Any], status: int = 200) -> responses.Response:
    if tables.wants_table(ctx.accept):
        table = tables.to_table(ctx.resource, [obj], include_object=_include_object(ctx), list_meta={
            "resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")})  # fmt: skip
        return responses.json(table, status)
    return responses.json(obj, status)


def _include_object(ctx: context.Request) -> str:
    value = param(ctx.query, "includeObject", "Metadata")
    if value not in ("None", "Metadata", "Object"):
        raise errors.bad_request(f"includeObject: unsupported value {value!r}")
    return value


# -- list --------------------------------------------------------------------------------


def _token(revision: int, start: str) -> str:
    raw = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request("continue key is not valid: malformed token") from None


async def list_(ctx: context.Request) -> responses.Response:
    rv, match = _check_list_options(ctx, watch=False)
    limit = int_param(ctx.query, "limit", 0) or 0
    pred = predicate(ctx)
    token = param(ctx.query, "continue")
    if token:
        revision, start = _untoken(token)
        items, next_token, remaining = await _from_store(ctx, revision, start, limit, pred)
    elif match == "Exact":
        revision = int(rv)
        items, next_token, remaining = await _from_store(ctx, revision, "", limit, pred)
    else:
        cache = await _cache_at(ctx, rv)
        revision = cache.revision
        items = cache.list(ctx.info.namespace, pred)
        next_token, remaining = "", 0
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            next_token = _token(revision, _key(ctx, items[-1]) + "\x00")
    return render_list(ctx, items, revision=revision, next_token=next_token, remaining=remaining)


def _key(ctx: context.Request, obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return ctx.resource.key(meta.get("namespace", ""), meta.get("name", ""))


async def _from_store(
    ctx: context.Request, revision: int, start: str, limit: int, pred: cache_.Predicate | None
) -> tuple[list[dict[str, Any]], str, int]:
    prefix = ctx.resource.collection_prefix(ctx.info.namespace)
    out: list[dict[str, Any]] = []
    try:
        while True:
            page, _, more, count = await ctx.api.store.list(prefix, revision=revision, limit=limit or 0, start=start)
            objs = [s.obj for s in page]
            out.extend(o for o in objs if pred is None or pred(o))
            if not more or not page or (limit and len(out) >= limit):
                break
            start = _key(ctx, objs[-1]) + "\x00"
    except types.CompactedError:
        raise errors.gone(
            "The provided continue parameter is too old to display a consistent list result. "
            "You can start a new list without the continue parameter."
        ) from None
    except types.FutureRevisionError:
        raise errors.timeout(f"Too large resource version: {revision}") from None
    if limit and (len(out) > limit or more):
        out = out[:limit]
        return out, _token(revision, _key(ctx, out[-1]) + "\x00"), max(0, count - limit) if pred is None else 0
    return out, "", 0


def render_list(
    ctx: context.Request, items: list[dict[str, Any]], *, revision: int, next_token: str = "", remaining: int = 0
) -> responses.Response:
    info = ctx.resource
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if next_token:
        meta["continue"] = next_token
        if remaining:
            meta["remainingItemCount"] = remaining
    if tables.wants_table(ctx.accept):
        return responses.json(tables.to_table(info, items, include_object=_include_object(ctx), list_meta=meta))
    body = {"kind": info.list_kind, "apiVersion": info.api_version, "metadata": meta, "items": items}
    return responses.json(body)


# -- watch -------------------------------------------------------------------------------


async def watch(ctx: context.Request) -> responses.Stream:
    rv, _ = _check_list_options(ctx, watch=True)
    send_initial = flag(ctx.query, "sendInitialEvents")
    bookmarks = flag(ctx.query, "allowWatchBookmarks")
    timeout = min(int_param(ctx.query, "timeoutSeconds", DEFAULT_WATCH_TIMEOUT) or DEFAULT_WATCH_TIMEOUT, MAX_WATCH_TIMEOUT)
    pred = predicate(ctx)
    namespace = ctx.info.namespace
    initial: list[dict[str, Any]] = []
    if send_initial or rv in ("", "0"):
        cache = await _cache_at(ctx, "" if send_initial and not rv else rv or "0")
        snapshot = cache.revision
        initial = cache.list(namespace, pred)
        watcher = cache.watch(namespace=namespace, predicate=pred, after=None)
    else:
        cache = await _cache_at(ctx, rv)
        snapshot = int(rv)
        try:
            watcher = cache.watch(namespace=namespace, predicate=pred, after=snapshot)
        except errors.ApiError as exc:
            return responses.Stream(200, _one_error(exc))
    stream = _events(
        ctx, watcher, initial=initial, snapshot=snapshot, end_bookmark=send_initial, bookmarks=bookmarks,
        deadline=time.monotonic() + timeout, cache=cache,
    )  # fmt: skip
    return responses.Stream(200, stream)


async def _one_error(exc: errors.ApiError) -> AsyncIterator[bytes]:
    yield orjson.dumps({"type": "ERROR", "object": exc.status()}) + b"\n"


async def _events(
    ctx: context.Request,
    watcher: cache_.CacheWatcher,
    *,
    initial: list[dict[str, Any]],
    snapshot: int,
    end_bookmark: bool,
    bookmarks: bool,
    deadline: float,
    cache: cache_.ResourceCache,
) -> AsyncIterator[bytes]:
    encode = _encoder(ctx)
    try:
        if initial:
            yield b"".join(encode("ADDED", obj) for obj in initial)
        if end_bookmark:
            yield encode("BOOKMARK", _bookmark(ctx, snapshot, initial_end=True))
        last = snapshot
        next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            wait = min(deadline, next_bookmark if bookmarks else deadline) - now
            try:
                batch = await tasks.wait_for(watcher.next(), wait)
            except TimeoutError:
                if bookmarks and time.monotonic() >= next_bookmark:
                    last = max(last, cache.revision)
                    yield encode("BOOKMARK", _bookmark(ctx, last))
                    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
                continue
            except EOFError:
                return
            last = batch[-1].revision
            yield b"".join(encode(e.type, e.obj) for e in batch)
    finally:
        watcher.close()


def _bookmark(ctx: context.Request, revision: int, *, initial_end: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": ctx.resource.kind, "apiVersion": ctx.resource.api_version, "metadata": meta}


def _encoder(ctx: context.Request):  # noqa: ANN202 - a small closure
    if not tables.wants_table(ctx.accept):
        return lambda kind, obj: orjson.dumps({"type": kind, "object": obj}) + b"\n"
    include = _include_object(ctx)
    first = [True]

    def encode(kind: str, obj: dict[str, Any]) -> bytes:
        if kind == "BOOKMARK":
            return orjson.dumps({"type": kind, "object": obj}) + b"\n"
        rv = obj.get("metadata", {}).get("resourceVersion", "")
        table = tables.to_table(
            ctx.resource, [obj], include_object=include, list_meta={"resourceVersion": rv}, with_columns=first[0]
        )
        first[0] = False
        return orjson.dumps({"type": kind, "object": table}) + b"\n"

    return encode


__all__ = ["get", "list_", "watch", "render_object", "render_list", "predicate", "storage"]
