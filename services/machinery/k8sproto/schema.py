"""The table format every ``k8sproto`` module follows, and the merged view over all of them.

A table module defines ``MESSAGES: dict[str, tuple[F, ...]]`` keyed by fully qualified message
name (proto package + message, e.g. ``k8s.io.api.core.v1.ConfigMap``) and, where it needs them,
any of these optional sets that carry what a ``.proto`` file cannot say about the JSON form:

- ``INLINE_FIELDS: frozenset[tuple[str, int]]`` - (message, field number) of Go structs embedded
  with ``json:",inline"``: their keys are merged into the parent object.
- ``NULLABLE_FIELDS: frozenset[tuple[str, int]]`` - (message, field number) of scalar fields that
  are Go pointers. Go's protobuf code writes every other scalar even when it is zero, and Go's JSON
  omits those zeros; a pointer's zero (``replicas: 0``, ``automountServiceAccountToken: false``) is
  an explicit value and must be kept.
- ``JSON_AS_ITEMS: frozenset[str]`` - messages that only wrap a list (``type Verbs []string``)
  and whose JSON form is that bare list.
- ``CUSTOM_JSON: dict[str, str]`` - messages with a hand-written JSON form, each with a note on it.

Modules are discovered with ``pkgutil``, so table modules can be added without touching this one.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from typing import NamedTuple

import services.machinery.k8sproto as _package


class F(NamedTuple):
    number: int
    name: str  # the JSON name
    # "string" "bytes" "int32" "int64" "bool" "double" "float", "map<string,string>",
    # "map<string,bytes>", "map<string,FULL.MESSAGE.NAME>", or a fully qualified message name
    # like "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    type: str
    repeated: bool = False

    @property
    def json_name(self) -> str:
        return self.name


@dataclasses.dataclass(frozen=True, slots=True)
class Tables:
    messages: dict[str, tuple[F, ...]]
    inline: frozenset[tuple[str, int]]
    nullable: frozenset[tuple[str, int]]
    json_as_items: frozenset[str]
    custom_json: dict[str, str]


@functools.cache
def tables() -> Tables:
    """Every table module of the package, merged. Loaded once; the modules are constants."""
    messages: dict[str, tuple[F, ...]] = {}
    inline: set[tuple[str, int]] = set()
    nullable: set[tuple[str, int]] = set()
    items: set[str] = set()
    custom: dict[str, str] = {}
    for info in pkgutil.iter_modules(_package.__path__):
        if info.name == "schema":
            continue
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        messages.update(getattr(module, "MESSAGES", {}))
        inline.update(getattr(module, "INLINE_FIELDS", ()))
        nullable.update(getattr(module, "NULLABLE_FIELDS", ()))
        items.update(getattr(module, "JSON_AS_ITEMS", ()))
        custom.update(getattr(module, "CUSTOM_JSON", {}))
    return Tables(messages, frozenset(inline), frozenset(nullable), frozenset(items), custom)


def all_messages() -> dict[str, tuple[F, ...]]:
    return dict(tables().messages)


# Proto packages are "k8s.io.api.<first label of the group>.<version>"; these groups live elsewhere.
_PACKAGES = {
    "": "k8s.io.api.core",
    "apiextensions.k8s.io": "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions",
    "apiregistration.k8s.io": "k8s.io.kube_aggregator.pkg.apis.apiregistration",
    "meta.k8s.io": "k8s.io.apimachinery.pkg.apis.meta",
    "internal.apiserver.k8s.io": "k8s.io.api.apiserverinternal",
    "metrics.k8s.io": "k8s.io.metrics.pkg.apis.metrics",
}

# Kinds registered in every group version (metav1.AddToGroupVersion): a client may send them
# under any apiVersion, and they are always meta/v1's messages.
_META_V1 = "k8s.io.apimachinery.pkg.apis.meta.v1."
_META_KINDS = frozenset(
    {"Status", "DeleteOptions", "CreateOptions", "UpdateOptions", "PatchOptions", "GetOptions", "ListOptions"}
)


def package(api_version: str) -> str:
    group, _, version = api_version.rpartition("/")
    base = _PACKAGES.get(group) or f"k8s.io.api.{group.split('.', 1)[0]}"
    return f"{base}.{version}"


def kind_message(api_version: str, kind: str) -> str | None:
    """The message a ``kind`` of an ``apiVersion`` is encoded as, or None when no table has it."""
    if not api_version or not kind:
        return None
    messages = tables().messages
    name = f"{package(api_version)}.{kind}"
    if name in messages:
        return name
    if kind in _META_KINDS and _META_V1 + kind in messages:
        return _META_V1 + kind
    return None
