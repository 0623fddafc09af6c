"""Shared fixtures: which external servers this machine has, and fresh databases on them."""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import sys
import uuid
from typing import Any

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


# -- hung tests ----------------------------------------------------------------------------------
# pytest-timeout (``timeout`` in pyproject.toml) fails a hung test and prints every thread's stack.
# In an asyncio test those stacks only show the event loop waiting, so the alarm first prints each
# pending task of the loop that runs the test, with the line it waits on: what the test was stuck on.


def _print_pending_tasks() -> None:
    try:
        loop = asyncio.get_running_loop()  # the alarm interrupts the main thread, in its loop
    except RuntimeError:
        return
    out = io.StringIO()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    print(f"{len(pending)} pending asyncio tasks:", file=out)
    for task in pending:
        task.print_stack(limit=6, file=out)
    sys.stderr.write(out.getvalue())


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal":
        return None
    import pytest_timeout

    def on_alarm(signum: int, frame: Any) -> None:
        _print_pending_tasks()
        # The teardown that follows may hang as well: give it two minutes, then end the run.
        signal.signal(signal.SIGALRM, on_second_alarm)
        signal.setitimer(signal.ITIMER_REAL, 120)
        pytest_timeout.timeout_sigalrm(item, settings)

    def on_second_alarm(signum: int, frame: Any) -> None:
        _print_pending_tasks()
        pytest_timeout.timeout_timer(item, settings)  # prints every thread's stack, then exits

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return True
