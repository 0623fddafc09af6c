"""The async API client: one keep-alive connection pool, plain dicts in and out.

Objects are plain ``dict``s decoded once with orjson; no models on this path. Every call names a
``resources.Resource`` and, where it applies, a namespace and a name; paths are built from those.
Errors are translated here, at the boundary: an HTTP error's ``kind: Status`` body becomes an
``errors.ApiError`` with the server's code and reason, a failure below HTTP becomes
``errors.TransportError``. A 429 with ``Retry-After`` is retried a few times, as client-go does;
nothing else is retried here (informers and leader election own their retry policies).

Two ways to reach the API, both an ``http.Transport``: over HTTPS with a ``config.ClientConfig``
(``http.Pool``, HTTP/1.1 keep-alive connections over asyncio streams, far cheaper per request
than httpx), or, in the edge profile's single process, by calling the API server's ASGI app
directly (``ApiClient(app=..., user=...)``, see ``transport``). Both behave the same, watches
included. Query strings are encoded here, once, for either.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from services.client import config as config_
from services.client import errors, http, resources, transport, watch
from services.client.resources import Resource

log = logging.getLogger(__name__)

PatchType = Literal["merge", "json", "strategic", "apply"]
PropagationPolicy = Literal["Background", "Foreground", "Orphan"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML; the server accepts either
}
JSON = "application/json"
DEFAULT_TIMEOUT = 30.0  # seconds for one request (not for a watch's stream, see watch())
DEFAULT_PAGE_SIZE = 500  # client-go's pager default
RETRIES_429 = 5  # client-go retries throttled requests up to 10 times; a controller re-queues anyway
MAX_RETRY_AFTER = 10.0  # seconds; never sleep longer than this on one Retry-After


class ApiClient:
    """``async with ApiClient(config) as client:``, or ``ApiClient(app=asgi_app, user=..., groups=...)``."""

    def __init__(
        self,
        config: config_.ClientConfig | None = None,
        *,
        app: transport.ASGIApp | None = None,
        user: str = "",
        groups: Sequence[str] = (),
        user_agent: str = "k3spy",
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 256,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if (config is None) == (app is None):
            raise ValueError("give either a ClientConfig or an in-process ASGI app")
        if app is not None and not user:
            raise ValueError("an in-process client needs the user it acts as")
        self.config = config
        self.namespace = config.namespace if config is not None else "default"
        self.page_size = page_size
        self.timeout = timeout
        headers = {"accept": JSON, "user-agent": user_agent}
        self._transport: http.Transport
        if app is not None:
            self._transport = transport.AsgiTransport(
                app, user=user, groups=groups, headers=headers, timeout=timeout
            )
        else:
            assert config is not None
            # Watches hold a connection each for minutes: the pool must be larger than the
            # number of informers a process runs, plus room for ordinary requests.
            self._transport = http.Pool(
                config.server,
                ssl_context=config.ssl_context,
                server_hostname=config.tls_server_name,
                headers=headers,
                bearer=config.bearer if config.token or config.token_file else None,
                max_connections=max_connections,
                timeout=timeout,
            )

    @classmethod
    def from_kubeconfig(cls, path: str, *, context: str | None = None, **kwargs: Any) -> ApiClient:
        return cls(config_.load_kubeconfig(path, context=context), **kwargs)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection (idempotent); open watches end with a TransportError."""
        await self._transport.aclose()

    # -- reads ---------------------------------------------------------------------------------

    async def get(
        self, resource: Resource, name: str, *, namespace: str | None = None, subresource: str | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "GET", resource.path(namespace=namespace, name=name, subresource=subresource)
        )

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        page_size: int | None = None,
    ) -> dict[str, Any]:
        """Every matching object in one list, read in pages of ``page_size`` (0: one request).

        All pages are one snapshot (the server keeps the first page's revision in its continue
        token); ``metadata.resourceVersion`` is that revision, the place to start a watch from.
        If the token expires mid-way (410), the list is read again in one request, as client-go's
        pager does.
        """
        params = _selectors(label_selector, field_selector)
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if resource_version_match:
            params["resourceVersionMatch"] = resource_version_match
        size = self.page_size if page_size is None else page_size
        path = resource.path(namespace=namespace)
        first = await self.request("GET", path, params={**params, "limit": str(size)} if size else params)
        items: list[dict[str, Any]] = first.setdefault("items", []) or []
        metadata = first.setdefault("metadata", {})
        token = metadata.pop("continue", "")
        metadata.pop("remainingItemCount", None)
        while token:
            # A continue token carries the snapshot's revision: no resourceVersion with it.
            paged = {k: v for k, v in params.items() if not k.startswith("resourceVersion")}
            try:
                page = await self.request(
                    "GET", path, params={**paged, "limit": str(size), "continue": token}
                )
            except errors.ApiError as exc:
                if exc.code != 410:
                    raise
                log.info("list %s: the continue token expired; reading the whole list at once", resource)
                return await self.list(
                    resource, namespace=namespace, label_selector=label_selector,
                    field_selector=field_selector, page_size=0,
                )  # fmt: skip
            items.extend(page.get("items") or ())
            token = page.get("metadata", {}).get("continue", "")
        first["items"] = items
        for item in items:  # list items may omit their type; watch events never do
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return first

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
        send_initial_events: bool = False,
    ) -> watch.Watch:
        """A watch stream: ``async with client.watch(...) as events: async for type_, obj in events``.

        With ``timeout_seconds`` the server ends the stream cleanly after that long, and the
        client gives up reading 30 s later (a half-open connection does not hang forever).
        ``send_initial_events`` asks for the current objects as ADDED events first, ended by a
        bookmark annotated ``k8s.io/initial-events-end``.
        """
        params = _selectors(label_selector, field_selector)
        params["watch"] = "true"
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if allow_bookmarks or send_initial_events:
            params["allowWatchBookmarks"] = "true"
        if send_initial_events:
            params["sendInitialEvents"] = "true"
            params["resourceVersionMatch"] = "NotOlderThan"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        read = None if timeout_seconds is None else timeout_seconds + 30.0
        return watch.Watch(
            self._transport, _target(resource.path(namespace=namespace), params), resource=resource,
            read_timeout=read,
        )  # fmt: skip

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        namespace: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        ns = _namespace_of(resource, obj, namespace)
        params = _write_params(field_manager, dry_run)
        return await self.request("POST", resource.path(namespace=ns), params=params, body=obj)

    async def update(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it conditional (409 if stale)."""
        ns = _namespace_of(resource, obj, namespace)
        path = resource.path(namespace=ns, name=_name_of(obj), subresource=subresource)
        return await self.request("PUT", path, params=_write_params(field_manager, dry_run), body=obj)

    async def update_status(
        self, resource: Resource, obj: Mapping[str, Any], *, namespace: str | None = None,
        field_manager: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        return await self.update(
            resource, obj, namespace=namespace, subresource="status", field_manager=field_manager
        )

    async def patch(
        self,
        resource: Resource,
        name: str,
        body: Mapping[str, Any] | Sequence[Any],
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Patch one object: ``merge`` (RFC 7386), ``json`` (RFC 6902), ``strategic`` or ``apply``
        (server-side apply, which needs ``field_manager``; ``force`` takes over conflicting fields)."""
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        params = _write_params(field_manager, dry_run)
        if force:
            params["force"] = "true"
        path = resource.path(namespace=namespace, name=name, subresource=subresource)
        return await self.request(
            "PATCH", path, params=params, body=body, content_type=PATCH_CONTENT_TYPES[patch_type]
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: PropagationPolicy | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete one object; returns what the server answered (the object, or a Success Status).

        ``preconditions`` (``uid``, ``resourceVersion``) make the delete conditional: 409 when the
        object is not that one any more.
        """
        body = _delete_options(propagation_policy, grace_period_seconds, preconditions, dry_run)
        return await self.request("DELETE", resource.path(namespace=namespace, name=name), body=body)

    async def delete_collection(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        propagation_policy: PropagationPolicy | None = None,
    ) -> dict[str, Any]:
        body = _delete_options(propagation_policy, None, None, False)
        params = _selectors(label_selector, field_selector)
        return await self.request("DELETE", resource.path(namespace=namespace), params=params, body=body)

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str | None = None) -> dict[str, Any]:
        """Bind a pod to a node (``pods/binding``); 409 when it is already bound."""
        metadata: dict[str, Any] = {"name": pod, "namespace": namespace}
        if uid:
            metadata["uid"] = uid
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": metadata,
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}  # fmt: skip
        path = resources.PODS.path(namespace=namespace, name=pod, subresource="binding")
        return await self.request("POST", path, body=binding)

    async def evict(
        self, namespace: str, pod: str, *, delete_options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Evict a pod (``pods/eviction``). A disruption budget's refusal (429) is raised at once,
        not retried: the caller decides when to try again."""
        eviction: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                    "metadata": {"name": pod, "namespace": namespace}}  # fmt: skip
        if delete_options:
            eviction["deleteOptions"] = dict(delete_options)
        path = resources.PODS.path(namespace=namespace, name=pod, subresource="eviction")
        return await self.request("POST", path, body=eviction, retry_throttled=False)

    # -- the one request path ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        retry_throttled: bool = True,
    ) -> Any:
        """Send one request and decode its JSON answer; raise ``ApiError``/``TransportError``."""
        content = None if body is None else orjson.dumps(body)
        target = _target(path, params)
        for attempt in range(RETRIES_429 + 1):
            response = await self._transport.request(method, target, body=content, content_type=content_type)
            status = response.status
            log.debug("%s %s => %d", method, path, status)
            if status < 400:
                return orjson.loads(response.body) if response.body else {}
            wait = _retry_after(response.headers)
            if status == 429 and retry_throttled and wait is not None and attempt < RETRIES_429:
                await asyncio.sleep(wait)
                continue
            raise errors.from_body(status, response.body)
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _target(path: str, params: Mapping[str, str] | None) -> str:
    """The request target: the path and its query, encoded once here for every transport."""
    return f"{path}?{urllib.parse.urlencode(params)}" if params else path


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _write_params(field_manager: str | None, dry_run: bool) -> dict[str, str]:
    params: dict[str, str] = {}
    if field_manager:
        params["fieldManager"] = field_manager
    if dry_run:
        params["dryRun"] = "All"
    return params


def _delete_options(
    propagation: str | None, grace: int | None, preconditions: Mapping[str, str] | None, dry_run: bool
) -> dict[str, Any] | None:
    options: dict[str, Any] = {}
    if propagation:
        options["propagationPolicy"] = propagation
    if grace is not None:
        options["gracePeriodSeconds"] = grace
    if preconditions:
        options["preconditions"] = dict(preconditions)
    if dry_run:
        options["dryRun"] = ["All"]
    if not options:
        return None
    return {"kind": "DeleteOptions", "apiVersion": "v1", **options}


def _namespace_of(resource: Resource, obj: Mapping[str, Any], namespace: str | None) -> str | None:
    if not resource.namespaced:
        return None
    ns = namespace or (obj.get("metadata") or {}).get("namespace")
    if not ns:
        raise ValueError(f"{resource} is namespaced: give a namespace or set metadata.namespace")
    return ns


def _name_of(obj: Mapping[str, Any]) -> str:
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        raise ValueError("the object has no metadata.name")
    return name


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0
