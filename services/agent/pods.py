"""The pod worker: runs the pods bound to this node through a runtime and reports their status.

``PodManager`` watches pods with ``fieldSelector=spec.nodeName=<node>`` through an informer and
keeps one ``PodWorker`` per pod uid, each a named task that syncs its pod whenever the informer,
the runtime (a container exited) or a probe says something changed, and after a backoff timer.
One worker per pod means a pod's syncs never overlap, and a slow pod (a long grace period)
never holds up the others.

A sync is the kubelet's ``SyncPod`` in small: give the pod an address (the node's for
hostNetwork, else a stable one in the node's podCIDR, kept by the runtime's sandbox), prepare
volumes, run init containers one by one, then the app containers, restart what the restart
policy says with CrashLoopBackOff (10 s doubling to 5 min by default), kill a container whose
liveness or startup probe failed, and PUT pods/status when it changed. A pod with a
deletionTimestamp has its containers stopped (SIGTERM, its grace period, SIGKILL) and is then
deleted for good (grace 0, precondition on its uid). Stopping the manager never stops pods: the
next agent adopts them from the runtime, and removes those whose pod was deleted meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Mapping
from typing import Any

from services.agent import podworker
from services.agent.runtimes import types
from services.client import errors, informer, resources, store

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PodSettings:
    """Timings of the pod worker (kubelet defaults; tests shorten them)."""

    backoff_initial: float = 10.0  # seconds before the second restart of a crashing container
    backoff_cap: float = 300.0  # the kubelet's MaxContainerBackOff
    resync: float = 10.0  # seconds between syncs of a pod when nothing else wakes it
    default_grace: float = 30.0  # when a pod has neither deletionGracePeriodSeconds nor its own


class Backoff:
    """Per-container restart backoff, as the kubelet keeps it (keyed by pod uid and name).

    The first restart is immediate; each later one waits ``delay`` after the last exit, doubling
    to ``cap``. An entry untouched for twice the cap is forgotten (the container was healthy).
    """

    def __init__(self, *, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, cap
        self._entries: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (delay, last step)

    def remaining(self, key: tuple[str, str], *, since: float, now: float) -> float:
        """Seconds left before a container that exited at ``since`` may start again."""
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > 2 * self.cap:
            return 0.0
        return max(since + entry[0] - now, 0.0)

    def delay(self, key: tuple[str, str]) -> float:
        return self._entries.get(key, (self.initial, 0.0))[0]

    def step(self, key: tuple[str, str], *, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > 2 * self.cap:
            self._entries[key] = (self.initial, now)
        else:
            self._entries[key] = (min(entry[0] * 2, self.cap), now)

    def forget(self, uid: str) -> None:
        for key in [k for k in self._entries if k[0] == uid]:
            del self._entries[key]


class PodManager:
    """Runs this node's pods (see the module docstring); ``start`` returns once they are synced."""

    def __init__(
        self, api: Any, *, node_name: str, runtime: types.Runtime, node_ip: str,
        settings: PodSettings | None = None,
    ) -> None:  # fmt: skip
        self.api = api
        self.node_name = node_name
        self.runtime = runtime
        self.node_ip = node_ip
        self.settings = settings or PodSettings()
        self.backoff = Backoff(initial=self.settings.backoff_initial, cap=self.settings.backoff_cap)
        self.informer = informer.Informer(
            api, resources.PODS, field_selector=f"spec.nodeName={node_name}", on_failure=self._failed
        )
        self._workers: dict[str, podworker.PodWorker] = {}
        self._cidr: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        self._next_host = 2  # offset in the podCIDR where the search for a free address starts
        self._stopped = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        await self.runtime.start()
        self.runtime.on_change(self._runtime_changed)
        self.informer.add_handlers(
            on_add=self._seen, on_update=lambda _old, new: self._seen(new), on_delete=self._gone
        )
        await self.informer.start()
        live = {(p.get("metadata") or {}).get("uid") for p in self.informer.store.list()}
        for uid in self.runtime.pods():
            if uid not in live:  # deleted while no agent was watching: stop and remove it
                log.info("pod %s is gone from the API; removing it", uid)
                self._worker(uid, None)
        self._started = True
        log.info("pod manager for node %s started: %d pods", self.node_name, len(self._workers))

    async def stop(self) -> None:
        """Stop watching and syncing; the pods' containers keep running (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.informer.stop()
        workers = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(w.stop() for w in workers))
        await self.runtime.close()
        log.info("pod manager for node %s stopped", self.node_name)

    async def wait(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> PodManager:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _failed(self, exc: BaseException | None) -> None:
        log.error("pod manager: the pod informer died; stopping")
        self._stopped.set()

    # -- events ---------------------------------------------------------------------------------

    def _seen(self, pod: dict[str, Any]) -> None:
        uid = (pod.get("metadata") or {}).get("uid")
        if uid and not self._stopped.is_set():
            self._worker(uid, pod)

    def _gone(self, pod: dict[str, Any]) -> None:
        worker = self._workers.get((pod.get("metadata") or {}).get("uid", ""))
        if worker is not None:
            worker.update(None)

    def _runtime_changed(self, uid: str) -> None:
        worker = self._workers.get(uid)
        if worker is not None:
            worker.wake()

    def _worker(self, uid: str, pod: dict[str, Any] | None) -> None:
        worker = self._workers.get(uid)
        if worker is None:
            worker = self._workers[uid] = podworker.PodWorker(self, uid, pod)
            worker.start()
        else:
            worker.update(pod)

    def worker_done(self, uid: str) -> None:
        self._workers.pop(uid, None)
        self.backoff.forget(uid)

    def cached(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.informer.store.get(store.key_of({"metadata": {"namespace": namespace, "name": name}}))

    # -- addresses ------------------------------------------------------------------------------

    async def pod_ip(self, pod: Mapping[str, Any]) -> str:
        """The node's IP for hostNetwork pods, else a stable free address in the node's podCIDR."""
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.node_ip
        uid = pod["metadata"]["uid"]
        sandbox = self.runtime.sandbox(uid)
        if sandbox is not None:
            return sandbox.ip
        cidr = await self._pod_cidr()
        if cidr is None:
            log.info("node %s has no podCIDR yet; pod %s gets the node's address", self.node_name, uid)
            return self.node_ip
        used = self._used_ips(exclude=uid)
        current = (pod.get("status") or {}).get("podIP")
        if current and current not in used and ipaddress.ip_address(current) in cidr:
            return current
        # Offsets 2 .. size-2: .0 is the network, .1 the bridge's (as with flannel), the last the
        # broadcast. The search goes on from the last address given, round the range, so a burst of
        # pods does not rescan the taken ones and a freed address is not reused at once.
        first, last = 2, cidr.num_addresses - 2
        span = last - first + 1
        for step in range(max(span, 0)):
            offset = first + (self._next_host - first + step) % span
            text = str(cidr.network_address + offset)
            if text not in used:
                self._next_host = offset + 1
                return text
        raise types.ContainerError("CreatePodSandboxError", f"no free address left in {cidr}")

    def _used_ips(self, *, exclude: str) -> set[str]:
        used = set()
        for uid in self.runtime.pods():
            sandbox = self.runtime.sandbox(uid)
            if sandbox is not None and uid != exclude:
                used.add(sandbox.ip)
        for pod in self.informer.store.list():
            if pod["metadata"].get("uid") != exclude and (pod.get("status") or {}).get("podIP"):
                used.add(pod["status"]["podIP"])
        return used

    async def _pod_cidr(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if self._cidr is None:
            try:
                node = await self.api.get(resources.NODES, self.node_name)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
                return None
            cidr = (node.get("spec") or {}).get("podCIDR")
            if cidr:
                self._cidr = ipaddress.ip_network(cidr, strict=False)
        return self._cidr

    def now(self) -> float:
        return time.time()
