"""Writes the database rolls back whole (deadlocks between servers) are run again, not lost as 503s.

Two servers on one MariaDB or PostgreSQL write the kine table at once; InnoDB may pick one of
their transactions as a deadlock victim and roll it back whole, savepoints included. Kine runs
each write of a batch inside a savepoint; the savepoint's rollback then fails ("SAVEPOINT sp0 does
not exist"), which used to hide the deadlock and end the write as "datastore unavailable".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.kine.dialects import base, open_database
from services.kine.sqllog import log as sqllog
from tests.conftest import MYSQL, POSTGRES, drop_database, endpoint_for, require, unique_name


@pytest.fixture
async def scratch(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
    scheme = request.param
    require(MYSQL if scheme == "mysql" else POSTGRES, "MariaDB" if scheme == "mysql" else "PostgreSQL")
    name = unique_name("kine_deadlock")
    _, db = await open_database(endpoint_for(scheme, name), data_dir=tmp_path)
    try:
        yield scheme, db
    finally:
        await db.close()
        await drop_database(scheme, name)


@pytest.mark.parametrize(
    "scratch",
    [pytest.param("mysql", marks=pytest.mark.mysql), pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
async def test_a_deadlock_victim_inside_a_savepoint_is_a_transient_error(scratch: tuple[str, Any]) -> None:
    scheme, db = scratch
    await db.query("CREATE TABLE rows_ab (id INTEGER PRIMARY KEY, v INTEGER)")
    await db.query("INSERT INTO rows_ab (id, v) VALUES " + ", ".join(f"({n}, 0)" for n in range(1, 31)))
    ph = "%s" if scheme == "mysql" else "$1"
    b_holds, a_waits = asyncio.Event(), asyncio.Event()

    async def victim() -> BaseException | None:
        """Locks row 1 inside a savepoint, then waits for row 2, which the other holds. It is the
        lighter transaction (InnoDB rolls the lighter one back) and the one waiting longer
        (PostgreSQL aborts the one whose deadlock check runs first)."""
        try:
            async with db.transaction() as tx, tx.savepoint():
                await b_holds.wait()
                await tx.query(f"UPDATE rows_ab SET v = 1 WHERE id = {ph}", (1,))
                a_waits.set()
                await tx.query(f"UPDATE rows_ab SET v = 1 WHERE id = {ph}", (2,))
        except Exception as exc:  # noqa: BLE001 - the test looks at what came out
            return exc
        return None

    async def other() -> None:
        async with db.transaction() as tx:
            for n in range(2, 31):
                await tx.query(f"UPDATE rows_ab SET v = 2 WHERE id = {ph}", (n,))
            b_holds.set()
            await a_waits.wait()
            await asyncio.sleep(0.3)  # the victim waits for row 2 by now
            await tx.query(f"UPDATE rows_ab SET v = 2 WHERE id = {ph}", (1,))

    outcome, _ = await asyncio.wait_for(asyncio.gather(victim(), other(), return_exceptions=True), 60)
    assert isinstance(outcome, base.TransientError), repr(outcome)
    assert [tuple(r) for r in await db.query("SELECT id, v FROM rows_ab WHERE id < 3 ORDER BY id")] == [(1, 2), (2, 2)]


async def test_the_log_runs_a_write_the_database_rolled_back_again(tmp_path: Path) -> None:
    dialect, db = await open_database("memory://", data_dir=tmp_path)
    log_ = sqllog.SqlLog(dialect, db)
    await log_.start(subscriber=lambda rows: None)
    runs = 0

    async def job(ltx: sqllog.LogTx) -> str:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise base.TransientError("deadlock found when trying to get lock")
        return "written"

    try:
        assert await log_.write(job) == "written"
        assert runs == 3
    finally:
        await log_.stop()
        await db.close()
