"""What isolation this machine allows a container: namespaces when root, cgroup limits when delegated.

As root, each container gets its own pid, mount, uts and ipc namespaces (the shim calls
``unshare(2)``), and its cpu/memory limits go into a cgroup laid out as the kubelet's cgroupfs
driver does under K3s: ``kubepods/[burstable|besteffort/]pod<uid>/<container>``. cgroup v2 is used
when the unified hierarchy is mounted at the cgroup root with the cpu and memory controllers;
otherwise the v1 ``memory`` and ``cpu`` hierarchies when they are writable; otherwise no limits
(logged once at INFO: a container, a CI runner or a user session often delegates no cgroups).
Unprivileged, containers are plain processes in their own session, killed as a group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from services.machinery import quantity

log = logging.getLogger(__name__)

CgroupMode = Literal["v2", "v1", "none"]
CFS_PERIOD = 100_000  # microseconds, the kernel's and kubelet's default period


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    memory: int | None = None  # bytes
    cpu_millis: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Cgroup:
    directories: list[str]  # every hierarchy's leaf the container joins
    oom_files: list[str]  # files whose ``oom_kill`` counters tell an OOM kill


def detect_mode(root: Path) -> CgroupMode:
    """The cgroup flavour usable for limits here (needs root and a writable hierarchy)."""
    if os.geteuid() != 0:
        return "none"
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        wanted = {"cpu", "memory"}
        if wanted <= set(controllers.read_text().split()) and _writable(root / "kubepods"):
            return "v2"
        return "none"
    if _writable(root / "memory" / "kubepods") and _writable(root / "cpu" / "kubepods"):
        return "v1"
    return "none"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


class Isolation:
    """Decides namespaces and cgroups for the process runtime, once per runtime."""

    def __init__(
        self,
        *,
        namespaces: bool | None = None,
        cgroups: bool = True,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
    ) -> None:
        self.namespaces = os.geteuid() == 0 if namespaces is None else namespaces
        self.cgroup_root = cgroup_root
        self.mode: CgroupMode = detect_mode(cgroup_root) if cgroups else "none"
        if self.mode == "none":
            log.info("cgroups: no writable cpu/memory hierarchy under %s; containers run without limits",
                     cgroup_root)  # fmt: skip
        else:
            log.info("cgroups: %s limits under %s", self.mode, cgroup_root)
        if self.mode == "v2":
            self._enable(cgroup_root)
            self._enable(cgroup_root / "kubepods")

    def _relative(self, pod_uid: str, qos: str) -> Path:
        tier = "" if qos == "Guaranteed" else qos.lower()
        return Path("kubepods", tier, f"pod{pod_uid}")

    def _enable(self, directory: Path) -> None:
        with contextlib.suppress(OSError):
            (directory / "cgroup.subtree_control").write_text("+cpu +memory")

    def container(self, pod_uid: str, name: str, *, qos: str, limits: Limits) -> Cgroup:
        """Create (or reuse) the container's cgroup with its limits; empty when cgroups are off."""
        if self.mode == "none":
            return Cgroup([], [])
        try:
            return (
                self._v2(pod_uid, name, qos, limits)
                if self.mode == "v2"
                else self._v1(pod_uid, name, qos, limits)
            )
        except OSError as exc:
            log.warning("cgroup for %s/%s: %s; running without limits", pod_uid, name, exc)
            return Cgroup([], [])

    def _v2(self, pod_uid: str, name: str, qos: str, limits: Limits) -> Cgroup:
        parts = self._relative(pod_uid, qos).parts
        directory = self.cgroup_root
        for part in parts:
            directory = directory / part
            directory.mkdir(exist_ok=True)
            self._enable(directory)
        leaf = directory / name
        leaf.mkdir(exist_ok=True)
        (leaf / "memory.max").write_text(str(limits.memory) if limits.memory else "max")
        quota = limits.cpu_millis * CFS_PERIOD // 1000 if limits.cpu_millis else "max"
        (leaf / "cpu.max").write_text(f"{quota} {CFS_PERIOD}")
        return Cgroup([str(leaf)], [str(leaf / "memory.events")])

    def _v1(self, pod_uid: str, name: str, qos: str, limits: Limits) -> Cgroup:
        memory = self.cgroup_root / "memory" / self._relative(pod_uid, qos) / name
        cpu = self.cgroup_root / "cpu" / self._relative(pod_uid, qos) / name
        memory.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        (memory / "memory.limit_in_bytes").write_text(str(limits.memory) if limits.memory else "-1")
        (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD))
        quota = limits.cpu_millis * CFS_PERIOD // 1000 if limits.cpu_millis else -1
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        return Cgroup([str(memory), str(cpu)], [str(memory / "memory.oom_control")])

    def remove_pod(self, pod_uid: str) -> bool:
        """Remove the pod's cgroups (leaves first); a cgroup still holding processes stays.
        True when none is left."""
        if self.mode == "none":
            return True
        left = False
        roots = (
            [self.cgroup_root]
            if self.mode == "v2"
            else [self.cgroup_root / "memory", self.cgroup_root / "cpu"]
        )
        for root in roots:
            for qos in ("Guaranteed", "Burstable", "BestEffort"):
                pod_dir = root / self._relative(pod_uid, qos)
                try:
                    # scandir's entries know their type: no stat per control file of the cgroup
                    leaves = [entry.path for entry in os.scandir(pod_dir) if entry.is_dir(follow_symlinks=False)]
                except OSError:
                    continue  # not there (or not ours)
                for leaf in leaves:
                    with contextlib.suppress(OSError):
                        os.rmdir(leaf)
                try:
                    os.rmdir(pod_dir)
                except OSError:
                    left = True
        return not left


def qos_class(pod: Mapping[str, Any]) -> str:
    """The pod's QoS class, by the kubelet's rule over requests and limits of cpu and memory."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    requests: list[dict[str, Any]] = []
    limits: list[dict[str, Any]] = []
    for container in containers:
        resources = container.get("resources") or {}
        requests.append(
            {k: v for k, v in (resources.get("requests") or {}).items() if k in ("cpu", "memory")}
        )
        limits.append({k: v for k, v in (resources.get("limits") or {}).items() if k in ("cpu", "memory")})
    if not any(requests) and not any(limits):
        return "BestEffort"
    for request, limit in zip(requests, limits, strict=True):
        if set(limit) != {"cpu", "memory"}:
            return "Burstable"
        if any(str(request.get(k, limit[k])) != str(limit[k]) for k in limit):
            return "Burstable"
    return "Guaranteed"


def limits_of(container: Mapping[str, Any]) -> Limits:
    limits = (container.get("resources") or {}).get("limits") or {}
    memory = limits.get("memory")
    cpu = limits.get("cpu")
    return Limits(
        memory=quantity.value(memory) if memory is not None else None,
        cpu_millis=quantity.milli_value(cpu) if cpu is not None else None,
    )
