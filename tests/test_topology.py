"""Beyond one server: a real hot standby and a real PgBouncer, started by the harness.

- ``target_session_attrs``: all six values against a primary and its standby, in both orders.
- Failover: a pool over both hosts with ``target_session_attrs=read-write`` keeps serving when
  the primary stops and the standby is promoted; tasks in flight get a connection error, none
  hangs, and the time until the pool serves writes again is measured and bounded.
- PgBouncer in session mode (every API) and in transaction mode with the unnamed statement
  (``statement_cache_size=0``), which is what works through a transaction pooler today.
"""

from __future__ import annotations

import asyncio
import time

import pgcluster
import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


@pytest.fixture(scope="module")
def standby(pg):
    if getattr(pg, "external", False):
        pytest.skip("needs the throwaway cluster (ASYNCPG_RS_TEST_DSN is set)")
    s = pgcluster.Standby.of(pg)
    try:
        yield s
    finally:
        s.stop()


def _hosts(*clusters):
    return {
        "host": [c.host for c in clusters],
        "port": [c.port for c in clusters],
        "user": "postgres",
        "database": "postgres",
    }


async def _in_recovery(con) -> bool:
    return await con.fetchval("SELECT pg_is_in_recovery()")


# (hosts in the order given, expected role of the chosen server: True = standby)
TSA_CASES = [
    ("any", "primary_first", False),
    ("any", "standby_first", True),
    ("read-write", "primary_first", False),
    ("read-write", "standby_first", False),
    ("primary", "standby_first", False),
    ("read-only", "primary_first", True),
    ("standby", "primary_first", True),
    ("prefer-standby", "primary_first", True),
    ("prefer-standby", "standby_first", True),
]


@pytest.mark.parametrize("attrs,order,expect_standby", TSA_CASES)
async def test_target_session_attrs_choose_the_right_server(
    pg, standby, attrs, order, expect_standby
):
    clusters = (pg, standby) if order == "primary_first" else (standby, pg)
    con = await asyncpg_rs.connect(**_hosts(*clusters), target_session_attrs=attrs)
    try:
        assert await _in_recovery(con) is expect_standby
        if not expect_standby:
            await con.execute("CREATE TEMP TABLE tsa_probe(i int)")
    finally:
        await con.close()


async def test_target_session_attrs_as_uri_parameter(pg, standby):
    dsn = (
        f"postgresql://postgres@{pg.host}:{pg.port},{standby.host}:{standby.port}/postgres"
        "?target_session_attrs=standby"
    )
    con = await asyncpg_rs.connect(dsn)
    try:
        assert await _in_recovery(con) is True
    finally:
        await con.close()


@pytest.mark.parametrize(
    "attrs,only,reason",
    [
        ("read-write", "standby", "read-write"),
        ("primary", "standby", "primary"),
        ("read-only", "primary", "read-only"),
        ("standby", "primary", "standby"),
    ],
)
async def test_target_session_attrs_no_matching_server(pg, standby, attrs, only, reason):
    cluster = standby if only == "standby" else pg
    with pytest.raises(exceptions.TargetServerAttributeNotMatched) as info:
        await asyncpg_rs.connect(**_hosts(cluster), target_session_attrs=attrs)
    # asyncpg's wording, which names the requirement
    assert reason in str(info.value)


async def test_prefer_standby_falls_back_to_the_primary(pg):
    con = await asyncpg_rs.connect(**_hosts(pg), target_session_attrs="prefer-standby")
    try:
        assert await _in_recovery(con) is False
    finally:
        await con.close()


# ---------------------------------------------------------------- failover


async def test_pool_survives_failover_to_a_promoted_standby():
    """Stop the primary (immediate), promote the standby: writes resume through the same pool."""
    loop = asyncio.get_running_loop()
    primary = await loop.run_in_executor(None, pgcluster.Cluster.start)
    standby = None
    try:
        standby = await loop.run_in_executor(None, pgcluster.Standby.of, primary)
        pool = await asyncpg_rs.create_pool(
            **_hosts(primary, standby),
            target_session_attrs="read-write",
            min_size=4,
            max_size=4,
            command_timeout=5,
        )
        async with pool:
            await pool.execute("CREATE TABLE failover_log(id int PRIMARY KEY)")
            await asyncio.sleep(0)  # let the standby replay the table before the stop

            ok: list[int] = []
            failed: dict[str, int] = {}
            stop_at = [0.0]
            next_id = iter(range(1, 10**9))

            async def writer():
                while not stop_at[0] or time.monotonic() < stop_at[0]:
                    i = next(next_id)
                    try:
                        got = await pool.fetchval(
                            "INSERT INTO failover_log VALUES ($1) RETURNING id", i
                        )
                        assert got == i
                        ok.append(i)
                    except (
                        OSError,
                        asyncio.TimeoutError,
                        exceptions.PostgresError,
                        exceptions.InterfaceError,
                        # between the stop and the promotion no host is read-write
                        exceptions.TargetServerAttributeNotMatched,
                    ) as e:
                        failed[type(e).__name__] = failed.get(type(e).__name__, 0) + 1
                        await asyncio.sleep(0.05)

            # wait until the standby has the table, so promoted it can take inserts
            while True:
                probe = await asyncpg_rs.connect(**_hosts(standby))
                try:
                    if await probe.fetchval("SELECT to_regclass('failover_log') IS NOT NULL"):
                        break
                finally:
                    await probe.close()
                await asyncio.sleep(0.05)

            tasks = [asyncio.ensure_future(writer()) for _ in range(8)]
            await asyncio.sleep(0.3)
            before = len(ok)
            assert before > 0
            killed_at = time.monotonic()
            await loop.run_in_executor(None, _stop_immediately, primary)
            await loop.run_in_executor(None, standby.promote)
            promoted_at = time.monotonic()
            # recovered once a write succeeds after the promotion
            while True:
                n = len(ok)
                await asyncio.sleep(0.01)
                if len(ok) > n and time.monotonic() > promoted_at:
                    break
                assert time.monotonic() - promoted_at < 30, f"no write after failover: {failed}"
            recovered_at = time.monotonic()
            stop_at[0] = time.monotonic() + 0.3
            # every task finishes by itself: nothing hangs on the dead primary
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

            rows = {r["id"] for r in await pool.fetch("SELECT id FROM failover_log")}
            # every insert acknowledged after the promotion is on the new primary
            after = [i for i in ok[before:] if i in rows]
            assert after
            print(
                f"\nfailover: {len(ok)} writes ok, failed {failed}, "
                f"recovery {recovered_at - promoted_at:.3f}s after promotion, "
                f"{recovered_at - killed_at:.3f}s after the primary stopped"
            )
    finally:
        if standby is not None:
            await loop.run_in_executor(None, standby.stop)
        await loop.run_in_executor(None, primary.stop)


def _stop_immediately(cluster):
    import os

    cluster._run(
        [
            os.path.join(cluster.bindir, "pg_ctl"),
            "-D",
            cluster.data_dir,
            "-m",
            "immediate",
            "-w",
            "stop",
        ]
    )


# ---------------------------------------------------------------- PgBouncer


@pytest.fixture(scope="module")
def bouncer_session(pg):
    if getattr(pg, "external", False):
        pytest.skip("needs the throwaway cluster (ASYNCPG_RS_TEST_DSN is set)")
    b = pgcluster.PgBouncer.start(pg, "session", pool_size=5)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def bouncer_transaction(pg):
    if getattr(pg, "external", False):
        pytest.skip("needs the throwaway cluster (ASYNCPG_RS_TEST_DSN is set)")
    b = pgcluster.PgBouncer.start(pg, "transaction", pool_size=5)
    try:
        yield b
    finally:
        b.stop()


async def _exercise_every_api(con, table):
    await con.execute(f"CREATE TEMP TABLE {table}(id int, name text)")
    await con.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(i, str(i)) for i in range(50)])
    assert await con.fetchval(f"SELECT count(*) FROM {table}") == 50
    assert (await con.fetchrow(f"SELECT * FROM {table} WHERE id = $1", 7))["name"] == "7"
    stmt = await con.prepare(f"SELECT name FROM {table} WHERE id = $1")
    assert await stmt.fetchval(9) == "9"
    async with con.transaction():
        names = [r["name"] async for r in con.cursor(f"SELECT name FROM {table} ORDER BY id")]
        assert names == [str(i) for i in range(50)]
    await con.copy_records_to_table(table, records=[(100, "c")])
    assert await con.fetchval(f"SELECT name FROM {table} WHERE id = 100") == "c"


async def test_pgbouncer_session_mode_every_api(bouncer_session):
    con = await asyncpg_rs.connect(**bouncer_session.connect_kwargs())
    try:
        await _exercise_every_api(con, "bouncer_s")
        # a server error leaves the connection usable through the pooler
        with pytest.raises(exceptions.UndefinedTableError):
            await con.fetch("SELECT * FROM no_such_table_here")
        assert await con.fetchval("SELECT 1") == 1
    finally:
        await con.close()


async def test_pgbouncer_transaction_mode_every_api_with_defaults(bouncer_transaction):
    """The default settings (statement cache on) through a transaction pooler: every API."""
    con = await asyncpg_rs.connect(**bouncer_transaction.connect_kwargs())
    try:
        # temp tables do not survive a transaction pooler: a real one, unique per loop
        table = f"bouncer_t_{id(con):x}"
        await con.execute(f"CREATE TABLE {table}(id int, name text)")
        try:
            await con.executemany(
                f"INSERT INTO {table} VALUES ($1, $2)", [(i, str(i)) for i in range(50)]
            )
            for _ in range(3):  # cached statements, reused on whatever server is free
                assert await con.fetchval(f"SELECT count(*) FROM {table}") == 50
                row = await con.fetchrow(f"SELECT * FROM {table} WHERE id = $1", 7)
                assert row["name"] == "7"
            stmt = await con.prepare(f"SELECT name FROM {table} WHERE id = $1")
            for i in range(3):
                assert await stmt.fetchval(i) == str(i)
            async with con.transaction():
                cur = con.cursor(f"SELECT name FROM {table} ORDER BY id")
                names = [r["name"] async for r in cur]
                assert names == [str(i) for i in range(50)]
                await con.execute(f"UPDATE {table} SET name = 'x' WHERE id = $1", 1)
            await con.copy_records_to_table(table, records=[(100, "c")])
            assert await con.fetchval(f"SELECT name FROM {table} WHERE id = 100") == "c"
            assert await con.fetchval(f"SELECT name FROM {table} WHERE id = 1") == "x"
            with pytest.raises(exceptions.UndefinedTableError):
                await con.fetch("SELECT * FROM no_such_table_here")
            assert await con.fetchval("SELECT 1") == 1
        finally:
            await con.execute(f"DROP TABLE {table}")
    finally:
        await con.close()


async def test_pgbouncer_transaction_mode_load(bouncer_transaction):
    """64 tasks on a pool of 20 through a PgBouncer pool of 5 server connections, default
    settings, mixed work (queries, prepared statements, transactions, executemany) for a
    bounded time: no error."""
    pool = await asyncpg_rs.create_pool(
        **bouncer_transaction.connect_kwargs(), min_size=5, max_size=20
    )
    table = f"bouncer_load_{id(pool):x}"
    async with pool:
        await pool.execute(f"CREATE TABLE {table}(task int, i int)")
        errors: list[BaseException] = []
        ops = [0]
        stop = time.monotonic() + 3.0

        async def worker(n):
            i = 0
            while time.monotonic() < stop:
                i += 1
                v = n * 100000 + i
                try:
                    assert await pool.fetchval("SELECT $1::int", v) == v
                    row = await pool.fetchrow("SELECT $1::text AS t, $2::int8 AS i", str(v), v)
                    assert (row["t"], row["i"]) == (str(v), v)
                    async with pool.acquire() as con:
                        stmt = await con.prepare("SELECT $1::int * 2")
                        assert await stmt.fetchval(v) == 2 * v
                        async with con.transaction():
                            await con.execute(f"INSERT INTO {table} VALUES ($1, $2)", n, i)
                            got = await con.fetchval(
                                f"SELECT count(*) FROM {table} WHERE task = $1", n
                            )
                            assert got == i
                        await con.executemany(
                            f"INSERT INTO {table} VALUES ($1, $2)", [(-n - 1, i), (-n - 1, i)]
                        )
                    ops[0] += 6
                except Exception as e:  # collected: the assertion below names them all
                    errors.append(e)
                    return

        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(64))), 60)
        try:
            assert errors == []
            assert ops[0] > 0
        finally:
            await pool.execute(f"DROP TABLE {table}")
        print(f"\npgbouncer transaction mode: {ops[0]} operations, 0 errors")


async def test_pooler_recognised_only_behind_one(pg, bouncer_transaction, bouncer_session):
    """A direct connection prepares by name; through either pooler mode it does not."""
    query = "SELECT 12345::int"
    for kwargs, pooled in (
        (pg.connect_kwargs(), False),
        (bouncer_session.connect_kwargs(), True),
        (bouncer_transaction.connect_kwargs(), True),
    ):
        con = await asyncpg_rs.connect(**kwargs)
        try:
            await con.fetchval(query)
            named = await con.fetchval(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", query
            )
            # through the transaction pooler the count may come from another backend: only
            # the direct connection's answer is certain to see its own statements
            if not pooled:
                assert named == 1
            else:
                assert named == 0
        finally:
            await con.close()


async def test_lost_named_statement_is_recovered(con):
    """The safety net, on a direct connection: a named statement that vanished behind our
    back (as a pooler would make it) is re-run unnamed, once, outside a transaction."""
    assert await con.fetchval("SELECT 7::int") == 7
    await con.execute("DEALLOCATE ALL")
    assert await con.fetchval("SELECT 7::int") == 7
    # from now on the connection prepares nothing by name
    assert await con.fetchval("SELECT 8::int") == 8
    assert await con.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0


async def test_lost_named_statement_inside_a_transaction_raises(con):
    assert await con.fetchval("SELECT 9::int") == 9
    await con.execute("DEALLOCATE ALL")
    with pytest.raises(exceptions.InvalidSQLStatementNameError) as info:
        async with con.transaction():
            await con.fetchval("SELECT 9::int")
    assert any("connection pooler" in n for n in getattr(info.value, "__notes__", []))
    # the transaction can be retried as the note says
    async with con.transaction():
        assert await con.fetchval("SELECT 9::int") == 9


async def test_listen_through_a_pooler_warns(bouncer_session):
    con = await asyncpg_rs.connect(**bouncer_session.connect_kwargs())
    try:
        with pytest.warns(RuntimeWarning, match="connection pooler"):
            await con.add_listener("chan", lambda *a: None)
    finally:
        await con.close()


async def test_unnamed_cached_statement_sees_a_changed_result_type(bouncer_transaction):
    """DDL between two runs of a cached unnamed statement: the new column type is decoded
    as what it is now, never with the old codec."""
    con = await asyncpg_rs.connect(**bouncer_transaction.connect_kwargs())
    table = f"bouncer_ddl_{id(con):x}"
    try:
        await con.execute(f"CREATE TABLE {table}(c int4)")
        await con.execute(f"INSERT INTO {table} VALUES (1234)")
        assert await con.fetchval(f"SELECT c FROM {table}") == 1234
        await con.execute(f"ALTER TABLE {table} ALTER COLUMN c TYPE text")
        assert await con.fetchval(f"SELECT c FROM {table}") == "1234"
    finally:
        await con.execute(f"DROP TABLE IF EXISTS {table}")
        await con.close()


async def test_unnamed_cached_statement_after_ddl_direct(con):
    """The same on a direct connection turned pooled by a vanished statement, where every
    query certainly reaches the one backend that saw the DDL."""
    await con.fetchval("SELECT 1")
    await con.execute("DEALLOCATE ALL")
    await con.fetchval("SELECT 1")  # recovered: the connection prepares unnamed from now on
    await con.execute("CREATE TEMP TABLE ddl_probe(c int4)")
    await con.execute("INSERT INTO ddl_probe VALUES (1234)")
    assert await con.fetchval("SELECT c FROM ddl_probe") == 1234
    await con.execute("ALTER TABLE ddl_probe ALTER COLUMN c TYPE text")
    assert await con.fetchval("SELECT c FROM ddl_probe") == "1234"
    assert await con.fetchval("SELECT c FROM ddl_probe") == "1234"
