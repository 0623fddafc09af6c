"""The store contract suite runs against every dialect: sqlite, memory, PostgreSQL, MariaDB.

It runs once more as ``grpc``: a LogStructured on a fresh SQLite file, served by kine's
``GrpcServer`` on 127.0.0.1:0, and reached through ``client.GrpcBackend``, so every contract
holds through the server and the client as well. Overrides go to the server's settings
(``watch_buffer`` also bounds the client's own per-watch queue).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.kine import client, endpoint, settings
from services.kine.logstructured import store
from services.kine.server import server
from tests import conftest as shared

DIALECTS = ["sqlite", "memory", "postgres", "mysql", "grpc"]

Opener = Callable[..., Awaitable[Any]]


class ServedBackend(client.GrpcBackend):
    """A GrpcBackend that owns the kine server and store behind it: stopping it stops all three,
    as when a kine process exits."""

    def __init__(self, grpc_server: server.GrpcServer, backend: store.LogStructured, **options: Any) -> None:
        super().__init__(grpc_server.address, **options)
        self.server = grpc_server
        self.store = backend

    async def stop(self) -> None:
        await super().stop()
        await self.server.stop()
        await self.store.stop()


@pytest.fixture(params=DIALECTS)
def scheme(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        shared.require(shared.POSTGRES, "PostgreSQL")
    if request.param == "mysql":
        shared.require(shared.MYSQL, "MariaDB/MySQL")
    return request.param


async def _serve(options: settings.KineSettings) -> ServedBackend:
    backend = await endpoint.open_backend(options)
    await backend.start()
    grpc_server = server.GrpcServer(backend, options)
    try:
        await grpc_server.start()
        served = ServedBackend(grpc_server, backend, watch_buffer=options.watch_buffer)
        await served.start()
    except BaseException:
        await grpc_server.stop()
        await backend.stop()
        raise
    return served


@pytest.fixture
async def open_store(scheme: str, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens backends on one fresh database (several may share it); stops them all at the end."""
    name = shared.unique_name()
    opened: list[Any] = []

    async def open_(**overrides: object) -> Any:
        options: dict[str, object] = {
            "data_dir": tmp_path,
            "datastore_endpoint": shared.endpoint_for(scheme, name),
            "compact_interval": 0,
            "poll_interval": 0.05,
        }
        if scheme == "grpc":
            options["listen_address"] = "127.0.0.1:0"
        options.update(overrides)
        kine_settings = settings.KineSettings(**options)
        if scheme == "grpc":
            backend: Any = await _serve(kine_settings)
        else:
            backend = await endpoint.open_backend(kine_settings)
            await backend.start()
        opened.append(backend)
        return backend

    try:
        yield open_
    finally:
        for backend in reversed(opened):
            await backend.stop()
        await shared.drop_database(scheme, name)


@pytest.fixture
async def kv(open_store: Opener) -> Any:
    return await open_store()


@pytest.fixture
def backing() -> Callable[[Any], store.LogStructured]:
    """The LogStructured behind a backend from ``open_store`` (itself, or the one kine serves)."""
    return lambda kv: kv.store if isinstance(kv, ServedBackend) else kv
