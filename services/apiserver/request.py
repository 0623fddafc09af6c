"""Request info: what a Kubernetes API path and method ask for (apiserver's RequestInfo)."""

from __future__ import annotations

import dataclasses
import urllib.parse

from services.machinery import errors

# Paths under /api/v1/namespaces/<name>/ that are subresources of the namespace itself.
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclasses.dataclass(frozen=True, slots=True)
class RequestInfo:
    verb: str  # get list watch create update patch delete deletecollection (or HTTP verb lowercased)
    resource_request: bool
    path: str
    group: str = ""
    version: str = ""
    resource: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    # Remaining path parts below a subresource (pods/<p>/proxy/<path>), rarely used.
    rest: tuple[str, ...] = ()


# Parsed paths, by (method, path, watch flag): clients repeat a few paths (a collection they
# create in, objects they poll), and a RequestInfo is immutable, so one may serve many requests.
_PARSED: dict[tuple[str, str, bool], RequestInfo] = {}
_PARSED_LIMIT = 4096  # entries; the table starts over when full (paths with names are unbounded)


def parse(method: str, path: str, query: dict[str, list[str]]) -> RequestInfo:
    """Split a path into group, version, namespace, resource, name and subresource."""
    key = (method, path, _flag(query, "watch"))
    found = _PARSED.get(key)
    if found is None:
        found = _parse(method, path, query)  # a bad path raises, and is not remembered
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[key] = found
    return found


def _parse(method: str, path: str, query: dict[str, list[str]]) -> RequestInfo:
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
    method = method.upper()
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(verb=method.lower(), resource_request=False, path=path)
    if parts[0] == "api":
        if len(parts) < 3:
            return RequestInfo(verb=method.lower(), resource_request=False, path=path)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return RequestInfo(verb=method.lower(), resource_request=False, path=path)
        group, version, rest = parts[1], parts[2], parts[3:]
    watch_path = False
    if rest and rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
        else:
            rest = ["namespaces", *rest[1:]]
            # /api/v1/namespaces/<name>[/status|finalize]: the namespace object; it has no namespace.
            namespace = ""
    if not rest:
        raise errors.not_found("", path)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    verb = _verb(method, name=name, watch=watch_path or _flag(query, "watch"))
    return RequestInfo(
        verb=verb,
        resource_request=True,
        path=path,
        group=group,
        version=version,
        resource=resource,
        namespace=namespace,
        name=name,
        subresource=subresource,
        rest=tuple(rest[3:]),
    )


def _verb(method: str, *, name: str, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return method.lower()


def _flag(query: dict[str, list[str]], key: str) -> bool:
    values = query.get(key)
    return bool(values) and values[-1].lower() in ("true", "1")


def flag(query: dict[str, list[str]], key: str) -> bool:
    return _flag(query, key)


def param(query: dict[str, list[str]], key: str, default: str = "") -> str:
    values = query.get(key)
    return values[-1] if values else default


def int_param(query: dict[str, list[str]], key: str, default: int | None = None) -> int | None:
    raw = param(query, key)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f"invalid value for {key}: {raw!r} is not an integer") from None
