"""Per-request context and the server state handlers share."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import yaml

from services.apiserver import cache as cache_
from services.apiserver import registry, storage
from services.apiserver.auth import types as auth_types
from services.apiserver.request import RequestInfo
from services.machinery import errors, protobuf

MAX_BODY = 3 * 1024 * 1024  # upstream's request body cap
# Bodies we decode besides Kubernetes protobuf (kubectl's typed clients); CBOR gets 415.
JSON_TYPES = frozenset({"application/json", "application/yaml", "application/json-patch+json",
                        "application/merge-patch+json", "application/strategic-merge-patch+json",
                        "application/apply-patch+yaml", ""})  # fmt: skip


class Api:
    """What every handler can reach: the registry, the store and the watch caches."""

    def __init__(
        self,
        *,
        registry_: registry.Registry,
        store: storage.ObjectStore,
        settings: Any,
        authenticator: auth_types.Authenticator,
        authorizer: auth_types.Authorizer,
    ) -> None:
        self.registry = registry_
        self.store = store
        self.settings = settings
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.rbac: Any = None  # the RBAC authorizer alone, for SelfSubjectRulesReview
        self._caches: dict[tuple[str, str], cache_.ResourceCache] = {}
        self._starting: dict[tuple[str, str], asyncio.Task[cache_.ResourceCache]] = {}

    def running_cache(self, info: registry.ResourceInfo) -> cache_.ResourceCache | None:
        """The resource's watch cache if it already runs (never starts one)."""
        return self._caches.get((info.group, info.plural))

    async def cache(self, info: registry.ResourceInfo) -> cache_.ResourceCache:
        """The watch cache of a resource, started on first use (one store watch per resource)."""
        key = (info.group, info.plural)
        found = self._caches.get(key)
        if found is not None:
            return found
        task = self._starting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._start_cache(info), name=f"start cache {info.plural}")
            self._starting[key] = task
        return await asyncio.shield(task)

    async def _start_cache(self, info: registry.ResourceInfo) -> cache_.ResourceCache:
        cache = cache_.ResourceCache(info, self.store)
        try:
            await cache.start()
        finally:
            self._starting.pop((info.group, info.plural), None)
        self._caches[(info.group, info.plural)] = cache
        return cache

    async def drop_cache(self, group: str, plural: str) -> None:
        cache = self._caches.pop((group, plural), None)
        if cache is not None:
            await cache.stop()

    async def stop(self) -> None:
        for key in list(self._caches):
            await self.drop_cache(*key)


@dataclasses.dataclass(slots=True)
class Request:
    api: Api
    info: RequestInfo
    resource: registry.ResourceInfo
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    user: auth_types.UserInfo | None = None
    # Warnings for the client (the Warning: 299 header), e.g. unknown fields under fieldValidation=Warn.
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()

    def json_body(self) -> Any:
        """The body as JSON (or YAML, which kubectl never sends but people do with curl)."""
        if len(self.body) > MAX_BODY:
            raise errors.too_large()
        if not self.body:
            raise errors.bad_request("the request body is empty")
        ctype = self.content_type
        if protobuf.is_protobuf(ctype):
            return protobuf.decode(self.body)
        if ctype not in JSON_TYPES:
            raise errors.unsupported_media_type(ctype)
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(self.body)
            return orjson.loads(self.body)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"the body of the request could not be decoded: {exc}") from None

    def object_body(self) -> dict[str, Any]:
        body = self.json_body()
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return body
