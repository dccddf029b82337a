"""Cursors."""

import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


async def test_iterate_in_batches(con):
    async with con.transaction():
        got = [r[0] async for r in con.cursor("SELECT generate_series(1, 250)", prefetch=7)]
    assert got == list(range(1, 251))


async def test_cursor_needs_a_transaction(con):
    with pytest.raises(exceptions.NoActiveSQLTransactionError, match="cursor cannot be created"):
        await con.cursor("SELECT 1")
    with pytest.raises(exceptions.NoActiveSQLTransactionError):
        async for _ in con.cursor("SELECT 1"):
            pass


async def test_manual_cursor(con):
    async with con.transaction():
        cur = await con.cursor("SELECT generate_series(0, $1::int4)", 20)
        assert [r[0] for r in await cur.fetch(2)] == [0, 1]
        assert (await cur.fetchrow())[0] == 2
        assert await cur.forward(5) == 5
        assert (await cur.fetchrow())[0] == 8
        assert [r[0] for r in await cur.fetch(100)] == list(range(9, 21))
        assert await cur.fetchrow() is None
        assert await cur.fetch(3) == []
        assert repr(cur).startswith("<asyncpg.Cursor ") and " exhausted " in repr(cur)
        with pytest.raises(exceptions.InterfaceError, match="greater than zero"):
            await cur.fetch(0)


async def test_prepared_statement_cursor_and_prefetch_rules(con):
    st = await con.prepare("SELECT generate_series(0, 9)")
    async with con.transaction():
        assert [r[0] async for r in st.cursor(prefetch=3)] == list(range(10))
        with pytest.raises(exceptions.InterfaceError, match="prefetch argument can only"):
            await st.cursor(prefetch=10)
        with pytest.raises(exceptions.InterfaceError, match="greater than zero"):
            async for _ in st.cursor(prefetch=0):
                pass


async def test_exhausted_cursor_releases_its_portal(con):
    async with con.transaction():
        await con.execute("CREATE TABLE cur_lock (id int); INSERT INTO cur_lock VALUES (1), (2)")
        rows = [r async for r in con.cursor("SELECT * FROM cur_lock")]
        # DROP needs the portal's lock gone
        await con.execute("DROP TABLE cur_lock")
    assert [tuple(r) for r in rows] == [(1,), (2,)]


async def test_unnamed_statement_cursor(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), statement_cache_size=0)
    try:
        async with con.transaction():
            st = await con.prepare("SELECT $1::int4, $2::int4")
            assert st.get_name() == ""
            cur = await st.cursor(1, 2)
            assert [tuple(r) for r in await cur.fetch(1)] == [(1, 2)]
    finally:
        await con.close()
