"""One pod's worker: the kubelet's ``SyncPod`` in small, for the pods ``pods.PodManager`` watches.

Each worker is a named task (owned by the manager) that syncs its pod whenever woken: by the
informer, by the runtime (a container exited), by a probe, or by a backoff timer. One worker per
pod means a pod's syncs never overlap, and a slow pod (a long grace period) never holds up the
others. See ``pods`` for what a sync does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.agent import envvars, probes, status, volumes
from services.agent.runtimes import types
from services.client import errors, resources
from services.machinery import tasks

if TYPE_CHECKING:
    from services.agent.pods import PodManager

log = logging.getLogger(__name__)


def go_duration(seconds: float) -> str:
    """Go's time.Duration text, as the kubelet's back-off messages print it (10s, 1m20s, 5m0s)."""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:g}s"
    return f"{whole // 60}m{whole % 60}s"


class PodWorker:
    """Syncs one pod whenever woken; its task is owned by the ``PodManager``."""

    def __init__(self, manager: PodManager, uid: str, pod: dict[str, Any] | None) -> None:
        self.m = manager
        self.uid = uid
        self.pod = pod
        self.deleted = pod is None
        self.finalised = False  # the final delete was sent
        self.waiting: dict[str, tuple[str, str]] = {}  # container -> (reason, message)
        self.volumes: dict[str, Path] | None = None
        self.probers: dict[str, tuple[int, probes.Prober, asyncio.Task[Any]]] = {}
        self._wake = asyncio.Event()
        self._wake.set()
        self._next: float | None = None  # monotonic time of a timed wake (backoff)
        self._last_sent: dict[str, Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        md = (pod or {}).get("metadata") or {}
        self.label = f"{md.get('namespace', '?')}/{md.get('name', uid)}"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"pod worker {self.label}")

    def update(self, pod: dict[str, Any] | None) -> None:
        if pod is None:
            self.deleted = True
        else:
            self.pod = pod
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def _wake_in(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self._next = deadline if self._next is None else min(self._next, deadline)

    async def stop(self) -> None:
        """Stop syncing (containers keep running)."""
        self._cancel_probers()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})  # our own cancellation, if any, still propagates

    async def _run(self) -> None:
        while True:
            timeout = self.m.settings.resync
            if self._next is not None:
                timeout = min(timeout, max(self._next - time.monotonic(), 0.0))
            with contextlib.suppress(TimeoutError):
                await tasks.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            self._next = None
            try:
                if await self._sync():
                    break
            except (errors.ApiError, errors.TransportError) as exc:
                log.warning("pod %s: sync failed: %s; retrying", self.label, exc)
                self._wake_in(1.0)
            except Exception:
                log.exception("pod worker %s failed; retrying", self.label)
                self._wake_in(self.m.settings.backoff_initial)
        self.m.worker_done(self.uid)

    # -- one sync -------------------------------------------------------------------------------

    async def _sync(self) -> bool:
        """Bring the pod one step closer to its spec; True once the worker is finished."""
        if self.deleted or self.pod is None:
            self._cancel_probers()
            await self.m.runtime.remove_pod(self.uid)
            log.info("pod %s removed", self.label)
            return True
        pod = self.pod
        if pod["metadata"].get("deletionTimestamp"):
            if not self.finalised:
                await self._terminate(pod)
            return False
        running = any(i.state is types.State.RUNNING for i in self.m.runtime.containers(self.uid))
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not running:
            self._cancel_probers()
            return False
        try:
            ip = await self.m.pod_ip(pod)
            sandbox = await self.m.runtime.create_sandbox(pod, pod_ip=ip)
        except types.ContainerError as exc:
            self._all_waiting(exc.reason, exc.message)
            return False
        if self.volumes is None:
            try:
                self.volumes = await volumes.prepare(
                    self.m.api, pod, sandbox.directory, host_ip=self.m.node_ip, pod_ip=ip
                )
            except volumes.VolumeError as exc:
                log.info("pod %s: %s", self.label, exc)
                self._all_waiting("ContainerCreating", str(exc))
                await self._report(pod, sandbox)
                self._wake_in(self.m.settings.backoff_initial)
                return False
        await self._containers(pod, sandbox)
        await self._report(pod, sandbox)
        return False

    def _all_waiting(self, reason: str, message: str) -> None:
        spec = self.pod.get("spec") if self.pod else {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            self.waiting[container["name"]] = (reason, message)

    async def _containers(self, pod: dict[str, Any], sandbox: types.PodSandbox) -> None:
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy") or "Always"
        infos = {info.name: info for info in self.m.runtime.containers(self.uid)}
        for container in spec.get("initContainers") or ():
            init_policy = "Never" if policy == "Never" else "OnFailure"
            outcome = await self._step(
                pod, sandbox, container, infos.get(container["name"]), policy=init_policy, init=True
            )
            if outcome != "done":
                return
        for container in spec.get("containers") or ():
            await self._step(pod, sandbox, container, infos.get(container["name"]), policy=policy, init=False)

    async def _step(
        self, pod: dict[str, Any], sandbox: types.PodSandbox, container: dict[str, Any],
        info: types.ContainerInfo | None, *, policy: str, init: bool,
    ) -> str:  # fmt: skip
        """Start, keep, kill or restart one container: "running", "done", "failed" or "waiting"."""
        name = container["name"]
        if info is None:
            return await self._start(pod, sandbox, container, attempt=0)
        if info.state is types.State.RUNNING:
            prober = None if init else self._prober(container, info)
            if prober is None or not prober.failed:
                return "running"
            grace = float(
                (pod.get("spec") or {}).get("terminationGracePeriodSeconds", self.m.settings.default_grace)
            )
            log.info(
                "pod %s: container %s failed its %s probe; killing it",
                self.label,
                name,
                prober.failed.lower(),
            )
            self._drop_prober(name)
            await self.m.runtime.stop_container(self.uid, name, grace=grace)
            info = next(i for i in self.m.runtime.containers(self.uid) if i.name == name)
        self._drop_prober(name)
        ok = info.exit_code == 0
        restart = not ok if init else (policy == "Always" or (policy == "OnFailure" and not ok))
        if policy == "Never" or not restart:
            return "done" if ok or not init else "failed"
        key, now = (self.uid, name), self.m.now()
        left = self.m.backoff.remaining(key, since=info.finished_at or now, now=now)
        if left > 0:
            delay = go_duration(self.m.backoff.delay(key))
            md = pod["metadata"]
            self.waiting[name] = ("CrashLoopBackOff", f"back-off {delay} restarting failed container={name} "
                                  f"pod={md['name']}_{md['namespace']}({self.uid})")  # fmt: skip
            self._wake_in(left)
            return "waiting"
        self.m.backoff.step(key, now=now)
        return await self._start(pod, sandbox, container, attempt=info.attempt + 1)

    async def _start(
        self, pod: dict[str, Any], sandbox: types.PodSandbox, container: dict[str, Any], *, attempt: int
    ) -> str:
        name = container["name"]
        try:
            fetch = envvars.fetcher(self.m.api)
            env = await envvars.resolve(
                pod, container, fetch=fetch, host_ip=self.m.node_ip, pod_ip=sandbox.ip
            )
            mounts = volumes.mounts(container, self.volumes or {})
            info = await self.m.runtime.start_container(
                sandbox, pod, envvars.expand_command(container, env), attempt=attempt, env=env, mounts=mounts
            )
        except (envvars.EnvError, volumes.VolumeError) as exc:
            self.waiting[name] = ("CreateContainerConfigError", str(exc))
            self._wake_in(self.m.settings.backoff_initial)
            return "waiting"
        except types.ContainerError as exc:
            self.waiting[name] = (exc.reason, exc.message)
            self._wake_in(self.m.settings.backoff_initial)
            return "waiting"
        self.waiting.pop(name, None)
        log.info("pod %s: container %s started (attempt %d)", self.label, name, attempt)
        if info.state is types.State.RUNNING:
            return "running"
        self.wake()  # it could not start: the next sync applies the restart policy
        return "waiting"

    # -- probes ---------------------------------------------------------------------------------

    def _prober(self, container: dict[str, Any], info: types.ContainerInfo) -> probes.Prober:
        name = container["name"]
        current = self.probers.get(name)
        if current is not None and current[0] == info.attempt:
            return current[1]
        self._drop_prober(name)
        prober = probes.Prober(self.m.runtime, self.uid, container, on_change=self.wake)
        task = asyncio.get_running_loop().create_task(prober.run(), name=f"probes {self.label}/{name}")
        task.add_done_callback(_log_failure)
        self.probers[name] = (info.attempt, prober, task)
        return prober

    def _drop_prober(self, name: str) -> None:
        entry = self.probers.pop(name, None)
        if entry is not None:
            entry[2].cancel()

    def _cancel_probers(self) -> None:
        for name in list(self.probers):
            self._drop_prober(name)

    # -- status and termination -----------------------------------------------------------------

    def _views(self, pod: Mapping[str, Any]) -> dict[str, status.ContainerView]:
        spec = pod.get("spec") or {}
        infos = {info.name: info for info in self.m.runtime.containers(self.uid)}
        inits = {c["name"] for c in spec.get("initContainers") or ()}
        views = {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            name = container["name"]
            info = infos.get(name)
            running = info is not None and info.state is types.State.RUNNING
            entry = self.probers.get(name)
            prober = entry[1] if entry is not None and info is not None and entry[0] == info.attempt else None
            started = running and (prober.started if prober else "startupProbe" not in container)
            ready = (
                started
                and name not in inits
                and (prober.ready if prober else "readinessProbe" not in container)
            )
            views[name] = status.ContainerView(
                info=info, previous=self.m.runtime.previous(self.uid, name),
                waiting=None if running else self.waiting.get(name), ready=ready, started=started,
            )  # fmt: skip
        return views

    async def _report(self, pod: dict[str, Any], sandbox: types.PodSandbox | None) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ip = sandbox.ip if sandbox is not None else ""
        new = status.compute(pod, views=self._views(pod), pod_ip=ip, host_ip=self.m.node_ip,
                             sandbox_ready=sandbox is not None, now=now)  # fmt: skip
        old = pod.get("status") or {}
        if not status.changed(old, new) or (
            self._last_sent is not None and not status.changed(self._last_sent, new)
        ):
            return
        md = pod["metadata"]
        try:
            self.pod = await self.m.api.update(resources.PODS, {**pod, "status": new}, subresource="status")
            self._last_sent = new
        except errors.ApiError as exc:
            if exc.code == 409:  # a newer pod than ours: compute again on top of it
                fresh = await self.m.api.get(resources.PODS, md["name"], namespace=md["namespace"])
                if fresh["metadata"].get("uid") == self.uid:
                    self.pod = fresh
                self.wake()
            elif exc.code != 404:
                raise

    async def _terminate(self, pod: dict[str, Any]) -> None:
        md, spec = pod["metadata"], pod.get("spec") or {}
        grace = md.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", self.m.settings.default_grace)
        self._cancel_probers()
        running = [i.name for i in self.m.runtime.containers(self.uid) if i.state is types.State.RUNNING]
        log.info(
            "pod %s: deleting; stopping %d containers with a grace of %ss", self.label, len(running), grace
        )
        await asyncio.gather(
            *(self.m.runtime.stop_container(self.uid, n, grace=float(grace)) for n in running)
        )
        sandbox = self.m.runtime.sandbox(self.uid)
        if sandbox is not None:
            with contextlib.suppress(errors.ApiError):
                await self._report(self.pod or pod, sandbox)
        try:
            await self.m.api.delete(resources.PODS, md["name"], namespace=md["namespace"], grace_period_seconds=0,
                                    preconditions={"uid": self.uid})  # fmt: skip
        except errors.ApiError as exc:
            if exc.code not in (404, 409):
                raise
        self.finalised = True


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())
