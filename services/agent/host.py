"""What the host tells about itself: resources, pressure, identity, and the address to advertise.

Read from ``/proc``, ``/sys`` and ``/etc`` as the kubelet's cadvisor does, each value with a
fallback so that containers and unusual hosts still register (a missing machine id is not a
reason to refuse to run). Capacity is the host's; allocatable subtracts the hard eviction
thresholds, as the kubelet does with K3s's defaults (no system or kube reservations).
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
from pathlib import Path

ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
          "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip
KI = 1024


def os_name() -> str:
    return platform.system().lower() or "linux"


def arch() -> str:
    machine = platform.machine().lower()
    return ARCHES.get(machine, machine or "amd64")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty when unreadable)."""
    values: dict[str, int] = {}
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (KI if len(parts) > 1 and parts[1] == "kB" else 1)
    return values


def disk(path: Path) -> tuple[int, int]:
    """(total, free) bytes of the filesystem holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.total, usage.free


def capacity(*, data_dir: Path, max_pods: int) -> dict[str, str]:
    total_disk, _ = disk(data_dir)
    memory = meminfo().get("MemTotal", 0)
    return {
        "cpu": str(cpu_count()),
        "memory": f"{memory // KI}Ki",
        "ephemeral-storage": f"{total_disk // KI}Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "pods": str(max_pods),
    }


def allocatable(capacity_: dict[str, str], *, memory_threshold: int, disk_percent: float) -> dict[str, str]:
    out = dict(capacity_)
    memory = int(capacity_["memory"].removesuffix("Ki")) * KI
    out["memory"] = f"{max(memory - memory_threshold, 0) // KI}Ki"
    storage = int(capacity_["ephemeral-storage"].removesuffix("Ki")) * KI
    out["ephemeral-storage"] = str(int(storage * (1 - disk_percent / 100)))
    return out


def pressure(*, data_dir: Path, memory_threshold: int, disk_percent: float) -> dict[str, bool]:
    """MemoryPressure, DiskPressure and PIDPressure as the kubelet's hard eviction thresholds see them."""
    info = meminfo()
    available = info.get("MemAvailable", info.get("MemFree", memory_threshold + 1))
    total_disk, free_disk = disk(data_dir)
    return {
        "MemoryPressure": available < memory_threshold,
        "DiskPressure": total_disk > 0 and free_disk * 100 / total_disk < disk_percent,
        "PIDPressure": _pid_pressure(),
    }


def _pid_pressure() -> bool:
    """True when fewer than 10% of the pids are left (the kubelet's pid.available default)."""
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        used = sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())
    except (OSError, ValueError):
        return False
    return used > pid_max * 0.9


def _first_line(*paths: str) -> str:
    for path in paths:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[0].strip()
    return ""


def os_image() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.platform()
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return platform.platform()


def node_info(*, runtime_version: str, kubelet_version: str) -> dict[str, str]:
    machine_id = _first_line("/etc/machine-id", "/var/lib/dbus/machine-id")
    return {
        "machineID": machine_id,
        "systemUUID": _first_line("/sys/class/dmi/id/product_uuid") or machine_id,
        "bootID": _first_line("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": platform.release(),
        "osImage": os_image(),
        "containerRuntimeVersion": runtime_version,
        "kubeletVersion": kubelet_version,
        "kubeProxyVersion": kubelet_version,
        "operatingSystem": os_name(),
        "architecture": arch(),
    }


def address_towards(server: str, *, port: int = 6443) -> str:
    """The local address the kernel would use to reach ``server`` (no packet is sent), else 127.0.0.1."""
    if not server:
        return "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((server, port))
            return sock.getsockname()[0]
    except OSError:
        return "127.0.0.1"
