"""Build a backend from settings: datastore endpoint -> dialect -> SQL log -> MVCC store."""

from __future__ import annotations

from services.kine import settings as settings_
from services.kine import types
from services.kine.dialects import open_database
from services.kine.logstructured import store
from services.kine.sqllog import log as sqllog


async def open_backend(settings: settings_.KineSettings) -> store.LogStructured:
    """Open the datastore named by the settings; the caller starts and stops the backend."""
    dialect, db = await open_database(settings.datastore_endpoint, data_dir=settings.data_dir)
    backend = store.LogStructured(sqllog.SqlLog(dialect, db, poll_interval=settings.poll_interval), settings)
    _: types.Backend = backend  # the MVCC store implements the server's contract
    return backend
