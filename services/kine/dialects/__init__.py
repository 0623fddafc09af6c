"""Datastore dialects, picked by the endpoint's scheme (kine's driver registry).

``--datastore-endpoint`` takes K3s's forms: ``sqlite:///path`` (the default, in the
data dir), ``postgres://user:pass@host:port/db``, ``mysql://user:pass@tcp(host:port)/db``,
and ``memory://`` for tests.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.kine import types
from services.kine.dialects import base

log = logging.getLogger(__name__)

Opener = Callable[[str], Awaitable[tuple[base.Dialect, base.Database]]]


def _sqlite(dsn: str) -> Awaitable[tuple[base.Dialect, base.Database]]:
    from services.kine.dialects import sqlite

    return sqlite.open_sqlite(dsn)


def _memory(dsn: str) -> Awaitable[tuple[base.Dialect, base.Database]]:
    from services.kine.dialects import sqlite

    return sqlite.open_memory(dsn)


def _postgres(dsn: str) -> Awaitable[tuple[base.Dialect, base.Database]]:
    from services.kine.dialects import postgres

    return postgres.open_postgres(dsn)


def _mysql(dsn: str) -> Awaitable[tuple[base.Dialect, base.Database]]:
    from services.kine.dialects import mysql

    return mysql.open_mysql(dsn)


REGISTRY: dict[str, Opener] = {
    "sqlite": _sqlite,
    "memory": _memory,
    "postgres": _postgres,
    "postgresql": _postgres,
    "mysql": _mysql,
}

_MYSQL = re.compile(r"^mysql://([^@/]*@)?(tcp\([^)]*\)|[^/]*)(/[^?]*)?(\?.*)?$")


def redact(endpoint: str) -> str:
    """The endpoint with any password replaced, safe for logs and errors."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", endpoint)


def resolve(endpoint: str, *, data_dir: Path) -> tuple[str, str]:
    """Return (scheme, dsn) for an endpoint; raise DatastoreError when it is malformed."""
    if not endpoint:
        return "sqlite", str(data_dir / "server" / "db" / "state.db")
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in REGISTRY:
        raise types.DatastoreError(
            f"unsupported datastore endpoint {redact(endpoint)!r}: expected sqlite://, postgres://, mysql:// "
            "or memory:// (https:// etcd endpoints are not supported by kine)"
        )
    if scheme == "sqlite":
        path = rest.split("?", 1)[0]
        if not path:
            path = str(data_dir / "server" / "db" / "state.db")
        return scheme, path
    if scheme == "memory":
        return scheme, ""
    if scheme == "mysql":
        if not _MYSQL.match(endpoint):
            raise types.DatastoreError(f"malformed mysql endpoint {redact(endpoint)!r}")
        return scheme, endpoint
    parts = urllib.parse.urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise types.DatastoreError(f"malformed endpoint {redact(endpoint)!r}: {exc}") from None
    if not parts.hostname:
        raise types.DatastoreError(f"malformed endpoint {redact(endpoint)!r}: no host")
    return "postgres", endpoint


async def open_database(endpoint: str, *, data_dir: Path) -> tuple[base.Dialect, base.Database]:
    scheme, dsn = resolve(endpoint, data_dir=data_dir)
    try:
        return await REGISTRY[scheme](dsn)
    except types.StoreError:
        raise
    except Exception as exc:  # the driver's own failure: translated, without credentials
        message = redact(str(exc)).replace(dsn, redact(dsn))
        raise types.DatastoreError(
            f"cannot open datastore {redact(endpoint) or 'sqlite'}: {type(exc).__name__}: {message}"
        ) from exc
