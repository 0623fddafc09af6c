"""The scheduler's contracts: the API it writes through and the listers its filters read.

``Api`` is the client library's ``types.Api`` plus ``bind`` (``pods/binding``);
``services.client.api.ApiClient`` and ``services.client.fake.FakeApi`` both implement it.
``Listers`` is what the volume and namespace checks look up (claims, volumes, storage classes,
namespace labels); the component serves it from informer caches, unit tests from dicts
(``MemoryListers``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from services.client import types as client_types

Object = dict[str, Any]


class Api(client_types.Api, Protocol):
    async def bind(self, namespace: str, pod: str, node: str, *, uid: str | None = None) -> Object: ...


class Listers(Protocol):
    def claim(self, namespace: str, name: str) -> Object | None: ...

    def volume(self, name: str) -> Object | None: ...

    def storage_class(self, name: str) -> Object | None: ...

    def namespace_labels(self, name: str) -> Mapping[str, str] | None: ...


@dataclasses.dataclass
class MemoryListers:
    """``Listers`` over plain dicts: claims by ``namespace/name``, the rest by name."""

    claims: dict[str, Object] = dataclasses.field(default_factory=dict)
    volumes: dict[str, Object] = dataclasses.field(default_factory=dict)
    storage_classes: dict[str, Object] = dataclasses.field(default_factory=dict)
    namespaces: dict[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def claim(self, namespace: str, name: str) -> Object | None:
        return self.claims.get(f"{namespace}/{name}")

    def volume(self, name: str) -> Object | None:
        return self.volumes.get(name)

    def storage_class(self, name: str) -> Object | None:
        return self.storage_classes.get(name)

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self.namespaces.get(name)
