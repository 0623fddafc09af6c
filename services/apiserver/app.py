"""The API server's ASGI application: authenticate, authorize, route, answer.

A plain ASGI callable rather than a framework router: Kubernetes paths are
data (groups, versions and resources change at run time with CRDs), every
error must be a ``kind: Status`` body, and watches stream for an hour. K3s's own
endpoints (``/cacerts``, ``/ping``, ``/v1-k3s/...``) and anything else that is
not the Kubernetes API go to ``extra`` (a FastAPI app), when one is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from services.apiserver import (
    context,
    discovery,
    k3s,
    openapi,
    reads,
    request,
    responses,
    subresources,
    writes,
)
from services.apiserver.auth import impersonation
from services.apiserver.auth import types as auth_types
from services.machinery import errors

log = logging.getLogger(__name__)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

PUBLIC = frozenset({"/version", "/healthz", "/livez", "/readyz", "/cacerts", "/ping"})
HEALTH = frozenset({"/healthz", "/livez", "/readyz"})
VERB_OF = {"get": "get", "list": "list", "watch": "watch", "create": "create", "update": "update",
           "patch": "patch", "delete": "delete", "deletecollection": "deletecollection"}  # fmt: skip


class Metrics:
    """Hooks for request metrics; the server wires Prometheus into them."""

    def observe(self, *, verb: str, resource: str, code: int, seconds: float) -> None:
        return None

    def watch_started(self, resource: str) -> None:
        return None

    def watch_ended(self, resource: str) -> None:
        return None


class ApiApp:
    def __init__(
        self,
        api: context.Api,
        *,
        authenticator: auth_types.Authenticator,
        authorizer: auth_types.Authorizer,
        credentials: Callable[[dict[str, Any]], auth_types.Credentials],
        server_address: str,
        extra: ASGIApp | None = None,
        metrics: Metrics | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.api = api
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.credentials = credentials
        self.server_address = server_address
        self.extra = extra
        self.metrics = metrics or Metrics()
        self.ready = ready

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":  # exec, attach, port-forward; the agents' bus relay
            from services.apiserver import busrelay, websocket

            if scope.get("path") == busrelay.PATH:
                await busrelay.handle(self, scope, receive, send)
            else:
                await websocket.handle(self, scope, receive, send)
            return
        if scope["type"] == "spdy":  # kubectl 1.20's Upgrade: SPDY/3.1 (exec, attach, port-forward)
            from services.apiserver import spdyupgrade

            await spdyupgrade.handle(self, scope, receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.monotonic()
        outcome: responses.Response | responses.Stream
        verb, resource = scope["method"].lower(), ""
        try:
            outcome, verb, resource = await self._handle(scope, receive)
        except errors.ApiError as exc:
            outcome = responses.error(exc)
            outcome.headers.extend(_warning_headers(getattr(exc, "warnings", ())))
        except Exception:  # a bug: logged once here, never a traceback to the client
            log.exception("internal error serving %s %s", scope["method"], scope["path"])
            outcome = responses.error(errors.internal("an unexpected error occurred; see the API server log"))
        if isinstance(outcome, responses.Stream):
            self.metrics.watch_started(resource)
            try:
                await _stream(outcome, receive, send)
            finally:
                self.metrics.watch_ended(resource)
            return
        await _send(outcome, send)
        self.metrics.observe(verb=verb, resource=resource, code=outcome.status, seconds=time.monotonic() - started)

    async def _handle(self, scope: dict[str, Any], receive: Any) -> tuple[Any, str, str]:
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path in HEALTH:
            return self._health(), "get", ""
        if path in k3s.ANONYMOUS_PATHS:
            found = k3s.respond(path, data_dir=self.api.settings.data_dir)
            if found is not None:
                return found, "get", ""
        if path.startswith(k3s.V1_PREFIX):  # join-token auth, before the Kubernetes authenticator
            return await k3s.v1(self.api, path, method=scope["method"], headers=headers), "get", ""
        user = await self.authenticator.authenticate(self.credentials(scope))
        if path == "/version":
            return responses.json(discovery.version_info()), "get", ""
        if user is None:
            raise errors.unauthorized()
        user = await self.acting_user(user, scope)
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        info = request.parse(scope["method"], path, query)
        if not info.resource_request:
            await self._authorize(auth_types.Attributes(user=user, verb=info.verb, resource_request=False, path=path))
            return await self._non_resource(scope, receive, path, headers), info.verb, ""
        body = await _read_body(receive, headers)
        ctx = self._context(info, query, headers, body, user)
        await self._authorize(_attributes(user, info))
        try:
            outcome = await self._dispatch(ctx)
        except errors.ApiError as exc:
            exc.warnings = ctx.warnings  # sent with the error too, as upstream does
            raise
        outcome.headers.extend(_warning_headers(ctx.warnings))
        return outcome, info.verb, ctx.resource.plural

    def _health(self) -> responses.Response:
        if self.ready():
            return responses.Response(200, b"ok", "text/plain; charset=utf-8")
        return responses.Response(503, b"not ready", "text/plain; charset=utf-8")

    async def acting_user(self, user: auth_types.UserInfo, scope: dict[str, Any]) -> auth_types.UserInfo:
        """The user a request acts as: ``user``, or whom its Impersonate-* headers name, if allowed."""
        asked = impersonation.requested(scope.get("headers", ()))
        return user if asked is None else await impersonation.impersonate(user, asked, self._authorize)

    async def _authorize(self, attributes: auth_types.Attributes) -> None:
        decision = await self.authorizer.authorize(attributes)
        if decision.allowed:
            return
        a = attributes
        if a.resource_request:
            what = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
            scope = f' in the namespace "{a.namespace}"' if a.namespace else " at the cluster scope"
            group = f' in API group "{a.api_group}"'
            name = f' "{a.name}"' if a.name else ""
            message = f'{what}{name} is forbidden: User "{a.user.name}" cannot {a.verb} resource "{what}"{group}{scope}'
        else:
            message = f'forbidden: User "{a.user.name}" cannot {a.verb} path "{a.path}"'
        if decision.reason:
            message += f": {decision.reason}"
        raise errors.forbidden(message, resource=a.resource, name=a.name, group=a.api_group)

    def _context(
        self, info: request.RequestInfo, query: dict[str, list[str]], headers: dict[str, str], body: bytes, user: Any
    ) -> context.Request:
        resource = self.api.registry.lookup(info.group, info.version, info.resource)
        if resource is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.namespace and not resource.namespaced:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        return context.Request(self.api, info, resource, query, headers, body, user)

    async def _dispatch(self, ctx: context.Request) -> responses.Response | responses.Stream:
        info, resource = ctx.info, ctx.resource
        if info.subresource:
            return await subresources.handle(ctx)
        if info.verb not in resource.verbs and not (info.verb == "watch" and "list" in resource.verbs and "watch" in resource.verbs):
            raise errors.method_not_allowed(f"{info.verb} is not supported on resources of kind \"{resource.resource_group}\"")
        match info.verb:
            case "get":
                return await reads.get(ctx)
            case "list":
                return await reads.list_(ctx)
            case "watch":
                return await reads.watch(ctx)
            case "create":
                if info.name and not resource.virtual:
                    raise errors.method_not_allowed("create is not supported on a named object path")
                return await writes.create(ctx)
            case "update":
                return await writes.update(ctx)
            case "patch":
                return await writes.patch_(ctx)
            case "delete":
                return await writes.delete(ctx)
            case "deletecollection":
                return await writes.delete_collection(ctx)
        raise errors.method_not_allowed(f"the server does not allow this method on the requested resource: {info.verb}")

    async def _non_resource(self, scope: dict[str, Any], receive: Any, path: str, headers: dict[str, str]) -> Any:
        registry = self.api.registry
        accept = headers.get("accept", "")
        if path in ("/api", "/apis"):
            return discovery.respond(registry, path, accept=accept, server_address=self.server_address, if_none_match=headers.get("if-none-match", ""))
        if path.startswith("/api/") or path.startswith("/apis/"):
            found = discovery.respond(registry, path, accept=accept, server_address=self.server_address)
            if found is not None:
                return found
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if path.startswith("/openapi/"):
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return openapi.respond(registry, path, accept=accept, query=query)
        if path == "/metrics" and hasattr(self.metrics, "render"):
            return self.metrics.render()
        if self.extra is not None:
            return await self._extra(scope, receive)
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    async def _extra(self, scope: dict[str, Any], receive: Any) -> responses.Response:
        """Run the extra ASGI app and capture its one response."""
        assert self.extra is not None
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": []}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"].append(message.get("body", b""))

        await self.extra(scope, receive, send)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in captured["headers"]]
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "application/json")
        rest = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
        return responses.Response(captured["status"], b"".join(captured["body"]), ctype, rest)


def _warning_headers(warnings: Any) -> list[tuple[str, str]]:
    out = []
    for text in warnings:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        out.append(("warning", f'299 - "{escaped}"'))
    return out


def _attributes(user: auth_types.UserInfo, info: request.RequestInfo) -> auth_types.Attributes:
    return auth_types.Attributes(
        user=user,
        verb=info.verb,
        namespace=info.namespace,
        api_group=info.group,
        api_version=info.version,
        resource=info.resource,
        subresource=info.subresource,
        name=info.name,
        path=info.path,
    )


async def _read_body(receive: Any, headers: dict[str, str]) -> bytes:
    declared = headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > context.MAX_BODY:
        raise errors.too_large()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > context.MAX_BODY:
            raise errors.too_large()
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send(response: responses.Response, send: Any) -> None:
    headers = [(b"content-type", response.content_type.encode()), (b"content-length", str(len(response.body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _stream(stream: responses.Stream, receive: Any, send: Any) -> None:
    headers = [(b"content-type", stream.content_type.encode()), (b"cache-control", b"no-cache, private")]
    headers += [(k.encode(), v.encode()) for k, v in stream.headers]
    await send({"type": "http.response.start", "status": stream.status, "headers": headers})

    async def pump() -> None:
        async for chunk in stream.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        for task in (pumping, watching):
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            except Exception:
                log.exception("watch stream failed")
        aclose = getattr(stream.chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if pumping.done() and not pumping.cancelled():
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client is gone; nothing more to say
            log.debug("client left before the end of the stream")


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
