"""Node IPAM: every node gets its own pod network, a /24 of ``--cluster-cidr`` by default.

The controller keeps, per IP family of ``cluster_cidr``, which node-sized subnets are taken.
What is taken is learned from the nodes themselves (their ``spec.podCIDRs``), not stored
anywhere else: the informer shows every existing node before any allocation runs, so a
restarted or newly elected manager never hands out a subnet twice. A node without a podCIDR
gets the next free subnet of each family (searching on from the last one handed out, as
upstream's range allocator does, so a freed subnet is not reused at once) in one merge patch
of ``spec.podCIDR`` and ``spec.podCIDRs``; a deleted node's subnets become free again.

Allocation happens synchronously inside ``reconcile`` with no await between choosing a subnet
and marking it taken, and the controller runs one worker, so two nodes never get the same one.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from services.client import errors, resources
from services.controllers import base

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Obj = dict[str, Any]


class CidrSet:
    """The node-sized subnets of one cluster CIDR, and which are taken."""

    def __init__(self, cluster: str, mask: int) -> None:
        self.network: Network = ipaddress.ip_network(cluster.strip(), strict=False)
        if mask < self.network.prefixlen:
            raise ValueError(f"node CIDR mask /{mask} is larger than the cluster CIDR {self.network}")
        self.mask = mask
        self.size = 2 ** (mask - self.network.prefixlen)
        self._step = 2 ** (self.network.max_prefixlen - mask)
        self._taken: set[int] = set()
        self._next = 0

    @property
    def family(self) -> int:
        return self.network.version

    def subnet(self, index: int) -> Network:
        first = int(self.network.network_address) + index * self._step
        return ipaddress.ip_network((first, self.mask))

    def index_of(self, cidr: str) -> int | None:
        try:
            subnet = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if (
            subnet.version != self.family
            or subnet.prefixlen != self.mask
            or not subnet.subnet_of(self.network)
        ):  # type: ignore[arg-type]
            return None
        return (int(subnet.network_address) - int(self.network.network_address)) // self._step

    def occupy(self, cidr: str) -> bool:
        index = self.index_of(cidr)
        if index is None:
            return False
        self._taken.add(index)
        return True

    def release(self, cidr: str) -> None:
        index = self.index_of(cidr)
        if index is not None:
            self._taken.discard(index)

    def allocate(self) -> Network | None:
        for offset in range(self.size):
            index = (self._next + offset) % self.size
            if index not in self._taken:
                self._taken.add(index)
                self._next = (index + 1) % self.size
                return self.subnet(index)
        return None

    @property
    def free(self) -> int:
        return self.size - len(self._taken)


def cidr_sets(cluster_cidr: str, *, mask_v4: int, mask_v6: int) -> list[CidrSet]:
    sets = []
    for part in cluster_cidr.split(","):
        if part.strip():
            version = ipaddress.ip_network(part.strip(), strict=False).version
            sets.append(CidrSet(part, mask_v4 if version == 4 else mask_v6))
    return sets


def pod_cidrs(node: Obj) -> list[str]:
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))


class NodeIpamController(base.QueueController):
    name = "nodeipam"
    workers = 1

    def __init__(self) -> None:
        super().__init__()
        self.sets: list[CidrSet] = []
        # Nodes patched whose informer copy does not show the podCIDRs yet: not to be served twice.
        self._assigned: dict[str, list[str]] = {}

    def setup(self, ctx: base.ControllerContext) -> None:
        super().setup(ctx)
        settings = ctx.settings
        if settings is not None and not getattr(settings, "allocate_node_cidrs", True):
            log.info("nodeipam: --allocate-node-cidrs is off; nodes keep the podCIDRs they have")
            return
        self.sets = cidr_sets(
            getattr(settings, "cluster_cidr", "10.42.0.0/16"),
            mask_v4=getattr(settings, "node_cidr_mask", 24),
            mask_v6=getattr(settings, "node_cidr_mask_ipv6", 64),
        )
        self.nodes = ctx.informers.informer(resources.NODES)
        self.nodes.add_handlers(
            on_add=self._seen, on_update=lambda old, new: self._seen(new), on_delete=self._gone
        )

    def _seen(self, node: Obj) -> None:
        cidrs = pod_cidrs(node)
        if cidrs:
            self._assigned.pop(node["metadata"]["name"], None)
        for cidr in cidrs:
            if not any(s.occupy(cidr) for s in self.sets):
                log.debug("node %s: podCIDR %s is outside the cluster CIDR", node["metadata"]["name"], cidr)
        if not cidrs:
            self.enqueue(node)

    def _gone(self, node: Obj) -> None:
        assigned = self._assigned.pop(node["metadata"]["name"], [])
        for cidr in pod_cidrs(node) or assigned:
            for cidr_set in self.sets:
                cidr_set.release(cidr)

    async def reconcile(self, key: str) -> None:
        node = self.nodes.store.get(key)
        if node is None or pod_cidrs(node) or key in self._assigned:
            return
        allocated: list[str] = []
        for cidr_set in self.sets:
            subnet = cidr_set.allocate()
            if subnet is None:
                self._release(allocated)
                self.ctx.recorder.warning(
                    node, "CIDRNotAvailable", f"Node {key} status is now: CIDRNotAvailable"
                )
                raise errors.ClientError(f"no free node CIDR left in {cidr_set.network} for node {key}")
            allocated.append(str(subnet))
        body = {"spec": {"podCIDR": allocated[0], "podCIDRs": allocated}}
        try:
            await self.ctx.api.patch(resources.NODES, key, body)
        except (errors.ApiError, errors.ClientError) as exc:
            self._release(allocated)
            if isinstance(exc, errors.ApiError) and exc.code == 404:
                return
            self.ctx.recorder.warning(
                node, "CIDRAssignmentFailed", f"Node {key} status is now: CIDRAssignmentFailed"
            )
            raise
        self._assigned[key] = allocated
        log.info("node %s: podCIDRs %s", key, ",".join(allocated))

    def _release(self, cidrs: list[str]) -> None:
        for cidr in cidrs:
            for cidr_set in self.sets:
                cidr_set.release(cidr)


def new() -> base.Controller:
    return NodeIpamController()
