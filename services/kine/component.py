"""kine as one component: datastore -> MVCC backend -> etcd gRPC server, plus bus notices.

Lifecycle as every component has it: ``start()`` returns when clients can
connect, ``stop()`` is idempotent (stop accepting, let calls drain, then close
the backend and the database), ``wait()`` returns when the component ends on its
own (a root loop died), and it works as ``async with``.

Several kine processes sharing one PostgreSQL/MySQL database wake each other
through the bus: after each local commit a notice with the new revision goes to
``kine.changes``; a notice from elsewhere wakes this process's poll loop at once.
The 1 s poll stays as the fallback when the bus is down. On a database no other
process writes (SQLite) there is nobody to tell and nothing to hear, so kine
connects but neither publishes nor subscribes: there a notice per group commit,
echoed back by NATS, only cost CPU (10-15% of kine's per create, and ~0.07 ms of
the NATS server's; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.bus import types as bus_types
from services.kine import endpoint
from services.kine import settings as settings_
from services.kine.dialects import redact
from services.kine.logstructured import store
from services.kine.server import server as grpc_server
from services.machinery import tasks
from services.machinery.lifecycle import State

log = logging.getLogger(__name__)

SUBJECT = "kine.changes"


class Kine:
    def __init__(self, settings: settings_.KineSettings, *, bus: bus_types.Bus | None = None) -> None:
        self.settings = settings
        self.state = State.NEW
        self.backend: store.LogStructured | None = None
        self._server: grpc_server.GrpcServer | None = None
        self._bus = bus
        self._own_bus = False
        self._subscription: bus_types.Subscription | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._committed = 0
        self._commit_signal = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def address(self) -> str:
        return self._server.address if self._server is not None else ""

    async def __aenter__(self) -> Kine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.state = State.STARTING
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self.state = State.RUNNING
        log.info(
            "kine serving %s on datastore %s",
            self.address,
            redact(self.settings.datastore_endpoint) or "sqlite (default)",
        )

    async def _start(self) -> None:
        self.backend = await endpoint.open_backend(self.settings)
        await self.backend.start()
        self._tasks.append(tasks.guarded(self._watch_backend(), name="kine backend", on_failure=self._fail))
        await self._connect_bus()
        self._server = grpc_server.GrpcServer(self.backend, self.settings)
        self.backend.metrics = self._server.metrics
        await self._server.start()

    async def _connect_bus(self) -> None:
        assert self.backend is not None
        if self._bus is None and self.settings.nats_url:
            from services import bus

            self._bus = await bus.connect(self.settings.nats_url, name="kine")
            self._own_bus = True
        if self._bus is None:
            return
        if not self.backend.log.dialect.shared:
            return  # the only writer of its database: a notice would reach no one
        self._subscription = await self._bus.subscribe(SUBJECT, self._on_notice)
        self.backend.log.on_commit(self._on_commit)
        self._tasks.append(tasks.guarded(self._publish_loop(), name="kine change notices", on_failure=self._fail))

    async def _on_notice(self, subject: str, payload: bytes) -> None:
        del subject
        if self.backend is not None and payload.isdigit():
            self.backend.log.notify(int(payload))

    def _on_commit(self, revision: int) -> None:
        self._committed = max(self._committed, revision)
        self._commit_signal.set()

    async def _publish_loop(self) -> None:
        # Coalesces: one notice carries the newest revision however many commits happened.
        assert self._bus is not None
        while True:
            await self._commit_signal.wait()
            self._commit_signal.clear()
            try:
                await self._bus.publish(SUBJECT, str(self._committed).encode())
            except bus_types.BusError as exc:
                log.debug("change notice not sent (peers fall back to polling): %s", exc)

    async def _watch_backend(self) -> None:
        assert self.backend is not None
        failure = await self.backend.log.wait_stopped()
        if failure is not None:
            raise RuntimeError(f"the store stopped: {failure}")

    def _fail(self, exc: BaseException | None) -> None:
        log.error("kine is stopping: a background loop ended (%s)", exc)
        self._done.set()

    async def wait(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        if self.state in (State.STOPPING, State.STOPPED):
            return
        self.state = State.STOPPING
        if self._server is not None:
            await self._server.stop()
        await tasks.cancel_all(self._tasks)
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._bus is not None and self._own_bus:
            await self._bus.close()
        if self.backend is not None:
            await self.backend.stop()
        self.state = State.STOPPED
        self._done.set()
        log.info("kine stopped")
