"""What exists in every cluster from the first start: namespaces, the kubernetes service, RBAC.

Objects are created through the normal write path (defaults, validation,
metadata) as the API server's own user, and only when missing, so a restart
or a second API server on the same database changes nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import orjson

from services.apiserver import context, endpoints_reconciler, priority, request, writes
from services.apiserver.auth import types as auth_types
from services.machinery import errors

log = logging.getLogger(__name__)

SYSTEM_USER = auth_types.UserInfo(name="system:apiserver", groups=("system:masters", "system:authenticated"))
NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def ensure(api: context.Api, obj: dict[str, Any]) -> bool:
    """Create ``obj`` unless an object with its name exists; True when it was created."""
    group, _, version = obj["apiVersion"].rpartition("/")
    info = api.registry.by_kind(group, obj["kind"])
    if info is None:
        raise RuntimeError(f"bootstrap object of unserved kind {obj['apiVersion']}/{obj['kind']}")
    namespace = obj.get("metadata", {}).get("namespace", "") if info.namespaced else ""
    path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    rinfo = request.RequestInfo(
        verb="create", resource_request=True, path=path, group=group, version=version,
        resource=info.plural, namespace=namespace,
    )  # fmt: skip
    headers = {"content-type": "application/json", "user-agent": "k3s-apiserver"}
    ctx = context.Request(
        api, rinfo, info, {"fieldManager": ["k3s"]}, headers, orjson.dumps(obj), SYSTEM_USER
    )
    try:
        await writes.create(ctx)
    except errors.ApiError as exc:
        if exc.reason == "AlreadyExists":
            return False
        raise
    return True


def kubernetes_service(service_cidr: str) -> dict[str, Any]:
    first = str(next(ipaddress.ip_network(service_cidr, strict=False).hosts()))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },  # fmt: skip
        "spec": {
            "type": "ClusterIP",
            "clusterIP": first,
            "clusterIPs": [first],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            "sessionAffinity": "None",
        },
    }


def kubernetes_endpoints(address: str, port: int) -> dict[str, Any]:
    """This server alone; ``endpoints_reconciler`` then keeps the list of every live API server."""
    return endpoints_reconciler.endpoints_object([(address, port)])


async def run(
    api: context.Api, *, service_cidr: str, address: str, port: int, rbac: list[dict[str, Any]]
) -> None:
    created = 0
    for name in NAMESPACES:
        created += await ensure(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    created += await ensure(api, kubernetes_service(service_cidr))
    created += await ensure(api, kubernetes_endpoints(address, port))
    for obj in [*rbac, *priority.system_classes()]:
        created += await ensure(api, obj)
    if created:
        log.info("created %d bootstrap objects", created)
