"""The process runtime: each container attempt is a process under its own shim.

Layout under ``root_dir`` (everything a restarted agent needs to adopt what runs):

    pods/<uid>/sandbox.json                      namespace, name, IP
    pods/<uid>/volumes/<volume>/                 filled by the pod worker (``volumes``)
    pods/<uid>/containers/<name>/<attempt>/      meta.json (image, ids), spec.json (for the shim),
                                                 state.json (pid + start ticks), exit.json, stdin
    pods/<uid>/logs/<name>/<attempt>.log[.N]     CRI log files, rotated; the previous attempt kept

The shim (``shim.py``, in its own session) forks the container and outlives the agent; this class
never is a container's parent. Shims are forked by a resident forker process (``forker.py``,
started with the first container and replaced when it dies), which costs a ``fork`` instead of an
interpreter start per container; when no forker can take a start, the shim is started with
``posix_spawn`` as its own program. The runtime learns of an exit through a pidfd on the shim,
which is its own child only in that fallback (a forked or adopted shim is not), then reads
``exit.json``. A pid is trusted only while ``/proc/<pid>/stat`` shows the recorded start time.

Starts are limited to twice the CPU count at a time, and their file work (directories, spec and
meta files, cgroups) runs in a thread: a burst of pods must not starve the event loop, which the
API server and the scheduler share in the edge profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.agent.runtimes import forker, images, isolation, sessions, shim, types
from services.machinery import tasks

log = logging.getLogger(__name__)

SHIM = Path(shim.__file__)
CGROUP_REMOVE_TRIES = 20  # times 0.1 s
FORKER_EXIT_TIMEOUT = 2.0  # seconds a closed forker gets to exit before SIGKILL


@dataclasses.dataclass
class _Attempt:
    info: types.ContainerInfo
    directory: Path
    log_path: Path
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    watch_fd: int | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str = "/"
    root: str = ""
    stdin: bool = False


@dataclasses.dataclass
class _Pod:
    sandbox: types.PodSandbox
    attempts: dict[str, list[_Attempt]] = dataclasses.field(default_factory=dict)  # last two per name


def _alive(pid: int | None, ticks: int | None) -> bool:
    if not pid:
        return False
    try:
        return shim.start_ticks(pid) == ticks
    except (OSError, ValueError, IndexError):
        return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _make_sandbox(directory: Path, data: Mapping[str, Any]) -> None:
    for sub in ("volumes", "containers", "logs"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    _write_json(directory / "sandbox.json", data)


class ProcessRuntime:
    """``types.Runtime`` for plain processes (namespaces and cgroups when root)."""

    name = "process"
    version = "0.1.0"

    def __init__(
        self, root_dir: Path, *, namespaces: bool | None = None, cgroups: bool = True,
        log_max_size: int = 10 * 1024 * 1024, log_max_files: int = 5, python: str = sys.executable,
        start_concurrency: int | None = None,
    ) -> None:  # fmt: skip
        """``start_concurrency``: container starts in flight at once. The default, twice the CPU
        count, keeps a burst's shims from crowding out the control plane; a start holds its slot
        while the event loop reads the shim's answer too, so one per CPU left starts queueing
        behind a busy loop (measured: bound-to-Running 1-2 s slower in a burst of 100)."""
        self.root_dir = Path(root_dir)
        self._namespaces = namespaces
        self._cgroups = cgroups
        self._log_max_size, self._log_max_files = log_max_size, log_max_files
        self._python = python
        self._pods: dict[str, _Pod] = {}
        self._callbacks: list[types.ChangeCallback] = []
        self.isolation: isolation.Isolation | None = None
        self.forker = forker.Client(python, tag=str(self.root_dir), log=log)
        self._starts = asyncio.Semaphore(start_concurrency or 2 * (os.cpu_count() or 1))

    # -- lifecycle ------------------------------------------------------------------------------

    def on_change(self, callback: types.ChangeCallback) -> None:
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Recover what a previous agent left running (idempotent: a second call does nothing)."""
        if self.isolation is not None:
            return
        (self.root_dir / "pods").mkdir(parents=True, exist_ok=True)
        (self.root_dir / "images").mkdir(parents=True, exist_ok=True)
        self.isolation = isolation.Isolation(namespaces=self._namespaces, cgroups=self._cgroups)
        for pod_dir in sorted((self.root_dir / "pods").iterdir()):
            self._recover_pod(pod_dir)
        log.info("process runtime: %d pods recovered under %s", len(self._pods), self.root_dir)

    async def close(self) -> None:
        """Stop watching exits and the forker; the containers and their shims keep running
        (``start`` adopts them)."""
        loop = asyncio.get_running_loop()
        for pod in self._pods.values():
            for attempts in pod.attempts.values():
                for attempt in attempts:
                    self._unwatch(attempt, loop)
        self._pods.clear()
        self.isolation = None
        for pid in self.forker.close():
            await asyncio.to_thread(forker.reap, pid, timeout=FORKER_EXIT_TIMEOUT)

    # -- recovery -------------------------------------------------------------------------------

    def _recover_pod(self, pod_dir: Path) -> None:
        data = _read_json(pod_dir / "sandbox.json")
        if data is None:
            return
        sandbox = types.PodSandbox(pod_dir.name, data["namespace"], data["name"], pod_dir, data["ip"])
        pod = self._pods[pod_dir.name] = _Pod(sandbox)
        containers = pod_dir / "containers"
        for container_dir in sorted(containers.iterdir()) if containers.is_dir() else ():
            numbers = sorted(int(p.name) for p in container_dir.iterdir() if p.name.isdigit())
            for number in numbers[-2:]:
                attempt = self._load_attempt(container_dir / str(number))
                if attempt is not None:
                    pod.attempts.setdefault(container_dir.name, []).append(attempt)

    def _load_attempt(self, directory: Path) -> _Attempt | None:
        meta = _read_json(directory / "meta.json")
        if meta is None:
            return None
        info = types.ContainerInfo(**{**meta["info"], "state": types.State(meta["info"]["state"])})
        attempt = _Attempt(info, directory, Path(meta["log_path"]), env=meta.get("env", {}),
                           cwd=meta.get("cwd", "/"), root=meta.get("root", ""), stdin=meta.get("stdin", False))  # fmt: skip
        state = _read_json(directory / "state.json")
        if (directory / "exit.json").exists() or state is None:
            self._finish(attempt)
        elif _alive(state.get("pid"), state.get("start_ticks")):
            attempt.info = dataclasses.replace(attempt.info, state=types.State.RUNNING, pid=state["pid"],
                                               started_at=state.get("started_at"))  # fmt: skip
            if _shim_alive(state):
                self._watch(attempt, state["shim_pid"], reap=False, ticks=state.get("shim_start_ticks"))
            else:
                self._watch(attempt, state["pid"], reap=False, ticks=state.get("start_ticks"))
        else:
            self._finish(attempt)
        return attempt

    # -- exits ----------------------------------------------------------------------------------

    def _watch(self, attempt: _Attempt, pid: int, *, reap: bool, ticks: int | None = None) -> None:
        """Learn of the shim's exit; ``reap`` it when it is our own child (spawned, not forked
        or adopted: waiting on any other pid could steal a recycled pid's status). With ``ticks``
        (its start time), a pid that names another process by now counts as exited."""
        loop = asyncio.get_running_loop()
        try:
            attempt.watch_fd = os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(self._exited, attempt, pid, reap)
            return
        if ticks is not None and not _alive(pid, ticks):
            loop.call_soon(self._exited, attempt, pid, reap)
            return
        loop.add_reader(attempt.watch_fd, self._exited, attempt, pid, reap)

    def _unwatch(self, attempt: _Attempt, loop: asyncio.AbstractEventLoop) -> None:
        if attempt.watch_fd is not None:
            loop.remove_reader(attempt.watch_fd)
            os.close(attempt.watch_fd)
            attempt.watch_fd = None

    def _exited(self, attempt: _Attempt, pid: int, reap: bool) -> None:
        self._unwatch(attempt, asyncio.get_running_loop())
        if reap:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self._finish(attempt)
        for callback in self._callbacks:
            callback(attempt.info.pod_uid)

    def _finish(self, attempt: _Attempt) -> None:
        """Mark the attempt exited from its exit.json (or as unknown when the shim left none)."""
        data = _read_json(attempt.directory / "exit.json") or {
            "exit_code": 137, "reason": "ContainerStatusUnknown", "finished_at": time.time(),
            "message": "The container could not be located when the pod was terminated",
        }  # fmt: skip
        attempt.info = dataclasses.replace(
            attempt.info, state=types.State.EXITED, exit_code=data["exit_code"], reason=data.get("reason", ""),
            message=data.get("message", ""), finished_at=data.get("finished_at"),
        )  # fmt: skip
        attempt.exited.set()

    # -- sandboxes ------------------------------------------------------------------------------

    def pods(self) -> list[str]:
        return list(self._pods)

    def sandbox(self, pod_uid: str) -> types.PodSandbox | None:
        pod = self._pods.get(pod_uid)
        return pod.sandbox if pod else None

    async def create_sandbox(self, pod: Mapping[str, Any], *, pod_ip: str) -> types.PodSandbox:
        md = pod["metadata"]
        existing = self._pods.get(md["uid"])
        if existing is not None:
            return existing.sandbox
        directory = self.root_dir / "pods" / md["uid"]
        await asyncio.to_thread(
            _make_sandbox, directory, {"namespace": md["namespace"], "name": md["name"], "ip": pod_ip}
        )
        existing = self._pods.get(md["uid"])  # a concurrent call may have made it meanwhile
        if existing is not None:
            return existing.sandbox
        sandbox = types.PodSandbox(md["uid"], md["namespace"], md["name"], directory, pod_ip)
        self._pods[md["uid"]] = _Pod(sandbox)
        return sandbox

    async def remove_pod(self, pod_uid: str) -> None:
        pod = self._pods.get(pod_uid)
        if pod is not None:
            await asyncio.gather(*(self.stop_container(pod_uid, name, grace=0) for name in pod.attempts))
            await self.close_pod(pod_uid)
        # A killed process may take a moment to leave its cgroup, which cannot be removed before.
        # (cgroupfs walks and rmdirs block: in a thread.)
        isolation_ = self.isolation
        for _ in range(CGROUP_REMOVE_TRIES if isolation_ is not None and isolation_.mode != "none" else 0):
            if await asyncio.to_thread(isolation_.remove_pod, pod_uid):  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(shutil.rmtree, self.root_dir / "pods" / pod_uid, ignore_errors=True)

    async def close_pod(self, pod_uid: str) -> None:
        pod = self._pods.pop(pod_uid, None)
        loop = asyncio.get_running_loop()
        for attempts in pod.attempts.values() if pod else ():
            for attempt in attempts:
                self._unwatch(attempt, loop)

    # -- containers -----------------------------------------------------------------------------

    def containers(self, pod_uid: str) -> list[types.ContainerInfo]:
        pod = self._pods.get(pod_uid)
        return [attempts[-1].info for attempts in pod.attempts.values()] if pod else []

    def previous(self, pod_uid: str, name: str) -> types.ContainerInfo | None:
        pod = self._pods.get(pod_uid)
        attempts = pod.attempts.get(name, []) if pod else []
        return attempts[-2].info if len(attempts) > 1 else None

    def _latest(self, pod_uid: str, name: str) -> _Attempt | None:
        pod = self._pods.get(pod_uid)
        attempts = pod.attempts.get(name) if pod else None
        return attempts[-1] if attempts else None

    async def start_container(
        self, sandbox: types.PodSandbox, pod: Mapping[str, Any], container: Mapping[str, Any], *,
        attempt: int, env: Mapping[str, str], mounts: Sequence[tuple[Path, str, bool]],
    ) -> types.ContainerInfo:  # fmt: skip
        assert self.isolation is not None, "start() first"
        record = self._pods[sandbox.pod_uid]
        async with self._starts:
            started = await asyncio.to_thread(
                self._prepare, sandbox, pod, container, attempt=attempt, env=env, mounts=mounts
            )
            attempts = record.attempts.setdefault(container["name"], [])
            attempts.append(started)
            del attempts[:-2]
            await self._launch(started)
        return started.info

    def _prepare(
        self, sandbox: types.PodSandbox, pod: Mapping[str, Any], container: Mapping[str, Any], *,
        attempt: int, env: Mapping[str, str], mounts: Sequence[tuple[Path, str, bool]],
    ) -> _Attempt:  # fmt: skip
        """The attempt's files, written in a thread: directories, cgroup, meta.json, spec.json."""
        name = container["name"]
        image = images.resolve(self.root_dir / "images", container.get("image", ""))
        argv = images.argv(image, container)
        directory = sandbox.directory / "containers" / name / str(attempt)
        log_dir = sandbox.directory / "logs" / name
        self._clean_attempts(directory.parent, log_dir, attempt)
        directory.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        spec, full_env = self._spec(sandbox, pod, container, image, argv, env, mounts, directory)
        spec["log_path"] = str(log_dir / f"{attempt}.log")
        info = types.ContainerInfo(
            sandbox.pod_uid, name, attempt, types.State.CREATED,
            container_id=f"process://{sandbox.pod_uid}-{name}-{attempt}", image=container.get("image", ""),
            image_id=image.image_id,
        )  # fmt: skip
        started = _Attempt(info, directory, Path(spec["log_path"]), env=full_env, cwd=spec["cwd"],
                           root=spec["root"] if spec["chroot"] else "", stdin=spec["stdin"])  # fmt: skip
        self._save_meta(started)
        _write_json(directory / "spec.json", spec)
        return started

    def _clean_attempts(self, container_dir: Path, log_dir: Path, attempt: int) -> None:
        """Keep only the previous attempt's files (``logs --previous``) beside the new one."""
        for parent in (container_dir, log_dir):
            for path in parent.iterdir() if parent.is_dir() else ():
                number = path.name.split(".", 1)[0]
                if number.isdigit() and int(number) < attempt - 1:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()

    def _spec(
        self, sandbox: types.PodSandbox, pod: Mapping[str, Any], container: Mapping[str, Any],
        image: images.Image, argv: list[str], env: Mapping[str, str],
        mounts: Sequence[tuple[Path, str, bool]], directory: Path,
    ) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
        assert self.isolation is not None
        namespaces = self.isolation.namespaces
        chroot = image.rootfs is not None and namespaces
        full_env = {**images.base_env(image), "HOSTNAME": sandbox.name, **env}
        if image.rootfs is not None and not chroot:  # unprivileged: the image's binaries first in PATH
            rootfs_path = ":".join(f"{image.rootfs}{p}" for p in full_env["PATH"].split(":"))
            full_env["PATH"] = f"{rootfs_path}:{full_env['PATH']}"
        if namespaces:
            full_env["K3S_MOUNT_ROOT"] = ""
        else:
            full_env["K3S_MOUNT_ROOT"] = str(self._link_mounts(directory / "mounts", mounts))
        cwd = container.get("workingDir") or image.working_dir or "/"
        if image.rootfs is not None and not chroot:
            cwd = f"{image.rootfs}{cwd}"
        qos = isolation.qos_class(pod)
        limits = isolation.limits_of(container)
        cgroup = self.isolation.container(sandbox.pod_uid, container["name"], qos=qos, limits=limits)
        stdin = bool(container.get("stdin"))
        if stdin and not (directory / "stdin").exists():
            os.mkfifo(directory / "stdin", 0o600)
        spec = {
            "argv": argv, "env": full_env, "cwd": cwd, "root": str(image.rootfs or ""), "chroot": chroot,
            "hostname": sandbox.name[:63], "namespaces": namespaces,
            "mounts": [[str(h), t, ro] for h, t, ro in mounts] if namespaces else [],
            "cgroups": cgroup.directories, "oom_files": cgroup.oom_files,
            "stdin": stdin, "stdin_path": str(directory / "stdin"),
            "state_path": str(directory / "state.json"), "exit_path": str(directory / "exit.json"),
            "shim_log": str(directory / "shim.log"),
            "log_max_size": self._log_max_size, "log_max_files": self._log_max_files,
        }  # fmt: skip
        return spec, full_env

    def _link_mounts(self, base: Path, mounts: Sequence[tuple[Path, str, bool]]) -> Path:
        """Without a mount namespace, ``$K3S_MOUNT_ROOT<mountPath>`` is a symlink to the volume."""
        base.mkdir(parents=True, exist_ok=True)
        for host, target, _ in mounts:
            link = base / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(host)
        return base

    def _save_meta(self, attempt: _Attempt) -> None:
        info = dataclasses.asdict(attempt.info) | {"state": types.State.CREATED.value}
        meta = {"info": info, "log_path": str(attempt.log_path), "env": attempt.env, "cwd": attempt.cwd,
                "root": attempt.root, "stdin": attempt.stdin}  # fmt: skip
        _write_json(attempt.directory / "meta.json", meta)

    async def _launch(self, attempt: _Attempt) -> None:
        directory = attempt.directory
        answer, own = await self._start_shim(directory / "spec.json")
        if not answer and own is None and not self.forker.alive() and not (directory / "state.json").exists():
            answer, own = await self._start_shim(directory / "spec.json")  # the forker died holding it
        state = _read_json(directory / "state.json")
        if answer.startswith(b"ok") and state is not None:
            attempt.info = dataclasses.replace(attempt.info, state=types.State.RUNNING, pid=state["pid"],
                                               started_at=state["started_at"])  # fmt: skip
            self._watch(
                attempt, own or state["shim_pid"], reap=own is not None, ticks=state.get("shim_start_ticks")
            )
            return
        message = answer.decode(errors="replace").removeprefix("error ").strip() or "the shim failed to start"
        log.info("container %s/%s failed to start: %s", attempt.info.pod_uid, attempt.info.name, message)
        if own is not None:
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, own, 0)
        now = time.time()
        _write_json(directory / "exit.json", {"exit_code": 128, "reason": "StartError", "message": message,
                                              "finished_at": now})  # fmt: skip
        attempt.info = dataclasses.replace(attempt.info, started_at=now)
        self._finish(attempt)

    async def _start_shim(self, spec_path: Path) -> tuple[bytes, int | None]:
        """Have a shim start the spec's container and return its answer, with the shim's pid when it
        is our own child (spawned because no forker could take it)."""
        read_fd, write_fd = os.pipe()
        own = None
        try:
            if not self.forker.request(str(spec_path), write_fd):
                own = self._spawn_shim(spec_path, write_fd)
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            return await _read_until_eof(read_fd), own
        finally:
            os.close(read_fd)

    def _spawn_shim(self, spec_path: Path, answer_fd: int) -> int:
        """The fallback: the shim as its own program (``posix_spawn`` returns once it is exec'ed)."""
        # -I -S: the shim needs only the standard library; skipping site halves its start-up.
        return os.posix_spawn(
            self._python, [self._python, "-I", "-S", str(SHIM), str(spec_path)], os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, answer_fd, 1), (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
            setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )  # fmt: skip

    async def stop_container(self, pod_uid: str, name: str, *, grace: float) -> None:
        attempt = self._latest(pod_uid, name)
        if attempt is None or attempt.info.state is not types.State.RUNNING:
            return
        self._signal(attempt, signal.SIGTERM)
        try:
            await tasks.wait_for(attempt.exited.wait(), timeout=max(grace, 0))
        except TimeoutError:
            self._signal(attempt, signal.SIGKILL)
            await attempt.exited.wait()

    def _signal(self, attempt: _Attempt, sig: int) -> None:
        state = _read_json(attempt.directory / "state.json") or {}
        if not _alive(state.get("pid"), state.get("start_ticks")):
            return
        for send in (lambda: os.killpg(state["pid"], sig), lambda: os.kill(state["pid"], sig)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send()

    # -- streams --------------------------------------------------------------------------------

    def log_path(self, pod_uid: str, name: str, *, previous: bool = False) -> Path | None:
        pod = self._pods.get(pod_uid)
        attempts = pod.attempts.get(name, []) if pod else []
        wanted = (
            attempts[-2]
            if previous and len(attempts) > 1
            else (attempts[-1] if attempts and not previous else None)
        )
        return wanted.log_path if wanted else None

    async def exec(
        self, pod_uid: str, name: str, command: Sequence[str], *, tty: bool, stdin: bool
    ) -> types.ExecSession:
        attempt = self._latest(pod_uid, name)
        if attempt is None or attempt.info.state is not types.State.RUNNING or attempt.info.pid is None:
            raise types.ContainerError("ContainerNotRunning", f'container "{name}" is not running')
        argv, cwd = list(command), attempt.cwd
        if self.isolation is not None and self.isolation.namespaces:
            argv = ["nsenter", f"--target={attempt.info.pid}", "--mount", "--uts", "--ipc", "--pid",
                    "--root", f"--wd={attempt.cwd}", "--", *argv]  # fmt: skip
            cwd = None
        try:
            return await sessions.ProcessSession.start(argv, env=attempt.env, cwd=cwd, tty=tty, stdin=stdin)
        except OSError as exc:
            raise types.ContainerError("ExecError", f"exec {command[0] if command else ''}: {exc}") from exc

    async def attach(self, pod_uid: str, name: str, *, stdin: bool) -> types.ExecSession:
        attempt = self._latest(pod_uid, name)
        if attempt is None:
            raise types.ContainerError("ContainerNotFound", f'container "{name}" not found')
        stdin_path = attempt.directory / "stdin" if stdin and attempt.stdin else None
        return sessions.AttachSession(attempt.log_path, stdin_path=stdin_path, running=attempt.exited)

    async def port_forward(self, pod_uid: str, port: int) -> tuple[Any, Any]:
        """No network namespace: the pod's ports are the host's loopback ports."""
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            raise types.ContainerError("PortForwardError", f"connect to port {port}: {exc}") from exc


def _shim_alive(state: Mapping[str, Any]) -> bool:
    pid = state.get("shim_pid")
    if "shim_start_ticks" in state:
        return _alive(pid, state["shim_start_ticks"])
    return bool(pid) and Path(f"/proc/{pid}").exists() and _cmdline_is_shim(pid)  # an older shim's state


def _cmdline_is_shim(pid: int) -> bool:
    try:
        return SHIM.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def _read_until_eof(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while chunk := await sessions.read_fd(fd):
        data += chunk
    return data
