"""A pod's volumes, materialised under its directory before its containers start.

Each volume becomes a host path: ``<pod dir>/volumes/<name>`` for emptyDir and for the volumes
whose content comes from the API (configMap, secret, downwardAPI, projected: files written with
their ``items``, ``defaultMode`` and ``mode``), or an existing host directory for hostPath and for a
persistentVolumeClaim bound to a hostPath or local PersistentVolume. The service account token of
a projected volume is requested through ``serviceaccounts/<name>/token`` (TokenRequest), bound to
the pod. How a container sees its mounts depends on the runtime (docs/agent-runtime.md).

A volume that cannot be prepared yet (a missing ConfigMap, an unbound claim) raises
``VolumeError``; the pod stays ContainerCreating with that message and is retried.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.agent import envvars
from services.client import errors, resources

TOKEN_EXPIRATION = 3607  # seconds: what the kubelet asks for the kube-api-access token


class VolumeError(Exception):
    """A volume cannot be set up (the pod's containers wait with this message)."""


async def prepare(
    api: Any, pod: Mapping[str, Any], directory: Path, *, host_ip: str, pod_ip: str
) -> dict[str, Path]:
    """Materialise every volume of the pod; returns volume name -> host path."""
    fetch = envvars.fetcher(api)
    out: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        name = volume.get("name", "")
        target = directory / "volumes" / name
        out[name] = await _one(api, pod, volume, target, fetch=fetch, host_ip=host_ip, pod_ip=pod_ip)
    return out


async def _one(
    api: Any, pod: Mapping[str, Any], volume: Mapping[str, Any], target: Path, *, fetch: envvars.Fetch,
    host_ip: str, pod_ip: str,
) -> Path:  # fmt: skip
    namespace = pod["metadata"]["namespace"]
    if "emptyDir" in volume:
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        return target
    if "hostPath" in volume:
        return _host_path(volume["hostPath"])
    if "persistentVolumeClaim" in volume:
        return await _claim(api, namespace, volume["persistentVolumeClaim"].get("claimName", ""))
    files: dict[str, tuple[bytes, int]] = {}
    if "configMap" in volume or "secret" in volume:
        await _object_files(
            volume, namespace, fetch, files, volume.get("configMap") or volume.get("secret") or {}
        )
    elif "downwardAPI" in volume:
        _downward_files(pod, volume["downwardAPI"], files, host_ip=host_ip, pod_ip=pod_ip)
    elif "projected" in volume:
        await _projected(api, pod, volume["projected"], fetch, files, host_ip=host_ip, pod_ip=pod_ip)
    else:
        kinds = sorted(k for k in volume if k != "name")
        raise VolumeError(
            f"volume {volume.get('name')!r}: unsupported volume type {', '.join(kinds) or 'none'}"
        )
    _write_files(target, files)
    return target


def _host_path(source: Mapping[str, Any]) -> Path:
    path = Path(source.get("path", ""))
    kind = source.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind in ("Directory", "File", "Socket") and not path.exists():
        raise VolumeError(f"hostPath type check failed: {path} does not exist")
    return path


async def _claim(api: Any, namespace: str, claim_name: str) -> Path:
    try:
        claim = await api.get(resources.PERSISTENTVOLUMECLAIMS, claim_name, namespace=namespace)
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound')
        pv = await api.get(resources.PERSISTENTVOLUMES, volume_name)
    except errors.ApiError as exc:
        if exc.code == 404:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found') from exc
        raise
    spec = pv.get("spec") or {}
    source = spec.get("hostPath") or spec.get("local")
    if not source:
        raise VolumeError(f'persistentvolume "{volume_name}" is neither hostPath nor local')
    path = Path(source.get("path", ""))
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
    return path


async def _object_files(
    volume: Mapping[str, Any], namespace: str, fetch: envvars.Fetch, files: dict[str, tuple[bytes, int]],
    source: Mapping[str, Any], *, default_mode: int | None = None,
) -> None:  # fmt: skip
    secret = "secret" in volume
    name = source.get("secretName") if secret else source.get("name")
    obj = await fetch(resources.SECRETS if secret else resources.CONFIGMAPS, namespace, name or "")
    kind = "secret" if secret else "configmap"
    if obj is None:
        if source.get("optional"):
            return
        raise VolumeError(f'{kind} "{name}" not found')
    data: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        data[key] = base64.b64decode(value) if secret else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value)
    mode = source.get("defaultMode", default_mode if default_mode is not None else 0o644)
    items = source.get("items")
    if not items:
        files.update({key: (value, mode) for key, value in data.items()})
        return
    for item in items:
        if item.get("key") not in data:
            if source.get("optional"):
                continue
            raise VolumeError(f"configmap/secret {name}: no key {item.get('key')!r}")
        files[item.get("path", item["key"])] = (data[item["key"]], item.get("mode", mode))


def _downward_files(
    pod: Mapping[str, Any], source: Mapping[str, Any], files: dict[str, tuple[bytes, int]], *, host_ip: str,
    pod_ip: str, default_mode: int | None = None,
) -> None:  # fmt: skip
    mode = source.get("defaultMode", default_mode if default_mode is not None else 0o644)
    for item in source.get("items") or ():
        try:
            if "fieldRef" in item:
                value = envvars.field_value(
                    pod, item["fieldRef"].get("fieldPath", ""), host_ip=host_ip, pod_ip=pod_ip
                )
            else:
                container = (pod["spec"].get("containers") or [{}])[0]
                value = envvars.resource_value(pod, container, item.get("resourceFieldRef") or {})
        except envvars.EnvError as exc:
            raise VolumeError(str(exc)) from exc
        files[item.get("path", "")] = (value.encode(), item.get("mode", mode))


async def _projected(
    api: Any, pod: Mapping[str, Any], projected: Mapping[str, Any], fetch: envvars.Fetch,
    files: dict[str, tuple[bytes, int]], *, host_ip: str, pod_ip: str,
) -> None:  # fmt: skip
    mode = projected.get("defaultMode", 0o644)
    namespace = pod["metadata"]["namespace"]
    for source in projected.get("sources") or ():
        if "configMap" in source:
            await _object_files(
                {"configMap": 1}, namespace, fetch, files, source["configMap"], default_mode=mode
            )
        elif "secret" in source:
            await _object_files({"secret": 1}, namespace, fetch, files, source["secret"], default_mode=mode)
        elif "downwardAPI" in source:
            _downward_files(
                pod, source["downwardAPI"], files, host_ip=host_ip, pod_ip=pod_ip, default_mode=mode
            )
        elif "serviceAccountToken" in source:
            token = await _token(api, pod, source["serviceAccountToken"])
            files[source["serviceAccountToken"].get("path", "token")] = (token.encode(), mode)


async def _token(api: Any, pod: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    md = pod["metadata"]
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    spec: dict[str, Any] = {
        "expirationSeconds": source.get("expirationSeconds") or TOKEN_EXPIRATION,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"]},
    }
    if source.get("audience"):
        spec["audiences"] = [source["audience"]]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    path = resources.SERVICEACCOUNTS.path(namespace=md["namespace"], name=account, subresource="token")
    try:
        answer = await api.request("POST", path, body=body)
    except errors.ApiError as exc:
        raise VolumeError(f"token for service account {md['namespace']}/{account}: {exc.message}") from exc
    return answer["status"]["token"]


def _write_files(target: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Replace the volume's content (a fresh directory swapped in, so readers never see half)."""
    fresh = target.with_name(f".{target.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    for rel, (content, mode) in files.items():
        path = fresh / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise VolumeError(f"invalid path {rel!r} in volume {target.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)
    if target.exists():
        # Content in place, not the directory: a running container's bind mount holds the old inode.
        for child in target.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        for child in fresh.iterdir():
            os.replace(child, target / child.name)
        fresh.rmdir()
    else:
        os.replace(fresh, target)


def mounts(container: Mapping[str, Any], volumes: Mapping[str, Path]) -> list[tuple[Path, str, bool]]:
    """The container's (host path, mountPath, read-only) list, subPath resolved."""
    out = []
    for mount in container.get("volumeMounts") or ():
        host = volumes.get(mount.get("name", ""))
        if host is None:
            raise VolumeError(f"volumeMount {mount.get('name')!r} names no volume of the pod")
        sub = mount.get("subPath")
        if sub:
            if ".." in Path(sub).parts or Path(sub).is_absolute():
                raise VolumeError(f"invalid subPath {sub!r}")
            host = host / sub
            if not host.exists():
                host.mkdir(parents=True)
        out.append((host, mount.get("mountPath", ""), bool(mount.get("readOnly"))))
    return out
