"""Shared fixtures: which external servers this machine has, and fresh databases on them."""

from __future__ import annotations

import socket
import uuid

import pytest

POSTGRES = ("127.0.0.1", 5432)
MYSQL = ("127.0.0.1", 3306)


def listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def require(address: tuple[str, int], what: str) -> None:
    if not listening(address):
        reason = f"{what} is not listening on {address[0]}:{address[1]}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


def unique_name(prefix: str = "kine_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def drop_database(scheme: str, name: str) -> None:
    if scheme == "postgres":
        import asyncpg

        conn = await asyncpg.connect(f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    elif scheme == "mysql":
        import aiomysql

        conn = await aiomysql.connect(host=MYSQL[0], port=MYSQL[1], user="root", password="", autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


def endpoint_for(scheme: str, name: str) -> str:
    if scheme == "postgres":
        return f"postgres://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
    if scheme == "mysql":
        return f"mysql://root:@tcp({MYSQL[0]}:{MYSQL[1]})/{name}"
    if scheme == "memory":
        return "memory://"
    return ""
