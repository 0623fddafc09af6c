"""Startup, liveness and readiness probes of one container attempt.

A ``Prober`` runs as one named task per running container attempt, owned by the pod worker,
which cancels it when the attempt ends. Startup comes first: until it succeeds the container is
not ``started`` and the other probes wait; ``failureThreshold`` failures in a row fail it, as do
liveness failures, and the worker then kills the container (and restarts it as the restart
policy says). Readiness flips ``ready`` after ``successThreshold`` successes or
``failureThreshold`` failures in a row. Every change wakes the pod worker.

Handlers: ``exec`` (exit code 0 within ``timeoutSeconds``), ``tcpSocket`` (a connection) and
``httpGet`` (a status in 200-399). Sockets reach the pod's ports through the runtime's
``port_forward`` unless the probe names a ``host``, so a runtime without pod networking works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from services.agent.runtimes import types
from services.machinery import tasks

log = logging.getLogger(__name__)


def _port(probe_port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(probe_port, int):
        return probe_port
    for port in container.get("ports") or ():
        if port.get("name") == probe_port:
            return int(port["containerPort"])
    return int(probe_port)


async def _exec(
    runtime: types.Runtime, uid: str, container: Mapping[str, Any], action: Mapping[str, Any]
) -> bool:
    session = await runtime.exec(
        uid, container["name"], list(action.get("command") or []), tty=False, stdin=False
    )
    try:
        async for _ in session.stdout():
            pass
        return await session.wait() == 0
    except BaseException:  # timed out (cancelled) or failed: the command must not linger
        await session.kill()
        raise


async def _connect(
    runtime: types.Runtime, uid: str, host: str | None, port: int, *, tls: bool
) -> tuple[Any, Any]:
    if host or tls:
        context = None
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return await asyncio.open_connection(host or "127.0.0.1", port, ssl=context)
    return await runtime.port_forward(uid, port)


async def _tcp(
    runtime: types.Runtime, uid: str, container: Mapping[str, Any], action: Mapping[str, Any]
) -> bool:
    _, writer = await _connect(
        runtime, uid, action.get("host"), _port(action.get("port"), container), tls=False
    )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _http(
    runtime: types.Runtime, uid: str, container: Mapping[str, Any], action: Mapping[str, Any]
) -> bool:
    port = _port(action.get("port"), container)
    host = action.get("host")
    reader, writer = await _connect(runtime, uid, host, port, tls=action.get("scheme") == "HTTPS")
    try:
        headers = {"Host": f"{host or 'localhost'}:{port}", "User-Agent": "kube-probe/1.37", "Accept": "*/*",
                   "Connection": "close"}  # fmt: skip
        for header in action.get("httpHeaders") or ():
            headers[header.get("name", "")] = header.get("value", "")
        lines = [
            f"GET {action.get('path') or '/'} HTTP/1.1",
            *(f"{k}: {v}" for k, v in headers.items()),
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode())
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_once(
    runtime: types.Runtime, uid: str, container: Mapping[str, Any], probe: Mapping[str, Any]
) -> bool:
    """One probe: True on success; a timeout, an error or a refused connection is a failure."""
    timeout = max(int(probe.get("timeoutSeconds") or 1), 1)
    if "exec" in probe:
        handler = _exec(runtime, uid, container, probe["exec"])
    elif "httpGet" in probe:
        handler = _http(runtime, uid, container, probe["httpGet"])
    elif "tcpSocket" in probe:
        handler = _tcp(runtime, uid, container, probe["tcpSocket"])
    else:
        return True  # grpc and unknown handlers: not supported, never fail the container for it
    try:
        return await tasks.wait_for(handler, timeout)
    except (OSError, TimeoutError, types.ContainerError, ValueError) as exc:
        log.debug("probe of %s/%s failed: %s", uid, container.get("name"), exc)
        return False


class Prober:
    """The probes of one running attempt; results are read by the pod worker."""

    def __init__(
        self, runtime: types.Runtime, uid: str, container: Mapping[str, Any], *, on_change: Callable[[], None]
    ) -> None:
        self.runtime, self.uid, self.container = runtime, uid, container
        self.on_change = on_change
        self.started = "startupProbe" not in container
        self.ready = "readinessProbe" not in container
        self.failed: str = ""  # "Liveness" or "Startup" once that probe failed for good

    async def run(self) -> None:
        startup = self.container.get("startupProbe")
        if startup is not None:
            if not await self._until(startup, kind="Startup"):
                return
            self.started = True
            self.on_change()
        loops = [self._until(p, kind=k) for k, p in (("Liveness", self.container.get("livenessProbe")),
                                                     ("Readiness", self.container.get("readinessProbe"))) if p]  # fmt: skip
        if loops:
            await asyncio.gather(*loops)
        else:
            await asyncio.Event().wait()  # nothing to probe: live until cancelled

    async def _until(self, probe: Mapping[str, Any], *, kind: str) -> bool:
        """Probe periodically; return True (startup succeeded) or False (failed for good)."""
        period = max(float(probe.get("periodSeconds") or 10), 0.1)
        failures_needed = max(int(probe.get("failureThreshold") or 3), 1)
        successes_needed = max(int(probe.get("successThreshold") or 1), 1)
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        successes = failures = 0
        while True:
            ok = await run_once(self.runtime, self.uid, self.container, probe)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if kind == "Startup" and ok:
                return True
            if kind == "Readiness":
                self._set_ready(successes, failures, successes_needed, failures_needed)
            elif failures >= failures_needed:
                self.failed = kind
                log.info(
                    "%s probe of %s/%s failed %d times", kind, self.uid, self.container["name"], failures
                )
                self.on_change()
                return False
            await asyncio.sleep(period)

    def _set_ready(self, successes: int, failures: int, needed: int, failures_needed: int) -> None:
        if not self.ready and successes >= needed:
            self.ready = True
            self.on_change()
        elif self.ready and failures >= failures_needed:
            self.ready = False
            self.on_change()
