"""The runtime contract: what the pod worker asks of a container runtime, and what it gets back.

The pod worker (``services/agent/pods.py``) owns the kubelet's logic: init containers in order,
restart policy and CrashLoopBackOff, probes, graceful termination, status. A runtime only starts,
stops, inspects and enters containers. Two runtimes implement it: ``process`` (each container a
supervised process; namespaces and cgroups when root) and ``virtual`` (nothing runs; for scale tests).

Identities: a pod is its ``metadata.uid``; a container is (pod uid, container name). Each start of a
container is one *attempt*; ``restart_count`` counts attempts after the first, so a runtime must
keep a container's previous attempt (its exit state and log) until the next one replaces it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class ContainerError(Exception):
    """A container could not be started or entered (the reason is for the pod's status message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # e.g. "CreateContainerError", "RunContainerError", "ErrImageNeverPull"
        self.message = message


class State(enum.Enum):
    CREATED = "created"  # prepared, not started
    RUNNING = "running"
    EXITED = "exited"


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerInfo:
    """One attempt of one container, as the runtime sees it now."""

    pod_uid: str
    name: str
    attempt: int  # 0 for the first start, then 1, 2, ...
    state: State
    container_id: str  # "<runtime>://<id>", e.g. "process://3f2a..."
    image: str
    image_id: str  # never empty: the runtime's notion of the image's identity
    pid: int | None = None
    started_at: float | None = None  # unix time
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""  # for EXITED: "Completed", "Error", "OOMKilled"
    message: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class PodSandbox:
    """Where a pod lives: its directory (volumes, logs) and address."""

    pod_uid: str
    namespace: str
    name: str
    directory: Path
    ip: str  # the pod's IP (host IP for hostNetwork pods and for runtimes without networking)


class ExecSession(Protocol):
    """A command running inside a container, with its standard streams."""

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    def stdout(self) -> AsyncIterator[bytes]: ...

    def stderr(self) -> AsyncIterator[bytes]: ...  # empty when tty

    async def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int: ...  # exit code

    async def kill(self) -> None: ...


ChangeCallback = Callable[[str], None]  # called with a pod uid when one of its containers changes state


class Runtime(Protocol):
    name: str  # nodeInfo.containerRuntimeVersion is f"{name}://{version}"
    version: str

    def on_change(self, callback: ChangeCallback) -> None:
        """Register the pod worker's wake-up; called from the event loop when a container exits."""
        ...

    async def start(self) -> None:
        """Open the runtime and recover what runs from a previous agent process (see ``pods``)."""
        ...

    async def close(self) -> None:
        """Stop watching; containers keep running (an agent restart must not kill pods)."""
        ...

    def sandbox(self, pod_uid: str) -> PodSandbox | None:
        """The pod's sandbox if the runtime has one (its IP is kept across agent restarts)."""
        ...

    def pods(self) -> list[str]:
        """Uids of the pods this runtime knows (running or with exited containers), recovered ones included."""
        ...

    async def create_sandbox(self, pod: Mapping[str, Any], *, pod_ip: str) -> PodSandbox:
        """Prepare the pod's directory and volumes (idempotent: returns the existing sandbox)."""
        ...

    async def start_container(
        self,
        sandbox: PodSandbox,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        *,
        attempt: int,
        env: Mapping[str, str],
        mounts: Sequence[tuple[Path, str, bool]],
    ) -> ContainerInfo:
        """Start one attempt of ``container`` (a pod spec container dict). ``env`` is resolved (valueFrom
        and envFrom already applied); ``mounts`` are (host path, container mountPath, read-only).
        Raises ContainerError when it cannot start."""
        ...

    async def stop_container(self, pod_uid: str, name: str, *, grace: float) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns once it has exited."""
        ...

    def containers(self, pod_uid: str) -> list[ContainerInfo]:
        """The latest attempt of each container of the pod (init containers included)."""
        ...

    def previous(self, pod_uid: str, name: str) -> ContainerInfo | None:
        """The attempt before the latest one, if kept (for lastState and ``logs --previous``)."""
        ...

    async def remove_pod(self, pod_uid: str) -> None:
        """Kill anything left and delete the sandbox, its volumes and logs."""
        ...

    def log_path(self, pod_uid: str, name: str, *, previous: bool = False) -> Path | None:
        """The container's log file: one line per write, ``<RFC3339Nano> <stream> <F|P> <text>`` as CRI
        writes them (stream is stdout/stderr); None when the container never ran."""
        ...

    async def exec(
        self, pod_uid: str, name: str, command: Sequence[str], *, tty: bool, stdin: bool
    ) -> ExecSession:
        """Run ``command`` in the container's context (its root, namespaces, env, working dir)."""
        ...

    async def attach(self, pod_uid: str, name: str, *, stdin: bool) -> ExecSession:
        """Attach to the container's own streams (stdin only when the container was started with stdin)."""
        ...

    async def port_forward(self, pod_uid: str, port: int) -> tuple[Any, Any]:
        """An (asyncio.StreamReader, asyncio.StreamWriter) connected to ``port`` in the pod's network."""
        ...
