"""Timeouts, cancellation and lost connections: the connection stays usable or fails clearly."""

import asyncio

import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


async def test_timeout_cancels_server_side_and_connection_stays_usable(con):
    with pytest.raises(asyncio.TimeoutError):
        await con.fetchval("SELECT pg_sleep(10)", timeout=0.2)
    # the next query does not wait for the sleep to finish: the server query was cancelled
    assert await asyncio.wait_for(con.fetchval("SELECT 42"), 5) == 42


async def test_invalid_timeout_is_refused_before_anything_is_sent(con):
    import io

    stmt = await con.prepare("SELECT $1::int")
    calls = {
        "execute": lambda t: con.execute("SELECT 1", timeout=t),
        "execute with args": lambda t: con.execute("SELECT $1::int", 1, timeout=t),
        "fetch": lambda t: con.fetch("SELECT 1", timeout=t),
        "fetchrow": lambda t: con.fetchrow("SELECT 1", timeout=t),
        "fetchval": lambda t: con.fetchval("SELECT 1", timeout=t),
        "fetchmany": lambda t: con.fetchmany("SELECT $1::int", [(1,)], timeout=t),
        "executemany": lambda t: con.executemany("SELECT $1::int", [(1,)], timeout=t),
        "prepare": lambda t: con.prepare("SELECT 2", timeout=t),
        "stmt.fetch": lambda t: stmt.fetch(1, timeout=t),
        "stmt.executemany": lambda t: stmt.executemany([(1,)], timeout=t),
        "copy_from_query": lambda t: con.copy_from_query(
            "SELECT $1::int", 1, output=io.BytesIO(), timeout=t
        ),
        "copy_to_table": lambda t: con.copy_to_table("nowhere", source=io.BytesIO(b""), timeout=t),
    }
    for name, call in calls.items():
        for bad in ("a", False, [1]):
            with pytest.raises(ValueError, match="invalid timeout value"):
                await call(bad)
            # nothing was sent: the connection is idle and usable
            assert await con.fetchval("SELECT 3") == 3, (name, bad)
    async with con.transaction():
        cur = await con.cursor("SELECT generate_series(1, 3)")
        with pytest.raises(ValueError, match="invalid timeout value"):
            await cur.fetch(1, timeout="a")
        assert await cur.fetch(1) == [(1,)]
    # a number given as a string or an int is a number, as in asyncpg
    assert await con.fetchval("SELECT 4", timeout="5") == 4
    assert await con.fetchval("SELECT 5", timeout=5) == 5


async def test_command_timeout_default(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), command_timeout=0.2)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await con.execute("SELECT pg_sleep(10)")
        assert await asyncio.wait_for(con.fetchval("SELECT 1"), 5) == 1
    finally:
        await con.close()


async def test_task_cancel_leaves_connection_usable(con):
    task = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(10)"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(con.fetchval("SELECT 7"), 5) == 7
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(con.fetchval("SELECT pg_sleep(10)"), 0.1)
    assert await asyncio.wait_for(con.fetchval("SELECT 8"), 5) == 8
    assert not con.is_in_transaction()


async def test_cancel_while_waiting_for_an_earlier_cancellation(con):
    # the next query waits for a timed-out one's cancellation to land; cancelling that
    # waiting query must not cancel the cancellation, or the connection stays busy
    with pytest.raises(asyncio.TimeoutError):
        await con.fetchval("SELECT pg_sleep(10)", timeout=0.05)
    waiting = asyncio.ensure_future(con.fetchval("SELECT 1"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(con.fetchval("SELECT 2"), 5) == 2


async def test_cancel_inside_transaction(con):
    tr = con.transaction()
    await tr.start()
    with pytest.raises(asyncio.TimeoutError):
        await con.fetchval("SELECT pg_sleep(10)", timeout=0.1)
    # the transaction is now aborted server-side; rolling back works
    await tr.rollback()
    assert await con.fetchval("SELECT 1") == 1


async def test_backend_terminated_mid_query(pg, con):
    other = await asyncpg_rs.connect(**pg.connect_kwargs())
    fired = []
    con.add_termination_listener(lambda c: fired.append(c))
    try:
        pid = con.get_server_pid()
        task = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.2)
        await other.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises((exceptions.ConnectionDoesNotExistError, exceptions.AdminShutdownError)):
            await asyncio.wait_for(task, 5)
        await asyncio.sleep(0.05)
        assert con.is_closed()
        with pytest.raises(exceptions.InterfaceError):
            await con.fetchval("SELECT 1")
        assert len(fired) == 1
    finally:
        await other.close()


async def test_backend_terminated_while_idle(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs())
    other = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        await other.fetchval("SELECT pg_terminate_backend($1)", con.get_server_pid())
        for _ in range(50):
            if con.is_closed():
                break
            await asyncio.sleep(0.02)
        assert con.is_closed()
        with pytest.raises(exceptions.InterfaceError):
            await con.fetchval("SELECT 1")
    finally:
        await other.close()
        con.terminate()


async def test_failed_operations_leave_no_reference_cycles(con):
    # a failed operation's error must be freed by its refcount: a cycle through the error's
    # traceback (a frame holding the failed future) would keep every frame and row of the
    # failure alive until the cyclic GC runs
    import gc
    import io
    import weakref

    await con.execute("CREATE TEMP TABLE cyc (a int PRIMARY KEY)")
    await con.execute("INSERT INTO cyc VALUES (1)")
    stmt = await con.prepare("SELECT 1 / $1::int4")
    failing = {
        "execute": lambda: con.execute("SELECT 1/0"),
        "fetch": lambda: con.fetch("SELECT 1 / $1::int4", 0),
        "fetchval timeout": lambda: con.fetchval("SELECT 1 / $1::int4", 0, timeout=5),
        "prepared": lambda: stmt.fetchval(0),
        "executemany": lambda: con.executemany("INSERT INTO cyc VALUES ($1)", [(1,)]),
        "copy in": lambda: con.copy_records_to_table("cyc", records=[(1,)]),
        "copy out": lambda: con.copy_from_query("SELECT 1/0", output=io.BytesIO()),
    }
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name, op in failing.items():
            try:
                await op()
            except exceptions.PostgresError as e:
                ref = weakref.ref(e)
            else:
                raise AssertionError(f"{name} did not fail")
            await asyncio.sleep(0)  # the loop's handle of this step holds the future till now
            assert ref() is None, f"{name}: the error is kept alive by a reference cycle"
    finally:
        if gc_was_enabled:
            gc.enable()
    assert await con.fetchval("SELECT 3") == 3
