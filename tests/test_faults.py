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
