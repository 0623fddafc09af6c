"""The shim forker: one resident process per runtime that forks a container shim per request.

A shim started as a fresh ``python -I -S shim.py`` pays for an interpreter and its imports each
time (about 30 ms of CPU); a burst of pod creations then takes the CPU from the scheduler and the
API server. The forker has imported the shim's code once, so each request costs one ``fork``: the
child becomes the shim for that spec (its own session, signals back to their defaults, stdin
``/dev/null``) and answers ``ok`` / ``error <message>`` exactly as a spawned shim does.

Protocol: the forker's fd 0 is a ``SOCK_SEQPACKET`` unix socket to the runtime. A request is one
message holding the spec path, with one file descriptor attached (``SCM_RIGHTS``): the write end
of the pipe on which the shim gives its answer. End of file (the runtime closed the socket or
died) ends the forker; the shims it forked keep running (their own sessions) and are reparented,
so they outlive the agent and the forker as a spawned shim does. Children are reaped by the
kernel (``SIGCHLD`` ignored): the runtime learns of a shim's exit through a pidfd, never by
``waitpid``.

Run as ``python -I -S forker.py <tag> <blanks>``: standard library only, ``shim.py`` loaded by
path from beside this file; ``tag`` (the runtime's directory) only names whose forker it is in
``ps``. A forked shim rewrites its command line (``/proc/<pid>/cmdline``) to the one a spawned
shim has, ``python -I -S .../shim.py <spec.json>``, in the room the forker's own command line
left (a last argument of blanks; a longer one is cut), so ``ps`` and the benchmarks tell shims
from the forker. ``Client`` is the runtime's side; it imports nothing that the forker process
does not need.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import os
import signal
import socket
import sys
from typing import Any

MESSAGE_MAX = 8192  # bytes: a spec path
TITLE_ROOM = 256  # bytes of the forker's command line kept blank for its children's (see _retitle)
RESET = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ)


# -- the runtime's side ---------------------------------------------------------------------------


class Client:
    """The runtime's handle on its forker: started on the first request, replaced when it died.

    ``request`` never blocks: it returns False when no forker can take the request (it could not
    be started, or died twice in a row, or its queue is full), and the caller then spawns the shim
    itself. ``log`` is the caller's logger (the forker process imports no ``logging``).
    """

    def __init__(self, python: str, *, tag: str, log: Any) -> None:
        # The blank last argument is room for the shims' command lines (``_retitle``).
        self._argv = [python, "-I", "-S", os.path.abspath(__file__), tag, " " * TITLE_ROOM]
        self._log = log
        self._sock: socket.socket | None = None
        self._dead: list[int] = []  # closed or failed forkers not reaped yet
        self.pid: int | None = None

    def request(self, spec_path: str, answer_fd: int) -> bool:
        """Hand one shim start to the forker (spawning one first when none runs or it died)."""
        for _ in range(2):
            try:
                if self._sock is None:
                    self._spawn()
                assert self._sock is not None
                socket.send_fds(self._sock, [os.fsencode(spec_path)], [answer_fd])
                return True
            except BlockingIOError:
                return False  # full queue: a stopped forker; the caller spawns this one itself
            except OSError as exc:
                self._log.warning("shim forker %s unusable (%s); starting another", self.pid, exc)
                self._drop()
        return False

    def alive(self) -> bool:
        """Whether the forker still takes requests (one that died is reaped and dropped)."""
        if self.pid is not None and _exited(self.pid):
            self._log.warning("shim forker (pid %d) exited", self.pid)
            self.pid = None
            self._drop()
        return self.pid is not None

    def _spawn(self) -> None:
        self._dead = [pid for pid in self._dead if not _exited(pid)]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Its own session: a terminal's Ctrl-C to the agent's group must not reach it; it ends
            # when the agent closes (or loses) its end of the socket.
            self.pid = os.posix_spawn(
                self._argv[0], self._argv, os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 0)],
                setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )  # fmt: skip
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._log.info("shim forker started (pid %d)", self.pid)

    def close(self) -> list[int]:
        """Close the socket (the forker exits at end of file); returns the pids the caller must
        ``reap`` (forgotten here: waiting on them later could hit a recycled pid)."""
        self._drop()
        dead, self._dead = self._dead, []
        return dead

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.pid is not None:
            self._dead.append(self.pid)
            self.pid = None
        self._dead = [pid for pid in self._dead if not _exited(pid)]


def _exited(pid: int) -> bool:
    """Reap ``pid`` (a child) if it has exited; True when it is gone."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def reap(pid: int, *, timeout: float) -> None:
    """Wait (blocking, in a thread) for a closed forker to exit; kill it when it does not in time."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None
    if pidfd is not None:
        import select  # noqa: PLC0415 - only the runtime's side needs it, not every forked shim

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# -- the forker process ---------------------------------------------------------------------------


def _load_shim(path: str) -> Any:
    """``shim.py`` by path (``-I -S``: no path of ours on sys.path, see ``shim._sibling``)."""
    spec = importlib.util.spec_from_file_location("_forker_shim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _retitle(argv: list[str]) -> None:
    """Overwrite this process's argument area (what ``/proc/self/cmdline`` shows) with ``argv``.

    The area (fields ``arg_start``/``arg_end`` of ``/proc/self/stat``) holds the strings the
    process was started with; the interpreter keeps its own copies, so nothing reads them again."""
    with open("/proc/self/stat", "rb") as handle:
        stat = handle.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    start, end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    if 0 < start < end:
        text = b"\0".join(os.fsencode(arg) for arg in argv)[: end - start - 1]
        ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


def _child(shim: Any, control: socket.socket, spec_path: str, answer_fd: int) -> None:
    """In the forked child: become a freshly started shim for ``spec_path``; never returns."""
    code = 1
    try:
        with contextlib.suppress(OSError, ValueError, IndexError):  # only cosmetic: never fatal
            _retitle([sys.executable, "-I", "-S", shim.__file__, spec_path])
        os.setsid()
        for sig in RESET:
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        control.detach()  # fd 0: replaced by /dev/null just below (closing the socket there)
        for fd, target in ((devnull, 0), (answer_fd, 1)):
            if fd != target:
                os.dup2(fd, target)
                os.close(fd)
        code = shim.main(spec_path)
    except BaseException as exc:  # noqa: BLE001 - reported as a spawned shim would; the child ends here
        text = f"error shim: {type(exc).__name__}: {exc}\n".encode(errors="replace")
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                os.write(fd, text)
    finally:
        os._exit(code)


def serve(shim: Any, control: socket.socket) -> None:
    """Fork one shim per request until end of file."""
    while True:
        message, fds, _, _ = socket.recv_fds(control, MESSAGE_MAX, 4)
        for extra in fds[1:]:
            os.close(extra)
        if not message:
            return
        if not fds:
            continue  # nowhere to answer: not a request this runtime sends
        try:
            pid = os.fork()
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.write(fds[0], f"error fork: {exc}\n".encode())
            os.close(fds[0])
            continue
        if pid == 0:
            _child(shim, control, os.fsdecode(message), fds[0])
        os.close(fds[0])


def main() -> int:
    shim = _load_shim(os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py"))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the shims
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    control = socket.socket(fileno=0)
    gc.freeze()  # what is imported now stays shared with every child, untouched by their collections
    serve(shim, control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
