"""The agent's end of the tunnel: logs, exec, attach and port-forward requests arrive over the bus.

Agents open no port (they may sit behind NAT, as K3s agents do): the API server reaches the node
through the bus, and the node answers by calling its container runtime. Subjects, with ``<node>``
the node name with each ``.`` replaced by ``_`` (node names never hold ``_``, so the mapping is
one-to-one and node ``a`` can never read node ``a.b``'s subjects)::

    k3s.tunnel.<node>.open              request: open a stream, JSON {"sid", "header"}; reply {"ok"} or an error
    k3s.tunnel.<node>.s.<sid>.in        frames API server -> agent
    k3s.tunnel.<node>.s.<sid>.out       frames agent -> API server

So a node's bus credentials need publish and subscribe on ``k3s.tunnel.<node>.>`` plus replies
(NATS's ``allow_responses``), nothing else. The stream framing and flow control are
``services.bus.streams``'s. The header's ``op`` is ``log``, ``exec``, ``attach`` or ``portforward``;
channels inside a stream reuse Kubernetes' numbers: 0 stdin, 1 stdout, 2 stderr, 3 error (a
``Status`` JSON, sent last), 4 resize (``{"Width", "Height"}``); a port-forward stream carries the
connection's bytes on 0 and an error text on 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson

from services.agent import tunnel_logs
from services.agent.runtimes import types as runtime_types
from services.bus import streams
from services.bus import types as bus_types

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
DATA, DATA_ERROR = 0, 1  # port-forward channels


def node_token(node_name: str) -> str:
    return node_name.replace(".", "_")


def open_subject(node_name: str) -> str:
    return f"k3s.tunnel.{node_token(node_name)}.open"


def stream_prefix(node_name: str) -> str:
    return f"k3s.tunnel.{node_token(node_name)}.s"


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Tunnel:
    """Serves this node's tunnel subjects until stopped; each stream is a session task it owns."""

    def __init__(self, bus: bus_types.Bus, *, node_name: str, runtime: runtime_types.Runtime) -> None:
        self.node_name = node_name
        self.state = State.NEW
        self._runtime = runtime
        self._server = streams.StreamServer(
            bus, subject=open_subject(node_name), prefix=stream_prefix(node_name), accept=self._accept
        )
        self._stopped = asyncio.Event()

    async def __aenter__(self) -> Tunnel:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._server.start()
        self.state = State.RUNNING
        log.info("tunnel serving node %s on %s", self.node_name, self._server.subject)

    async def stop(self) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        await self._server.stop()
        self._stopped.set()
        log.info("tunnel of node %s stopped", self.node_name)

    async def wait(self) -> None:
        await self._stopped.wait()

    # -- accepting -------------------------------------------------------------------------------

    async def _accept(self, subject: str, header: dict[str, Any]) -> streams.Session:
        op = header.get("op")
        uid, name = str(header.get("uid", "")), str(header.get("container", ""))
        pod = f"{header.get('namespace', '')}/{header.get('pod', '')}"
        log.debug("tunnel %s for pod %s container %s", op, pod, name)
        if uid not in self._runtime.pods():
            raise streams.Refused(
                404, "NotFound", f'pod "{header.get("pod", "")}" is not running on node "{self.node_name}"'
            )
        if op == "log":
            return self._accept_log(header, uid, name)
        if op == "portforward":
            port = header.get("port")
            if not isinstance(port, int) or not 0 < port < 65536:
                raise streams.Refused(400, "BadRequest", f"invalid port {port!r}")
            return self._port_forward_session(header, uid, port)
        if op in ("exec", "attach"):
            return await self._accept_exec(op, header, uid, name)
        raise streams.Refused(400, "BadRequest", f"unknown tunnel operation {op!r}")

    def _container(self, uid: str, name: str) -> runtime_types.ContainerInfo | None:
        return next((c for c in self._runtime.containers(uid) if c.name == name), None)

    def _accept_log(self, header: dict[str, Any], uid: str, name: str) -> streams.Session:
        previous = bool(header.get("previous"))
        path = self._runtime.log_path(uid, name, previous=previous)
        if path is None:
            if previous:
                message = f'previous terminated container "{name}" in pod "{header.get("pod", "")}" not found'
            else:
                message = f'container "{name}" in pod "{header.get("pod", "")}" is waiting to start: ContainerCreating'
            raise streams.Refused(400, "BadRequest", message)
        options = tunnel_logs.LogOptions.from_header(header)
        current = self._container(uid, name)
        attempt = current.attempt if current is not None else -1

        def running() -> bool:
            info = self._container(uid, name)
            return info is not None and info.attempt == attempt and info.state is runtime_types.State.RUNNING

        async def session(stream: streams.Stream) -> None:
            await tunnel_logs.stream_log(
                stream, path, options, running=(lambda: False) if previous else running
            )

        return session

    async def _accept_exec(self, op: str, header: dict[str, Any], uid: str, name: str) -> streams.Session:
        info = self._container(uid, name)
        if info is None or info.state is not runtime_types.State.RUNNING:
            raise streams.Refused(
                400, "BadRequest", f'container "{name}" in pod "{header.get("pod", "")}" is not running'
            )
        stdin, tty = bool(header.get("stdin")), bool(header.get("tty"))
        command = [str(part) for part in header.get("command") or ()]
        try:
            if op == "exec":
                session = await self._runtime.exec(uid, name, command, tty=tty, stdin=stdin)
            else:
                session = await self._runtime.attach(uid, name, stdin=stdin)
        except runtime_types.ContainerError as exc:
            raise streams.Refused(400, "BadRequest", exc.message) from None
        except OSError as exc:
            raise streams.Refused(400, "BadRequest", f"cannot {op} in container {name}: {exc}") from None
        return _Remote(session, header, command=command, kill_at_end=op == "exec").run

    # -- port-forward ----------------------------------------------------------------------------

    def _port_forward_session(self, header: dict[str, Any], uid: str, port: int) -> streams.Session:
        async def session(stream: streams.Stream) -> None:
            try:
                reader, writer = await self._runtime.port_forward(uid, port)
            except (OSError, runtime_types.ContainerError) as exc:
                text = f"error forwarding port {port} to pod {header.get('pod', '')}, uid {uid}: {exc}"
                await stream.send(DATA_ERROR, text.encode())
                return
            try:
                await _splice(stream, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        return session


async def _splice(stream: streams.Stream, reader: Any, writer: Any) -> None:
    """Copy both ways until the pod's side of the connection ends or the API server leaves."""

    async def inbound() -> None:
        async for frame in stream:
            if frame.closed:
                if writer.can_write_eof():
                    writer.write_eof()
                continue
            writer.write(frame.data)
            await writer.drain()

    feeding = asyncio.create_task(inbound(), name=f"port-forward in {stream.name}")
    try:
        while chunk := await reader.read(streams.MAX_FRAME):
            await stream.send(DATA, chunk)
    except (ConnectionError, OSError) as exc:
        await stream.send(DATA_ERROR, f"connection to the pod failed: {exc}".encode())
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await feeding


class _Remote:
    """One exec or attach session: streams in, streams out, and the exit status on the error channel."""

    def __init__(
        self,
        session: runtime_types.ExecSession,
        header: dict[str, Any],
        *,
        command: Sequence[str],
        kill_at_end: bool,
    ) -> None:
        self._session = session
        self._command = list(command)
        self._want = {
            STDOUT: header.get("stdout", True) is not False,
            STDERR: header.get("stderr", True) is not False,
        }
        self._kill_at_end = (
            kill_at_end  # exec: the command dies with its stream; attach: the container lives on
        )

    async def run(self, stream: streams.Stream) -> None:
        feeding = asyncio.create_task(self._feed(stream), name=f"stdin {stream.name}")
        draining = asyncio.create_task(self._drain(stream), name=f"output {stream.name}")
        finished = False
        try:
            done, _ = await asyncio.wait({feeding, draining}, return_when=asyncio.FIRST_COMPLETED)
            if draining in done:
                code = draining.result()
                finished = True
                await stream.send(ERROR, orjson.dumps(exit_status(code, self._command)))
        finally:
            for task in (feeding, draining):
                task.cancel()
            for task in (feeding, draining):
                with contextlib.suppress(asyncio.CancelledError, streams.StreamError):
                    await task
            if not finished and self._kill_at_end:
                await self._session.kill()

    async def _feed(self, stream: streams.Stream) -> None:
        """Stdin and resizes until the API server ends the stream."""
        stdin_open = True
        async for frame in stream:
            if frame.channel == STDIN and stdin_open:
                try:
                    if frame.closed:
                        stdin_open = False
                        await self._session.close_stdin()
                    else:
                        await self._session.write_stdin(frame.data)
                except (ConnectionError, OSError):
                    stdin_open = False  # the process closed its stdin: drop the rest
            elif frame.channel == RESIZE and frame.data:
                await self._resize(frame.data)

    async def _resize(self, data: bytes) -> None:
        try:
            size = {str(k).lower(): v for k, v in orjson.loads(data).items()}
            await self._session.resize(int(size.get("width", 0)), int(size.get("height", 0)))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            log.debug("ignored a malformed resize message")

    async def _drain(self, stream: streams.Stream) -> int:
        async def pump(channel: int, source: AsyncIterator[bytes]) -> None:
            async for chunk in source:
                if self._want[channel] and chunk:
                    await stream.send(channel, chunk)

        await asyncio.gather(pump(STDOUT, self._session.stdout()), pump(STDERR, self._session.stderr()))
        return await self._session.wait()


def exit_status(code: int, command: Sequence[str]) -> dict[str, Any]:
    """The Status the error channel carries: Success, or NonZeroExitCode with the code as a cause."""
    if code < 0:  # killed by a signal: report it as a shell would
        code = 128 - code
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    shown = "[" + " ".join(command) + "]"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {shown}, exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
