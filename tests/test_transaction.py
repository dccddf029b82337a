"""Transactions and savepoints."""

import pytest

from asyncpg_rs import exceptions


async def test_commit_and_rollback(con):
    await con.execute("CREATE TEMP TABLE tx (a int4)")
    async with con.transaction():
        await con.execute("INSERT INTO tx VALUES (1)")
        assert con.is_in_transaction()
    assert not con.is_in_transaction()
    with pytest.raises(ZeroDivisionError):
        async with con.transaction():
            await con.execute("INSERT INTO tx VALUES (2)")
            1 / 0  # noqa: B018
    assert [r[0] for r in await con.fetch("SELECT a FROM tx")] == [1]


async def test_nested_transactions_are_savepoints(con):
    await con.execute("CREATE TEMP TABLE txn (a int4)")
    async with con.transaction():
        await con.execute("INSERT INTO txn VALUES (1)")
        with pytest.raises(RuntimeError):
            async with con.transaction():
                await con.execute("INSERT INTO txn VALUES (2)")
                raise RuntimeError
        async with con.transaction():
            await con.execute("INSERT INTO txn VALUES (3)")
    assert sorted(r[0] for r in await con.fetch("SELECT a FROM txn")) == [1, 3]


async def test_manual_start_commit_rollback(con):
    tr = con.transaction()
    assert "state:new" in repr(tr) and repr(tr).startswith("<asyncpg.Transaction ")
    await tr.start()
    await tr.commit()
    with pytest.raises(exceptions.InterfaceError, match="already committed"):
        await tr.commit()
    tr2 = con.transaction()
    with pytest.raises(exceptions.InterfaceError, match="not yet started"):
        await tr2.rollback()
    await tr2.start()
    await tr2.rollback()
    with pytest.raises(exceptions.InterfaceError, match="already rolled back"):
        await tr2.start()


async def test_transaction_in_manual_block_is_refused(con):
    await con.execute("BEGIN")
    with pytest.raises(exceptions.InterfaceError, match="manually started transaction"):
        async with con.transaction():
            pass
    await con.execute("ROLLBACK")


async def test_isolation_readonly_deferrable(con):
    async with con.transaction(isolation="serializable", readonly=True, deferrable=True):
        assert await con.fetchval("SHOW transaction_isolation") == "serializable"
        assert await con.fetchval("SHOW transaction_read_only") == "on"
        with pytest.raises(exceptions.ReadOnlySQLTransactionError):
            await con.execute("CREATE TEMP TABLE ro (a int4)")
    with pytest.raises(ValueError):
        con.transaction(isolation="bogus")


async def test_nested_with_other_isolation_is_refused(con):
    async with con.transaction(isolation="repeatable_read"):
        with pytest.raises(exceptions.InterfaceError, match="different isolation level"):
            async with con.transaction(isolation="serializable"):
                pass


async def test_failed_transaction_state(con):
    with pytest.raises(exceptions.DivisionByZeroError):
        async with con.transaction():
            await con.execute("SELECT 1/0")
    assert not con.is_in_transaction()
    assert await con.fetchval("SELECT 1") == 1


async def test_nested_isolation_is_checked_against_the_session_default(con):
    # the outer block takes the session's default level, changed here behind its back
    await con.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    try:
        async with con.transaction():
            async with con.transaction(isolation="serializable"):
                assert await con.fetchval("SHOW transaction_isolation") == "serializable"
            with pytest.raises(
                exceptions.InterfaceError, match="current 'read_committed' != outer 'serializable'"
            ):
                async with con.transaction(isolation="read_committed"):
                    pass
    finally:
        await con.execute(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"
        )
