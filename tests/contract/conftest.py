"""The store contract suite runs against every dialect: sqlite, memory, PostgreSQL, MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.kine import endpoint, settings
from services.kine.logstructured import store
from tests import conftest as shared

DIALECTS = ["sqlite", "memory", "postgres", "mysql"]

Opener = Callable[..., Awaitable[store.LogStructured]]


@pytest.fixture(params=DIALECTS)
def scheme(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        shared.require(shared.POSTGRES, "PostgreSQL")
    if request.param == "mysql":
        shared.require(shared.MYSQL, "MariaDB/MySQL")
    return request.param


@pytest.fixture
async def open_store(scheme: str, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens backends on one fresh database (several may share it); stops them all at the end."""
    name = shared.unique_name()
    opened: list[store.LogStructured] = []

    async def open_(**overrides: object) -> store.LogStructured:
        options: dict[str, object] = {
            "data_dir": tmp_path,
            "datastore_endpoint": shared.endpoint_for(scheme, name),
            "compact_interval": 0,
            "poll_interval": 0.05,
        }
        options.update(overrides)
        backend = await endpoint.open_backend(settings.KineSettings(**options))
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
async def kv(open_store: Opener) -> store.LogStructured:
    return await open_store()
