"""The node's own objects: its Node (registration and status) and its Lease, kept current.

As the kubelet does: the Node is created once with its labels and taints (an existing one keeps its
spec, its labels are brought up to date); its status (capacity, allocatable, addresses, nodeInfo
and the Ready, MemoryPressure, DiskPressure and PIDPressure conditions) is computed every
``status_update_interval`` and posted when anything but a heartbeat changed, and at least every
``status_report_interval``; the Lease ``kube-node-lease/<node>`` is renewed every
``lease_renew_interval``. The node lifecycle controller watches both: a node whose Lease stops
moving turns NotReady.

The pure builders (``capacity``, ``node_object``, ``lease_object``, ``Conditions``) are shared with
``virtual``, which runs the same shapes for many nodes at once. Reading the host is in ``host``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.agent import host
from services.client import errors, resources
from services.client import types as client_types
from services.machinery import tasks

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.37.0+k3spy"  # in step with the API server's /version gitVersion
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
MASTER_ROLE = "node-role.kubernetes.io/master"
KUBELET_PORT = 10250
Obj = dict[str, Any]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_taint(text: str) -> Obj:
    """``key[=value]:Effect`` (K3s's --node-taint) as a taint object."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"invalid taint {text!r}: want KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = spec.partition("=")
    taint: Obj = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def labels_for(name: str, *, extra: Mapping[str, str] = (), server_node: bool = False) -> dict[str, str]:
    """The kubelet's well-known labels, K3s's role labels on servers, then ``--node-label``."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": host.os_name(),
        "kubernetes.io/arch": host.arch(),
        "beta.kubernetes.io/os": host.os_name(),
        "beta.kubernetes.io/arch": host.arch(),
    }
    if server_node:
        labels[CONTROL_PLANE_ROLE] = "true"
        labels[MASTER_ROLE] = "true"
    labels.update(dict(extra))
    return labels


def node_object(
    name: str,
    *,
    labels: Mapping[str, str],
    taints: Sequence[Obj] = (),
    status: Obj,
    annotations: Mapping[str, str] = (),
) -> Obj:
    node: Obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {},
        "status": status,
    }
    if annotations:
        node["metadata"]["annotations"] = dict(annotations)
    if taints:
        node["spec"]["taints"] = [dict(t) for t in taints]
    return node


def lease_object(name: str, *, node_uid: str, duration: int) -> Obj:
    metadata: Obj = {"name": name, "namespace": LEASE_NAMESPACE}
    if node_uid:  # the kubelet makes its Node the owner, so the garbage collector removes the Lease with it
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {"holderIdentity": name, "leaseDurationSeconds": duration, "renewTime": now_micro()},
    }


CONDITION_TEXT = {
    # type -> (status when healthy, reason healthy, message healthy, reason unhealthy, message unhealthy)
    "MemoryPressure": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available",
                       "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure",
                     "KubeletHasDiskPressure", "kubelet has disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available",
                    "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}  # fmt: skip


class Conditions:
    """The four node conditions, keeping each one's lastTransitionTime until its status changes."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[str, str]] = {}  # type -> (status, lastTransitionTime)

    def compute(self, pressure: Mapping[str, bool], *, ready: bool = True) -> list[Obj]:
        stamp = now_iso()
        out = []
        for kind, (ok_reason, ok_message, bad_reason, bad_message) in CONDITION_TEXT.items():
            bad = bool(pressure.get(kind))
            out.append(self._one(kind, "True" if bad else "False", bad_reason if bad else ok_reason,
                                 bad_message if bad else ok_message, stamp))  # fmt: skip
        if ready:
            out.append(self._one("Ready", "True", "KubeletReady", "kubelet is posting ready status", stamp))
        else:
            out.append(
                self._one("Ready", "False", "KubeletNotReady", "container runtime is not ready", stamp)
            )
        return out

    def _one(self, kind: str, status: str, reason: str, message: str, stamp: str) -> Obj:
        previous = self._since.get(kind)
        since = previous[1] if previous is not None and previous[0] == status else stamp
        self._since[kind] = (status, since)
        return {"type": kind, "status": status, "lastHeartbeatTime": stamp, "lastTransitionTime": since,
                "reason": reason, "message": message}  # fmt: skip


def signature(status: Obj) -> Any:
    """What of a status counts as a change (heartbeat times do not)."""
    conditions = tuple((c["type"], c["status"]) for c in status.get("conditions") or ())
    return (conditions, repr(status.get("capacity")), repr(status.get("allocatable")),
            repr(status.get("addresses")), repr(status.get("nodeInfo")))  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """What the agent registers: the node's name, address, labels, taints and how to read its host."""

    name: str
    node_ip: str
    labels: Mapping[str, str]
    taints: Sequence[Obj] = ()
    runtime_version: str = "process://0"
    status: Callable[[Conditions], Obj] = dataclasses.field(repr=False, default=lambda c: {})


class NodeAgent:
    """Registers one Node and keeps its status and Lease current (two named background tasks)."""

    def __init__(
        self,
        api: client_types.Api,
        spec: NodeSpec,
        *,
        lease_duration: int = 40,
        lease_renew_interval: float = 10.0,
        status_update_interval: float = 10.0,
        status_report_interval: float = 60.0,
        on_failure: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.api = api
        self.spec = spec
        self.lease_duration = lease_duration
        self.lease_renew_interval = lease_renew_interval
        self.status_update_interval = status_update_interval
        self.status_report_interval = status_report_interval
        self._on_failure = on_failure
        self.conditions = Conditions()
        self.node_uid = ""
        self._lease: Obj | None = None
        self._posted: Any = None
        self._posted_at = 0.0
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def name(self) -> str:
        return self.spec.name

    async def start(self) -> None:
        """Register the Node, take the Lease, post the status, then keep them current."""
        await self.register()
        await self.renew_lease()
        await self.post_status(force=True)
        self._tasks = [
            tasks.guarded(self._every(self.lease_renew_interval, self.renew_lease), name=f"node {self.name} lease",
                          on_failure=self._on_failure),
            tasks.guarded(self._every(self.status_update_interval, self.post_status),
                          name=f"node {self.name} status", on_failure=self._on_failure),
        ]  # fmt: skip

    async def stop(self) -> None:
        await tasks.cancel_all(self._tasks)

    async def register(self) -> Obj:
        status = self.spec.status(self.conditions)
        body = node_object(self.name, labels=self.spec.labels, taints=self.spec.taints, status=status)
        try:
            node = await self.api.create(resources.NODES, body)
            log.info("registered node %s", self.name)
        except errors.ApiError as exc:
            if not errors.is_already_exists(exc):
                raise
            patch = {"metadata": {"labels": dict(self.spec.labels)}}
            node = await self.api.patch(resources.NODES, self.name, patch)
            log.info("node %s was registered before; labels brought up to date", self.name)
        self.node_uid = node["metadata"].get("uid", "")
        return node

    async def renew_lease(self) -> None:
        try:
            if self._lease is None:
                self._lease = await self._get_or_create_lease()
                return
            lease = dict(self._lease)
            lease["spec"] = {**lease.get("spec", {}), "holderIdentity": self.name, "renewTime": now_micro(),
                             "leaseDurationSeconds": self.lease_duration}  # fmt: skip
            self._lease = await self.api.update(resources.LEASES, lease, namespace=LEASE_NAMESPACE)
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise
            self._lease = None  # gone or changed under us: read it again at the next renewal
            log.info("node %s: lease renewal: %s; retrying", self.name, exc.reason)
        except errors.TransportError as exc:
            log.warning("node %s: cannot renew the lease: %s", self.name, exc)

    async def _get_or_create_lease(self) -> Obj:
        body = lease_object(self.name, node_uid=self.node_uid, duration=self.lease_duration)
        try:
            return await self.api.create(resources.LEASES, body, namespace=LEASE_NAMESPACE)
        except errors.ApiError as exc:
            if not errors.is_already_exists(exc):
                raise
        current = await self.api.get(resources.LEASES, self.name, namespace=LEASE_NAMESPACE)
        current["spec"] = {**current.get("spec", {}), **body["spec"]}
        return await self.api.update(resources.LEASES, current, namespace=LEASE_NAMESPACE)

    async def post_status(self, *, force: bool = False) -> None:
        """Post the status if it changed or the report interval passed (or ``force``)."""
        status = self.spec.status(self.conditions)
        loop = asyncio.get_running_loop()
        due = loop.time() - self._posted_at >= self.status_report_interval
        if not (force or due or signature(status) != self._posted):
            return
        try:
            await self.api.patch(resources.NODES, self.name, {"status": status}, subresource="status")
        except errors.ApiError as exc:
            if exc.code != 404:
                raise
            log.warning("node %s: the Node is gone; its status is not posted", self.name)
            return
        except errors.TransportError as exc:
            log.warning("node %s: cannot post the status: %s", self.name, exc)
            return
        self._posted, self._posted_at = signature(status), loop.time()

    async def _every(self, interval: float, action: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except (errors.ApiError, errors.ClientError) as exc:
                # The API refusing once (a restart, a 5xx) must not stop the node: try again next time.
                log.warning("node %s: %s", self.name, exc)
