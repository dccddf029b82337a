"""Queries: execute, fetch*, executemany, statement cache, argument errors."""

import asyncio

import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


async def test_execute_status_strings(con):
    assert await con.execute("CREATE TEMP TABLE q1 (a int4, b text)") == "CREATE TABLE"
    assert await con.execute("INSERT INTO q1 VALUES (1, 'a')") == "INSERT 0 1"
    assert await con.execute("INSERT INTO q1 VALUES ($1, $2)", 2, "b") == "INSERT 0 1"
    assert await con.execute("UPDATE q1 SET b = 'z'") == "UPDATE 2"
    # several statements through the simple-query protocol: the last status wins
    assert await con.execute("SELECT 1; DELETE FROM q1 WHERE a = 1") == "DELETE 1"
    assert await con.execute("") == ""


async def test_fetch_variants(con):
    rows = await con.fetch("SELECT g AS n, g::text AS s FROM generate_series(1, 3) g")
    assert [tuple(r) for r in rows] == [(1, "1"), (2, "2"), (3, "3")]
    assert await con.fetch("SELECT 1 WHERE false") == []
    row = await con.fetchrow("SELECT $1::int4 AS a, $2::text AS b", 7, "x")
    assert tuple(row) == (7, "x")
    assert await con.fetchrow("SELECT 1 WHERE false") is None
    assert await con.fetchval("SELECT 1, 2, 3", column=2) == 3
    assert await con.fetchval("SELECT 1 WHERE false") is None
    assert await con.fetchval("SELECT NULL::int4") is None
    assert await con.fetchval("SELECT $1::bool", True) is True


async def test_fetchmany_is_pipelined_and_returns_all_rows(con):
    rows = await con.fetchmany("SELECT $1::int4 * 2, $2::text", [(1, "a"), (2, "b"), (3, "c")])
    assert [tuple(r) for r in rows] == [(2, "a"), (4, "b"), (6, "c")]


async def test_executemany_is_atomic(con):
    await con.execute("CREATE TEMP TABLE em (a int4 PRIMARY KEY, b text)")
    await con.executemany("INSERT INTO em VALUES ($1, $2)", [(i, str(i)) for i in range(100)])
    assert await con.fetchval("SELECT count(*) FROM em") == 100
    with pytest.raises(exceptions.UniqueViolationError):
        await con.executemany(
            "INSERT INTO em VALUES ($1, $2)", [(1000, "x"), (1, "dup"), (1001, "y")]
        )
    # nothing of the failed batch is visible
    assert await con.fetchval("SELECT count(*) FROM em WHERE a >= 1000") == 0
    assert await con.fetchval("SELECT 1") == 1


async def test_executemany_bad_argument_sends_nothing(con):
    await con.execute("CREATE TEMP TABLE em2 (a int4, b text)")
    with pytest.raises(exceptions.DataError) as ei:
        await con.executemany("INSERT INTO em2 VALUES ($1, $2)", [(1, "a"), ("two", "b")])
    assert "query argument $1 in element #1 of executemany() sequence" in str(ei.value)
    assert await con.fetchval("SELECT count(*) FROM em2") == 0
    with pytest.raises(exceptions.DataError, match="element #1: expected a sequence"):
        await con.executemany("INSERT INTO em2 VALUES ($1, $2)", [(1, "a"), {1: 2}])
    with pytest.raises(ZeroDivisionError):
        await con.executemany("INSERT INTO em2 VALUES ($1, $2)", ((1 / 0, "x") for _ in range(3)))
    assert await con.fetchval("SELECT count(*) FROM em2") == 0


async def test_wrong_argument_type_is_data_error_naming_the_argument(con):
    with pytest.raises(exceptions.DataError) as ei:
        await con.fetchval("SELECT $1::int4 + $2::int4", 1, "x")
    assert str(ei.value).startswith("invalid input for query argument $2: 'x'")
    assert "int4" in ei.value.hint
    # the connection is still usable
    assert await con.fetchval("SELECT $1::int4 + $2::int4", 1, 2) == 3


async def test_wrong_argument_count(con):
    with pytest.raises(exceptions.InterfaceError) as ei:
        await con.fetchval("SELECT $1::int4 + $2::int4", 1)
    assert "expects 2 arguments" in str(ei.value) and "1 was passed" in str(ei.value)
    assert await con.fetchval("SELECT 2") == 2


async def test_server_error_carries_fields(con):
    await con.execute("CREATE TEMP TABLE uv (a int4 CONSTRAINT uv_pk PRIMARY KEY)")
    await con.execute("INSERT INTO uv VALUES (1)")
    with pytest.raises(exceptions.UniqueViolationError) as ei:
        await con.execute("INSERT INTO uv VALUES ($1)", 1)
    e = ei.value
    assert e.sqlstate == "23505"
    assert e.constraint_name == "uv_pk"
    assert e.table_name == "uv"
    assert isinstance(e, exceptions.IntegrityConstraintViolationError)
    assert e.as_dict()["constraint_name"] == "uv_pk"
    with pytest.raises(exceptions.PostgresSyntaxError):
        await con.execute("SELEC 1")
    with pytest.raises(exceptions.DivisionByZeroError):
        await con.fetchval("SELECT 1 / $1::int4", 0)
    assert await con.fetchval("SELECT 1") == 1


async def test_concurrent_operations_are_refused(con):
    slow = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0.05)
    with pytest.raises(exceptions.InterfaceError, match="another operation is in progress"):
        await con.fetchval("SELECT 1")
    await slow
    assert await con.fetchval("SELECT 1") == 1


async def test_statement_cache_reuses_and_evicts(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), statement_cache_size=2)
    try:
        for q in ("SELECT 1", "SELECT 2", "SELECT 1", "SELECT 3", "SELECT 4"):
            await con.fetchval(q)
        named = await con.fetch(
            "SELECT name FROM pg_prepared_statements WHERE name LIKE '__asyncpg_rs_stmt%'"
        )
        # at most the cache size plus this very query's statement stay prepared
        assert len(named) <= 3
    finally:
        await con.close()


async def test_statement_cache_disabled_uses_unnamed_statements(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), statement_cache_size=0)
    try:
        for i in range(5):
            assert await con.fetchval("SELECT $1::int4", i) == i
        assert await con.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
    finally:
        await con.close()


async def test_stale_cached_statement_is_reprepared_outside_transaction(con):
    await con.execute("CREATE TEMP TABLE stale (a int4)")
    await con.execute("INSERT INTO stale VALUES (1)")
    assert [tuple(r) for r in await con.fetch("SELECT * FROM stale")] == [(1,)]
    await con.execute("ALTER TABLE stale ADD COLUMN b int4")
    assert [tuple(r) for r in await con.fetch("SELECT * FROM stale")] == [(1, None)]


async def test_stale_cached_statement_inside_transaction_raises(con):
    await con.execute("CREATE TEMP TABLE stale2 (a int4)")
    await con.fetch("SELECT * FROM stale2")
    await con.execute("ALTER TABLE stale2 ADD COLUMN b int4")
    with pytest.raises(exceptions.InvalidCachedStatementError):
        async with con.transaction():
            await con.fetch("SELECT * FROM stale2")
    assert await con.fetch("SELECT * FROM stale2") == []


async def test_info_methods(con):
    v = con.get_server_version()
    assert v.major >= 10 and v.releaselevel in ("final", "devel", "beta", "rc", "alpha")
    assert con.get_server_pid() == await con.fetchval("SELECT pg_backend_pid()")
    assert con.get_settings().server_encoding == "UTF8"
    assert con.get_reset_query().count(";") >= 3
    assert not con.is_in_transaction()
    assert not con.is_closed()


async def test_close_and_terminate(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs())
    await con.close()
    assert con.is_closed()
    with pytest.raises(exceptions.InterfaceError, match="connection is closed"):
        await con.fetchval("SELECT 1")
    con2 = await asyncpg_rs.connect(**pg.connect_kwargs())
    con2.terminate()
    assert con2.is_closed()


async def test_executemany_streams_and_aborts_on_client_failure(con):
    await con.execute("CREATE TEMP TABLE ems (a int4)")

    def gen(fail_at):
        for i in range(5000):
            if i == fail_at:
                raise ValueError("generator broke")
            yield (i,)

    # outside a transaction the whole batch is rolled back
    with pytest.raises(ValueError, match="generator broke"):
        await con.executemany("INSERT INTO ems VALUES ($1)", gen(3000))
    assert await con.fetchval("SELECT count(*) FROM ems") == 0
    assert not con.is_in_transaction()
    # inside the caller's transaction what ran stays there, for the caller to decide
    async with con.transaction():
        with pytest.raises(ValueError):
            await con.executemany("INSERT INTO ems VALUES ($1)", gen(3000))
        assert 0 < await con.fetchval("SELECT count(*) FROM ems") <= 3000
    # a large input streams through without being materialised first
    assert await con.executemany("INSERT INTO ems VALUES ($1)", gen(-1)) is None
    assert await con.fetchval("SELECT count(*) FROM ems") >= 5000

    async def agen():
        for i in range(10):
            yield (i,)

    await con.executemany("INSERT INTO ems VALUES ($1)", agen())


async def test_queries_go_through_the_methods_instrumentation_wraps(con, monkeypatch):
    # Sentry's asyncpg integration replaces Connection._execute, Connection._executemany and
    # BaseCursor._bind_exec/_exec and reads the query from the positional arguments
    from asyncpg_rs import connection as connection_mod
    from asyncpg_rs import cursor as cursor_mod

    seen = []

    def traced(name, method, take):
        async def wrapper(*args, **kwargs):
            seen.append((name, take(args)))
            return await method(*args, **kwargs)

        return wrapper

    conn_cls = connection_mod.Connection
    monkeypatch.setattr(
        conn_cls, "_execute", traced("_execute", conn_cls._execute, lambda a: (a[1], a[2]))
    )
    monkeypatch.setattr(
        conn_cls,
        "_executemany",
        traced("_executemany", conn_cls._executemany, lambda a: (a[1], list(a[2]))),
    )
    base = cursor_mod.BaseCursor
    for name in ("_bind_exec", "_exec", "_bind"):
        monkeypatch.setattr(base, name, traced(name, getattr(base, name), lambda a: a[0]._query))

    assert await con.fetch("SELECT $1::int4 AS a", 1) == [(1,)]
    assert await con.fetchrow("SELECT $1::int4 + 1", 1) == (2,)
    assert await con.fetchval("SELECT $1::int4 + 2", 1) == 3
    assert await con.execute("SELECT $1::int4", 4) == "SELECT 1"
    await con.executemany("SELECT $1::int4", [(5,), (6,)])
    q = "SELECT g FROM generate_series(1, 3) g"
    async with con.transaction():
        assert [r[0] async for r in con.cursor(q, prefetch=2)] == [1, 2, 3]
        cur = await con.cursor(q)
        assert [r[0] for r in await cur.fetch(5)] == [1, 2, 3]
    assert seen == [
        ("_execute", ("SELECT $1::int4 AS a", (1,))),
        ("_execute", ("SELECT $1::int4 + 1", (1,))),
        ("_execute", ("SELECT $1::int4 + 2", (1,))),
        ("_execute", ("SELECT $1::int4", (4,))),
        ("_executemany", ("SELECT $1::int4", [(5,), (6,)])),
        ("_bind_exec", q),
        ("_exec", q),
        ("_bind", q),
        ("_exec", q),
    ]
