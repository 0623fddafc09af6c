"""The agent's client-side load balancer: a loopback TCP proxy in front of every API server.

As K3s's: the agent talks to ``https://127.0.0.1:<port>`` and this proxy forwards each new
connection, as raw bytes (TLS stays end to end, client certificates included), to one server.
The list of servers starts as ``--server``; once the API answers, the addresses of the
``kubernetes`` Endpoints in ``default`` (every API server registers itself there) join it. The
order tried is: the server that last worked, the other Endpoints addresses in the order the API
lists them, and the original ``--server`` last, as the fallback that is known to have existed.

A connection that cannot be dialled moves on to the next server at once (a dead server's port
refuses in microseconds; an unreachable host costs ``dial_timeout``), so failing over takes
seconds at most. Open connections to a server that dies break; their clients reconnect (the
informers resume from their resourceVersion) and land on the next server.

The list is kept in ``<data-dir>/agent/etc/k3s-agent-load-balancer.json`` (K3s's file and keys,
``ServerURL`` and ``ServerAddresses``) so that an agent restarting while its original server is
down still finds the others. A saved list is used only if it was saved for the same ``--server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

log = logging.getLogger(__name__)

STATE_FILE = Path("etc") / "k3s-agent-load-balancer.json"
DIAL_TIMEOUT = 5.0  # seconds to connect to one server before trying the next
EARLY_BYTES = 256 * 1024  # what a client may send before its server is connected, held here


def address_of(url: str) -> str:
    """``host:port`` of an https URL (port 6443 when none is given)."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    if not parsed.hostname:
        raise ValueError(f"no host in server URL {url!r}")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{parsed.port or 6443}"


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class ServerList:
    """Which servers to try, in which order (pure bookkeeping, no I/O)."""

    def __init__(self, default: str, addresses: Iterable[str] = ()) -> None:
        self.default = default  # host:port of --server
        self.addresses: list[str] = []
        self.current = ""
        self.update(addresses)

    def update(self, addresses: Iterable[str]) -> bool:
        """Replace the learned addresses; True when the list changed."""
        learned = list(dict.fromkeys(a for a in addresses if a and a != self.default))
        if learned == self.addresses:
            return False
        self.addresses = learned
        if self.current not in self.all():
            self.current = ""
        return True

    def all(self) -> list[str]:
        return [*self.addresses, self.default]

    def candidates(self) -> list[str]:
        """The order to dial: the server that last worked, the others, ``--server`` last."""
        ordered = self.all()
        if self.current:  # stay with a server that works, whichever it is
            ordered.remove(self.current)
            ordered.insert(0, self.current)
        return ordered

    def succeeded(self, address: str) -> None:
        self.current = address

    def failed(self, address: str) -> None:
        if self.current == address:
            self.current = ""


def load_state(path: Path, *, server_url: str) -> list[str]:
    """Saved addresses for this ``--server``; none when the file is missing, broken or for another."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring the saved server list %s: %s", path, exc)
        return []
    if not isinstance(saved, dict) or saved.get("ServerURL") != server_url:
        return []
    addresses = saved.get("ServerAddresses") or []
    return [a for a in addresses if isinstance(a, str)]


def save_state(path: Path, *, server_url: str, addresses: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"ServerURL": server_url, "ServerAddresses": list(addresses)}, indent=2) + "\n")
    os.replace(tmp, path)


def endpoint_addresses(endpoints: dict[str, Any]) -> list[str]:
    """``ip:port`` of every ready address of an Endpoints object (its ``https`` port)."""
    found = []
    for subset in endpoints.get("subsets") or ():
        ports = subset.get("ports") or ()
        port = next((p.get("port") for p in ports if p.get("name") == "https"), None)
        port = port or next((p.get("port") for p in ports), None)
        if not port:
            continue
        for address in subset.get("addresses") or ():
            ip = address.get("ip", "")
            if ip:
                found.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    return found


class LoadBalancer:
    """``await start()`` listens on ``127.0.0.1:port``; ``url`` is what the agent's client uses."""

    def __init__(
        self, server_url: str, *, agent_dir: Path, port: int = 0, dial_timeout: float = DIAL_TIMEOUT
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.state_file = agent_dir / STATE_FILE
        self.servers = ServerList(address_of(self.server_url))
        self.servers.update(load_state(self.state_file, server_url=self.server_url))
        self.port = port
        self.dial_timeout = dial_timeout
        self._server: asyncio.Server | None = None
        self._dials: set[asyncio.Task[Any]] = set()
        self._halves: set[_Half] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Half(self._halves, self._connected), "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("load balancer on 127.0.0.1:%d for %s", self.port, ", ".join(self.servers.all()))

    async def stop(self) -> None:
        """Stop listening and cut every proxied connection (idempotent)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        dials = list(self._dials)
        for task in dials:
            task.cancel()
        for task in dials:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for half in list(self._halves):
            half.abort()

    def update(self, addresses: Iterable[str]) -> None:
        """New addresses from the Endpoints: reorder and persist when they changed."""
        if not self.servers.update(addresses):
            return
        log.info("load balancer servers: %s", ", ".join(self.servers.all()))
        try:
            save_state(self.state_file, server_url=self.server_url, addresses=self.servers.addresses)
        except OSError as exc:
            log.warning("cannot save the server list %s: %s", self.state_file, exc)

    def _connected(self, client: _Half) -> None:
        """A client connected: dial a server for it (its dial task belongs to the balancer)."""
        task = asyncio.get_running_loop().create_task(self._join(client), name="load balancer dial")
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _join(self, client: _Half) -> None:
        server = _Half(self._halves)
        try:
            if not await self._dial(server):
                client.close()
                return
        except BaseException:
            client.abort()
            raise
        client.pair(server)

    async def _dial(self, server: _Half) -> bool:
        loop = asyncio.get_running_loop()
        for address in self.servers.candidates():
            host, port = split_address(address)
            try:
                async with asyncio.timeout(self.dial_timeout):
                    await loop.create_connection(lambda: server, host, port)
            except (OSError, TimeoutError) as exc:
                log.info("load balancer: %s failed (%s); trying the next server", address, exc)
                self.servers.failed(address)
                continue
            if self.servers.current != address:
                log.info("load balancer: now using %s", address)
            self.servers.succeeded(address)
            return True
        log.warning("load balancer: no server answered (%s)", ", ".join(self.servers.all()))
        return False


class _Half(asyncio.Protocol):
    """One end of a proxied connection: what its socket receives, its peer's socket sends.

    Callbacks, not a pair of read/write coroutines per connection: a chunk costs one
    ``data_received`` and one ``write``. Flow control crosses over: when our socket's send
    buffer fills, the peer stops reading until it drains. An EOF is passed on as a half-close
    (TLS close_notify still gets through); the pair closes once both directions have ended or
    either socket is lost. What a client sends before its server end is connected waits here
    (up to ``EARLY_BYTES``, then its socket is not read until then).
    """

    def __init__(self, registry: set[_Half], on_connected: Callable[[_Half], None] | None = None) -> None:
        self.registry = registry
        self.on_connected = on_connected
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.ended = False  # our socket sent EOF
        self.lost = False
        self._early: list[bytes] = []  # received before there was a peer to send it to
        self._early_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.registry.add(self)
        if self.on_connected is not None:
            self.on_connected(self)

    def pair(self, peer: _Half) -> None:
        self.peer, peer.peer = peer, self
        if self.lost or peer.lost:  # one end left while we dialled: end the other
            peer.close()
            self.close()
            return
        self._pass_early()
        peer._pass_early()

    def _pass_early(self) -> None:
        """Send on what arrived before there was a peer, and an EOF that did."""
        assert self.peer is not None and self.peer.transport is not None and self.transport is not None
        early, self._early = self._early, []
        if early:
            self.peer.transport.write(b"".join(early))
        if self._early_bytes >= EARLY_BYTES:
            self.transport.resume_reading()
        self._early_bytes = 0
        if self.ended:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
            return
        self._early.append(data)
        self._early_bytes += len(data)
        if self._early_bytes >= EARLY_BYTES and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.ended = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return True  # an EOF before pairing: passed on then
        if peer.ended:  # both directions are done
            peer.transport.close()
            return False
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
        return True  # keep our side open: the other direction may still carry data

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.registry.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # sends what is buffered, then closes

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()
