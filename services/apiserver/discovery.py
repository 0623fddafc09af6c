"""Discovery documents: ``/version``, legacy ``/api`` and ``/apis``, each group/version's
resource list, and aggregated discovery v2, all built from the Registry.

The builders are pure functions of the registry. ``Discovery`` serves them as bytes with a
quoted ETag and caches them until the registry changes (CRDs added or removed): kubectl
asks for these on every command that misses its cache, so they are built once, not per
request. Aggregated discovery is chosen by the Accept header (``negotiate``); its reply
must carry ``V2_CONTENT_TYPE``, since client-go picks its decoder from the Content-Type.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import platform
import sys
import weakref
from typing import Literal

import orjson

from services.apiserver import builtin, registry, responses

MAJOR, MINOR = "1", "37"
GIT_VERSION = f"v{MAJOR}.{MINOR}.0+k3spy"
V2_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
JSON_CONTENT_TYPE = "application/json"

_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


def version_info(*, git_commit: str = "", build_date: str = "1970-01-01T00:00:00Z") -> dict:
    """``/version``: every field the Python client requires, plus the compatibility fields."""
    machine = platform.machine().lower()
    return {
        "major": MAJOR,
        "minor": MINOR,
        "emulationMajor": MAJOR,
        "emulationMinor": MINOR,
        "minCompatibilityMajor": MAJOR,
        "minCompatibilityMinor": str(int(MINOR) - 1),
        "gitVersion": GIT_VERSION,
        "gitCommit": git_commit,
        "gitTreeState": "clean",
        "buildDate": build_date,
        "goVersion": f"python{platform.python_version()}",
        "compiler": sys.implementation.name,
        "platform": f"{sys.platform}/{_GO_ARCH.get(machine, machine)}",
    }


def api_versions(server_address: str) -> dict:
    """``/api`` (legacy): the core group's versions and where clients reach the server."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(group: str, versions: list[str]) -> dict:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_group_list(reg: registry.Registry) -> dict:
    """``/apis`` (legacy): every named group, with its versions, preferred first."""
    groups = [_group_entry(group, versions) for group, versions in reg.groups() if group]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(reg: registry.Registry, group: str) -> dict | None:
    """``/apis/<group>``: one group, or None if it is not served."""
    for name, versions in reg.groups():
        if name == group and group:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}
    return None


def _storage_version_hash(info: registry.ResourceInfo) -> str:
    digest = hashlib.sha256(f"{info.group}/{info.version}/{info.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def api_resource_list(reg: registry.Registry, group: str, version: str) -> dict | None:
    """``/api/v1`` or ``/apis/<group>/<version>``: resources and ``<resource>/<sub>`` entries."""
    infos = reg.resources(group, version)
    if not infos:
        return None
    entries = []
    for info in infos:
        entry: dict = {
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": list(info.verbs),
        }
        if info.short_names:
            entry["shortNames"] = list(info.short_names)
        if info.categories:
            entry["categories"] = list(info.categories)
        if not info.virtual:
            entry["storageVersionHash"] = _storage_version_hash(info)
        entries.append(entry)
        for sub in info.subresources:
            sub_group, sub_version, sub_kind = builtin.subresource_gvk(info, sub)
            sub_entry: dict = {
                "name": f"{info.plural}/{sub}",
                "singularName": "",
                "namespaced": info.namespaced,
            }
            if (sub_group, sub_version) != (info.group, info.version):
                sub_entry.update(group=sub_group, version=sub_version)
            sub_entry.update(kind=sub_kind, verbs=list(builtin.subresource_verbs(sub)))
            entries.append(sub_entry)
    entries.sort(key=lambda e: e["name"])
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }


def _discovery_resource(info: registry.ResourceInfo) -> dict:
    out: dict = {
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "singularResource": info.singular,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        out["shortNames"] = list(info.short_names)
    if info.categories:
        out["categories"] = list(info.categories)
    subs = []
    for sub in sorted(info.subresources):
        g, v, k = builtin.subresource_gvk(info, sub)
        subs.append(
            {
                "subresource": sub,
                "responseKind": {"group": g, "version": v, "kind": k},
                "verbs": list(builtin.subresource_verbs(sub)),
            }
        )
    if subs:
        out["subresources"] = subs
    return out


def aggregated(reg: registry.Registry, core: bool) -> dict:
    """Aggregated discovery v2 (``APIGroupDiscoveryList``) for ``/api`` (core) or ``/apis``."""
    items = []
    for group, versions in reg.groups():
        if (group == "") != core:
            continue
        listed = []
        for version in versions:
            resources = sorted(reg.resources(group, version), key=lambda i: i.plural)
            listed.append(
                {
                    "version": version,
                    "resources": [_discovery_resource(info) for info in resources],
                    "freshness": "Current",
                }
            )
        # Go omits the empty name of the core group.
        metadata = {"name": group, "creationTimestamp": None} if group else {"creationTimestamp": None}
        items.append({"metadata": metadata, "versions": listed})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


# -- content negotiation --------------------------------------------------------------------


def parse_accept(header: str) -> list[tuple[str, dict[str, str]]]:
    """Media ranges of an Accept header, most preferred first (by q, then by position)."""
    ranges = []
    for position, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0:
            ranges.append((-q, position, pieces[0].lower(), params))
    ranges.sort(key=lambda r: (r[0], r[1]))
    return [(media, params) for _, _, media, params in ranges]


def _is_json(media: str) -> bool:
    return media in ("application/json", "application/*", "*/*")


def negotiate(accept_header: str) -> Literal["v2", "legacy"]:
    """Which discovery document a client prefers for ``/api`` and ``/apis``."""
    for media, params in parse_accept(accept_header or ""):
        if media == "application/json" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2":
                return "v2"
            continue  # v2beta1 (clients 1.26-1.29) is not served: they fall back to legacy
        if _is_json(media):
            return "legacy"
    return "legacy"


# -- serving --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    body: bytes
    content_type: str
    etag: str  # quoted, as sent in the ETag header


def _document(body: dict, content_type: str = JSON_CONTENT_TYPE) -> Document:
    data = orjson.dumps(body)
    return Document(data, content_type, f'"{hashlib.sha256(data).hexdigest()}"')


def etag_matches(etag: str, if_none_match: str | None) -> bool:
    """Whether an If-None-Match header names this ETag (so the answer is 304)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


class Discovery:
    """Discovery documents as bytes, cached until the registry changes."""

    def __init__(self, reg: registry.Registry, *, server_address: str = "", git_commit: str = "") -> None:
        self._registry = reg
        self._server_address = server_address
        self._version = _document(version_info(git_commit=git_commit))
        self._cache: dict[tuple[str, ...], Document] = {}
        reg.on_change(self._cache.clear)

    def _cached(self, key: tuple[str, ...], build) -> Document | None:
        doc = self._cache.get(key)
        if doc is None:
            doc = build()
            if doc is not None:  # misses are not kept: any path could be asked for
                self._cache[key] = doc
        return doc

    def version(self) -> Document:
        return self._version

    def api(self, accept: str = "", *, server_address: str = "") -> Document:
        """``/api``: aggregated v2 or legacy APIVersions, as the Accept header prefers."""
        if negotiate(accept) == "v2":
            return self._cached(
                ("api", "v2"), lambda: _document(aggregated(self._registry, True), V2_CONTENT_TYPE)
            )
        address = server_address or self._server_address
        return self._cached(("api", address), lambda: _document(api_versions(address)))

    def apis(self, accept: str = "") -> Document:
        """``/apis``: aggregated v2 or legacy APIGroupList, as the Accept header prefers."""
        if negotiate(accept) == "v2":
            return self._cached(
                ("apis", "v2"), lambda: _document(aggregated(self._registry, False), V2_CONTENT_TYPE)
            )
        return self._cached(("apis",), lambda: _document(api_group_list(self._registry)))

    def group(self, group: str) -> Document | None:
        """``/apis/<group>``, or None when the group is not served (404)."""

        def build() -> Document | None:
            body = api_group(self._registry, group)
            return _document(body) if body else None

        return self._cached(("group", group), build)

    def resources(self, group: str, version: str) -> Document | None:
        """``/api/v1`` or ``/apis/<group>/<version>``, or None when not served (404)."""

        def build() -> Document | None:
            body = api_resource_list(self._registry, group, version)
            return _document(body) if body else None

        return self._cached(("resources", group, version), build)


# One Discovery per registry, for ``respond``; it goes when the registry does.
_SERVED: weakref.WeakKeyDictionary[registry.Registry, Discovery] = weakref.WeakKeyDictionary()


def served(reg: registry.Registry) -> Discovery:
    found = _SERVED.get(reg)
    if found is None:
        found = _SERVED[reg] = Discovery(reg)
    return found


def respond(
    reg: registry.Registry,
    path: str,
    *,
    accept: str = "",
    server_address: str = "",
    if_none_match: str = "",
) -> responses.Response | None:
    """The answer to ``/api``, ``/apis``, ``/api/v1``, ``/apis/<g>`` or ``/apis/<g>/<v>``;
    None when the path names nothing served (the caller answers 404)."""
    disc = served(reg)
    parts = path.strip("/").split("/")
    if parts == ["api"]:
        doc: Document | None = disc.api(accept, server_address=server_address)
    elif parts == ["apis"]:
        doc = disc.apis(accept)
    elif parts == ["api", "v1"]:
        doc = disc.resources("", "v1")
    elif parts[0] == "apis" and len(parts) == 2:
        doc = disc.group(parts[1])
    elif parts[0] == "apis" and len(parts) == 3:
        doc = disc.resources(parts[1], parts[2])
    else:
        return None
    if doc is None:
        return None
    headers = [("etag", doc.etag)]
    if len(parts) == 1:
        headers.append(("vary", "Accept"))  # one URL, two documents
    if doc.content_type == V2_CONTENT_TYPE:
        headers.append(("cache-control", "public"))
    if etag_matches(doc.etag, if_none_match):
        return responses.Response(304, b"", doc.content_type, headers)
    return responses.Response(200, doc.body, doc.content_type, headers)
