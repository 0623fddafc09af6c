"""A container's environment as the kubelet builds it: envFrom, env with valueFrom, $(VAR) expansion.

Order matters and follows the kubelet: ``envFrom`` sources first (each key prefixed, later sources
winning), then ``env`` entries in order, each value expanded against what is defined so far.
``$(VAR)`` is replaced when VAR is defined, left as written otherwise; ``$$`` escapes a ``$``. The
same expansion applies to ``command`` and ``args`` (against the final environment).

A missing ConfigMap, Secret or key fails the container with ``CreateContainerConfigError`` and the
kubelet's wording, unless the reference is ``optional``.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.client import errors, resources
from services.machinery import quantity

Fetch = Callable[[resources.Resource, str, str], Awaitable[dict[str, Any] | None]]
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class EnvError(Exception):
    """The environment cannot be built (the message goes into the container's waiting state)."""

    reason = "CreateContainerConfigError"


def fetcher(api: Any) -> Fetch:
    """``fetch(resource, namespace, name)`` through the API, with a per-sync cache; None if absent."""
    cache: dict[tuple[str, str, str], dict[str, Any] | None] = {}

    async def fetch(resource: resources.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        key = (resource.plural, namespace, name)
        if key not in cache:
            try:
                cache[key] = await api.get(resource, name, namespace=namespace)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
                cache[key] = None
        return cache[key]

    return fetch


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


async def resolve(
    pod: Mapping[str, Any], container: Mapping[str, Any], *, fetch: Fetch, host_ip: str, pod_ip: str
) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or ():
        env.update(await _env_from(source, namespace, fetch))
    for item in container.get("env") or ():
        name = item.get("name", "")
        if "valueFrom" in item:
            value = await _value_from(item["valueFrom"], pod, container, namespace=namespace, fetch=fetch,
                                      host_ip=host_ip, pod_ip=pod_ip)  # fmt: skip
            if value is None:
                continue
            env[name] = value
        else:
            env[name] = expand(str(item.get("value", "")), env)
    return env


def expand_command(container: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """A copy of the container with $(VAR) expanded in command and args."""
    out = dict(container)
    for field in ("command", "args"):
        if out.get(field):
            out[field] = [expand(str(part), env) for part in out[field]]
    return out


async def _env_from(source: Mapping[str, Any], namespace: str, fetch: Fetch) -> dict[str, str]:
    prefix = source.get("prefix", "")
    ref = source.get("configMapRef") or source.get("secretRef") or {}
    secret = "secretRef" in source
    obj = await fetch(resources.SECRETS if secret else resources.CONFIGMAPS, namespace, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return {}
        raise EnvError(f'{"secret" if secret else "configmap"} "{ref.get("name", "")}" not found')
    data = _data(obj, secret=secret)
    return {prefix + k: v for k, v in data.items() if _ENV_NAME.fullmatch(prefix + k)}


def _data(obj: Mapping[str, Any], *, secret: bool) -> dict[str, str]:
    if secret:
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


async def _value_from(
    source: Mapping[str, Any], pod: Mapping[str, Any], container: Mapping[str, Any], *, namespace: str,
    fetch: Fetch, host_ip: str, pod_ip: str,
) -> str | None:  # fmt: skip
    for field, resource, kind in (("configMapKeyRef", resources.CONFIGMAPS, "ConfigMap"),
                                  ("secretKeyRef", resources.SECRETS, "Secret")):  # fmt: skip
        ref = source.get(field)
        if ref is None:
            continue
        obj = await fetch(resource, namespace, ref.get("name", ""))
        data = _data(obj, secret=kind == "Secret") if obj is not None else None
        if data is None or ref.get("key") not in data:
            if ref.get("optional"):
                return None
            if data is None:
                raise EnvError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            raise EnvError(f"couldn't find key {ref.get('key')} in {kind} {namespace}/{ref.get('name')}")
        return data[ref["key"]]
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"].get("fieldPath", ""), host_ip=host_ip, pod_ip=pod_ip)
    if "resourceFieldRef" in source:
        return resource_value(pod, container, source["resourceFieldRef"])
    return None


def field_value(pod: Mapping[str, Any], path: str, *, host_ip: str, pod_ip: str) -> str:
    """A downward API ``fieldRef`` (env and downwardAPI volumes)."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((md.get(match[1]) or {}).get(match[2], ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((md.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    simple = {
        "metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""), "status.hostIP": host_ip,
        "status.hostIPs": host_ip, "status.podIP": pod_ip, "status.podIPs": pod_ip,
    }  # fmt: skip
    if path not in simple:
        raise EnvError(f"unsupported fieldPath: {path}")
    return str(simple[path])


def resource_value(pod: Mapping[str, Any], container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """A ``resourceFieldRef``: the container's request or limit (limits default to the node's size)."""
    name = ref.get("containerName")
    if name:
        every = [*(pod["spec"].get("initContainers") or []), *pod["spec"].get("containers", [])]
        container = next((c for c in every if c.get("name") == name), container)
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    values = (container.get("resources") or {}).get(kind) or {}
    raw = values.get(resource)
    if raw is None and kind == "limits":
        raw = _node_size(resource)
    try:
        amount = quantity.parse(raw if raw is not None else 0)
        divisor = quantity.parse(ref.get("divisor") or 1)
    except ValueError as exc:
        raise EnvError(str(exc)) from exc
    if divisor == 0:
        raise EnvError("resourceFieldRef divisor must not be zero")
    return str(math.ceil(amount / divisor))


def _node_size(resource: str) -> int | None:
    if resource == "cpu":
        return os.cpu_count() or 1
    if resource == "memory":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None
