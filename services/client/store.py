"""An informer's cache: objects by ``namespace/name`` key, with secondary indexes.

Like client-go's ``cache.Indexer``: the key of a namespaced object is ``<namespace>/<name>``,
of a cluster-scoped one ``<name>``; an index function maps an object to the values it is filed
under (``namespace`` is always there; ``pods_by_node`` files pods under ``spec.nodeName``).
Lookups return the stored dicts themselves, not copies, so that reading a thousand pods costs
nothing. The rule that makes this safe: **objects from a store are never mutated by their
readers**. A controller that wants to change one works on ``copy(obj)`` and writes that back.

Only the informer that owns a store writes to it (``put``, ``remove``, ``replace``); everything
runs on one event loop, so a reader never sees an index half updated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

IndexFunc = Callable[[dict[str, Any]], Iterable[str]]
NAMESPACE_INDEX = "namespace"


def copy(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object, to change without touching the cache (faster than deepcopy)."""
    return orjson.loads(orjson.dumps(obj))


def key_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name", "")
    return f"{namespace}/{name}" if namespace else name


def key(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def split_key(text: str) -> tuple[str, str]:
    """``(namespace, name)`` of a key; the namespace is ``""`` for cluster-scoped objects."""
    namespace, _, name = text.rpartition("/")
    return namespace, name


def by_namespace(obj: dict[str, Any]) -> list[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [namespace] if namespace else []


def pods_by_node(obj: dict[str, Any]) -> list[str]:
    """Pods filed under the node they are bound to (unbound pods under nothing)."""
    node = (obj.get("spec") or {}).get("nodeName")
    return [node] if node else []


def by_owner_uid(obj: dict[str, Any]) -> list[str]:
    """Objects filed under the uid of each owner (ReplicaSets of a Deployment, pods of a ReplicaSet)."""
    return [ref["uid"] for ref in (obj.get("metadata") or {}).get("ownerReferences") or () if ref.get("uid")]


class Store:
    def __init__(self, indexers: Mapping[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: by_namespace, **(indexers or {})}
        # index name -> value -> keys; and per key the values it is filed under, to unfile it.
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        self._filed: dict[str, dict[str, tuple[str, ...]]] = {name: {} for name in self._indexers}

    # -- reads --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> dict[str, Any] | None:
        return self._items.get(key)

    def get_by(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._items.get(key(namespace, name))

    def list(self) -> list[dict[str, Any]]:
        return list(self._items.values())

    def keys(self) -> list[str]:
        return list(self._items)

    def list_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return self.by_index(NAMESPACE_INDEX, namespace)

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        """The objects filed under ``value`` in ``index`` (KeyError for an unknown index)."""
        keys = self._index(index).get(value, ())
        return [self._items[k] for k in keys]

    def index_keys(self, index: str, value: str) -> list[str]:
        return list(self._index(index).get(value, ()))

    def index_values(self, index: str) -> list[str]:
        """Every value some object is filed under in ``index``."""
        return list(self._index(index))

    def _index(self, index: str) -> dict[str, set[str]]:
        try:
            return self._indices[index]
        except KeyError:
            raise KeyError(f"no index named {index!r}; known: {sorted(self._indices)}") from None

    # -- writes (the owning informer only) ----------------------------------------------------

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """Add an index, filing every object already stored (an existing name is an error)."""
        if name in self._indexers:
            raise ValueError(f"an index named {name!r} already exists")
        self._indexers[name] = func
        self._indices[name] = {}
        self._filed[name] = {}
        for k, obj in self._items.items():
            self._file(name, k, obj)

    def put(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Store ``obj`` (add or replace); returns the object it replaced."""
        k = key_of(obj)
        old = self._items.get(k)
        self._items[k] = obj
        for name in self._indexers:
            if old is not None:
                self._unfile(name, k)
            self._file(name, k, obj)
        return old

    def remove(self, k: str) -> dict[str, Any] | None:
        old = self._items.pop(k, None)
        if old is not None:
            for name in self._indexers:
                self._unfile(name, k)
        return old

    def replace(self, objs: Iterable[dict[str, Any]]) -> None:
        """Replace the whole content (after a relist), rebuilding the indexes."""
        self._items = {key_of(obj): obj for obj in objs}
        for name in self._indexers:
            self._indices[name] = {}
            self._filed[name] = {}
            for k, obj in self._items.items():
                self._file(name, k, obj)

    def _file(self, name: str, k: str, obj: dict[str, Any]) -> None:
        values = tuple(dict.fromkeys(self._indexers[name](obj)))  # unique, in order
        if not values:
            return
        self._filed[name][k] = values
        index = self._indices[name]
        for value in values:
            index.setdefault(value, set()).add(k)

    def _unfile(self, name: str, k: str) -> None:
        index = self._indices[name]
        for value in self._filed[name].pop(k, ()):
            keys = index.get(value)
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del index[value]
