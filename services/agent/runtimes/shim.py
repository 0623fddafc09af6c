"""The container shim: one small process per container attempt, outliving agent restarts.

Like containerd's shim or conmon, it sits between the agent and the container so that neither
depends on the other staying alive: it forks the container (in new namespaces and cgroups when
asked), writes its output to the CRI log file, reaps it, and records how it ended in ``exit.json``.
The agent reads ``state.json`` (the container's pid and its start time in clock ticks, to tell a
live process from a recycled pid) and ``exit.json``; it never needs to be the container's parent.

Run as ``python shim.py <spec.json>`` with standard output a pipe, or forked by the runtime's
forker (``forker.py``) which calls ``main`` the same way: the shim prints ``ok`` once the
container's command was executed, or ``error <message>`` when it could not be, then detaches.
Standard library only (it runs outside the agent's package), and ``logs`` is imported as a
sibling module.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import selectors
import signal
import sys
import time
from typing import Any


def _sibling(name: str) -> object:
    """A module beside this file, loaded by path: the shim runs as ``python -I -S shim.py`` (no
    site-packages, no path of ours), and a directory on sys.path would let ``types.py`` here
    shadow the standard library's ``types``."""
    spec = importlib.util.spec_from_file_location(
        f"_shim_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


logs: Any = _sibling("logs")

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x00020000, 0x04000000, 0x08000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
DRAIN_SECONDS = 1.0  # how long output is still read after the container's main process exited


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    libc = _libc()
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), None), f"mount {target}")


def start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _oom_kills(files: list[str]) -> int:
    total = 0
    for name in files:
        with contextlib.suppress(OSError, ValueError), open(name) as handle:
            for line in handle:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    total += int(value)
    return total


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _prepare_child(spec: dict) -> None:
    """In the forked child, before exec: session, cgroups, mounts, root, working dir."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)  # ignored dispositions would survive exec
    os.setsid()
    for directory in spec.get("cgroups") or ():
        with open(os.path.join(directory, "cgroup.procs"), "w") as handle:
            handle.write("0")
    root = spec.get("root") or ""
    if spec.get("namespaces"):
        libc = _libc()
        name = spec.get("hostname", "").encode()
        _check(libc.sethostname(name, len(name)), "sethostname")
        # Its own mount namespace: the shim must keep seeing the host's /proc.
        _check(libc.unshare(CLONE_NEWNS), "unshare")
        _mount_all(spec, root)
    if root and spec.get("chroot"):
        os.chroot(root)
        root = ""
    cwd = root + (spec.get("cwd") or "/")
    if root or spec.get("chroot"):
        os.makedirs(cwd, exist_ok=True)
    os.chdir(cwd)


def _mount_all(spec: dict, root: str) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if root and os.path.isdir(os.path.join(root, "dev")):
        _mount("/dev", root + "/dev", None, MS_BIND | MS_REC)
    for host, target, read_only in spec.get("mounts") or ():
        dest = root + target
        if os.path.isdir(host):
            os.makedirs(dest, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.exists(dest):
                open(dest, "a").close()  # noqa: SIM115 - a file mount point
        _mount(host, dest, None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, dest, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    proc = (root or "") + "/proc"
    if os.path.isdir(proc):
        _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _spawn(spec: dict, out_w: int, err_w: int, stdin_fd: int) -> int:
    """Fork and exec the container; raise OSError with the child's error when exec failed."""
    err_r, err_w_pipe = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the container
        try:
            os.close(err_r)
            _prepare_child(spec)
            os.dup2(stdin_fd, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            argv = spec["argv"]
            os.execvpe(argv[0], argv, spec["env"])
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, then the child ends
            with contextlib.suppress(OSError):
                os.write(err_w_pipe, f"{type(exc).__name__}: {exc}".encode(errors="replace"))
            os._exit(127)
    os.close(err_w_pipe)
    failure = b""
    while chunk := os.read(err_r, 4096):
        failure += chunk
    os.close(err_r)
    if failure:
        os.waitpid(pid, 0)
        raise OSError(failure.decode(errors="replace"))
    return pid


class Shim:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.pid = 0
        self.oom_before = _oom_kills(spec.get("oom_files") or [])

    def start(self) -> None:
        if self.spec.get("namespaces"):
            flags = CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID  # the child takes a mount namespace
            _check(_libc().unshare(flags), "unshare")
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        stdin_fd = os.open(self.spec["stdin_path"] if self.spec.get("stdin") else os.devnull, os.O_RDWR)
        try:
            self.pid = _spawn(self.spec, out_w, err_w, stdin_fd)
        finally:
            for fd in (out_w, err_w, stdin_fd):
                os.close(fd)
        shim_pid = os.getpid()
        state = {"pid": self.pid, "start_ticks": start_ticks(self.pid), "shim_pid": shim_pid,
                 "shim_start_ticks": start_ticks(shim_pid), "started_at": time.time()}  # fmt: skip
        _write_json(self.spec["state_path"], state)
        self.writer = logs.Writer(self.spec["log_path"], max_size=self.spec.get("log_max_size", 10 << 20),
                                  max_files=self.spec.get("log_max_files", 5))  # fmt: skip

    def run(self) -> None:
        """Copy output to the log until the container's main process has exited, then record it."""
        writer = self.writer
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        sel = selectors.DefaultSelector()
        sel.register(self.out_r, selectors.EVENT_READ, "stdout")
        sel.register(self.err_r, selectors.EVENT_READ, "stderr")
        sel.register(wake_r, selectors.EVENT_READ, None)
        status, deadline = None, None
        while sel.get_map() and len(sel.get_map()) > 1 or status is None:
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
            events = sel.select(timeout)
            for key, _ in events:
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    writer.write(key.data, chunk)
                else:
                    sel.unregister(key.fd)
            if status is None:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    # The main process is gone: the rest of the container goes with it.
                    with contextlib.suppress(OSError):
                        os.killpg(self.pid, signal.SIGKILL)
                    deadline = time.monotonic() + DRAIN_SECONDS
                else:
                    status = None
            elif deadline is not None and time.monotonic() >= deadline:
                break
        writer.close()
        self._record(status)

    def _record(self, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else 0
        exit_code = 128 + sig if sig else code
        oom = sig == signal.SIGKILL and _oom_kills(self.spec.get("oom_files") or []) > self.oom_before
        reason = "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error")
        _write_json(self.spec["exit_path"], {"exit_code": exit_code, "signal": sig, "reason": reason,
                                             "finished_at": time.time()})  # fmt: skip


def main(spec_path: str | None = None) -> int:
    """Start the container of ``spec_path`` (default: the command line's), answer, copy its output.

    Also called in a child of the forker (``forker.py``), which has already loaded this module."""
    with open(spec_path or sys.argv[1]) as handle:
        spec = json.load(handle)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the shim ends when its container does, never before
    shim = Shim(spec)
    try:
        shim.start()
    except OSError as exc:
        os.write(1, f"error {exc}\n".encode(errors="replace"))
        return 1
    os.write(1, b"ok\n")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    with contextlib.suppress(OSError):
        os.dup2(os.open(spec["shim_log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 2)
    shim.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
