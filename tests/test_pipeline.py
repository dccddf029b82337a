"""Pipelines: Connection.pipeline() and fetch_many_queries (asyncpg_rs/pipeline.py,
src/pg/protocol/pipeline.rs), on every loop, against the real server."""

import asyncio
import gc
import os

import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


async def _table(con, name, rows=20):
    await con.execute(f"CREATE TEMP TABLE {name} (id int4 PRIMARY KEY, v text, n int4)")
    await con.executemany(
        f"INSERT INTO {name} VALUES ($1, $2, 0)", [(i, f"v{i}") for i in range(rows)]
    )


async def test_results_in_order_and_all_sent_before_first_reply(con):
    await _table(con, "p1")
    pid = con.get_server_pid()
    async with con.pipeline() as p:
        a = p.fetchrow("SELECT * FROM p1 WHERE id = $1", 1)
        b = p.fetchval("SELECT count(*) FROM p1")
        c = p.execute("UPDATE p1 SET n = $1 WHERE id = $2", 5, 1)
        d = p.fetch("SELECT id FROM p1 WHERE id < $1 ORDER BY id", 3)
        e = p.fetchval("SELECT $1::int4, $2::text", 1, "x", column=1)
        f = p.fetchrow("SELECT 1 WHERE false")
        # the server's own backend answers: nothing ran on a side connection
        g = p.fetchval("SELECT pg_backend_pid()")
    assert tuple(await a) == (1, "v1", 0)
    assert await b == 20
    assert await c == "UPDATE 1"
    assert [r["id"] for r in await d] == [0, 1, 2]
    assert await e == "x"
    assert await f is None
    assert await g == pid
    assert await con.fetchval("SELECT n FROM p1 WHERE id = 1") == 5


# The stdlib's transport is a Python object whose write can be observed; uvloop's and ours
# are native, and the protocol writes to ours without a Python call.
@pytest.mark.loops("asyncio")
async def test_one_round_trip_when_statements_are_cached(con):
    # Counted on the wire: the protocol's writes to the transport during a warm pipeline.
    await _table(con, "p2")
    queries = [("SELECT v FROM p2 WHERE id = $1", (i,)) for i in range(20)]
    assert len(await con.fetch_many_queries(queries)) == 20  # warms the cache
    writes = []
    transport = con._protocol.get_transport()
    real_write = type(transport).write

    class Counting:
        def __getattr__(self, name):
            return getattr(transport, name)

        def write(self, data):
            writes.append(bytes(data))
            return real_write(transport, data)

    transport.write = Counting().write
    try:
        results = await con.fetch_many_queries(queries)
    finally:
        del transport.write
    assert [r[0]["v"] for r in results] == [f"v{i}" for i in range(20)]
    assert len(writes) == 1  # 20 Bind/Execute/Sync in one write
    assert writes[0].count(b"B") >= 20
    # cold: the new statement's Parse/Describe in one round trip, then the 20 executions
    writes.clear()
    transport.write = Counting().write
    try:
        cold = [(f"SELECT v, {k} FROM p2 WHERE id = $1", (k,)) for k in range(20)]
        results = await con.fetch_many_queries(cold)
    finally:
        del transport.write
    assert [r[0]["v"] for r in results] == [f"v{k}" for k in range(20)]
    assert len(writes) == 2
    assert writes[0].count(b"P") >= 20 and writes[1].count(b"E") >= 20


async def test_fetch_many_queries_forms(con):
    await _table(con, "p3")
    rows = await con.fetch_many_queries(
        ["SELECT 1 AS one", ("SELECT v FROM p3 WHERE id = $1", [3]), ("SELECT $1::int4", (9,))]
    )
    assert [[tuple(r) for r in rs] for rs in rows] == [[(1,)], [("v3",)], [(9,)]]

    async def agen():
        for i in range(5):
            yield "SELECT $1::int4 * 2", (i,)

    rows = await con.fetch_many_queries(agen())
    assert [rs[0][0] for rs in rows] == [0, 2, 4, 6, 8]
    assert await con.fetch_many_queries([]) == []
    with pytest.raises(exceptions.InterfaceError, match="statement #2: the query must be a str"):
        await con.fetch_many_queries(["SELECT 1", 42])
    with pytest.raises(exceptions.InterfaceError, match="statement #1: expected a .query, args"):
        await con.fetch_many_queries([("SELECT 1", (), "extra")])
    assert await con.fetchval("SELECT 1") == 1


async def test_failure_in_the_middle_affects_only_that_statement(con):
    await _table(con, "p4")
    async with con.pipeline() as p:
        ok1 = p.execute("INSERT INTO p4 VALUES ($1, 'a', 0)", 100)
        dup = p.execute("INSERT INTO p4 VALUES ($1, 'b', 0)", 1)  # duplicate key
        ok2 = p.execute("INSERT INTO p4 VALUES ($1, 'c', 0)", 101)
        with pytest.raises(exceptions.UniqueViolationError):
            await dup
    assert await ok1 == "INSERT 0 1"
    assert await ok2 == "INSERT 0 1"
    assert await con.fetchval("SELECT count(*) FROM p4 WHERE id >= 100") == 2
    # the plain form raises the first failure once all are done, or returns them
    res = await con.fetch_many_queries(
        [("SELECT 1/$1::int4", (1,)), ("SELECT 1/$1::int4", (0,)), "SELECT 2"],
        return_exceptions=True,
    )
    assert res[0][0][0] == 1 and res[2][0][0] == 2
    assert isinstance(res[1], exceptions.DivisionByZeroError)
    with pytest.raises(exceptions.DivisionByZeroError):
        await con.fetch_many_queries([("SELECT 1/$1::int4", (0,)), "SELECT 2"])


async def test_unawaited_failure_is_raised_at_the_end_of_the_block(con):
    await _table(con, "p5")
    with pytest.raises(exceptions.UniqueViolationError):
        async with con.pipeline() as p:
            p.execute("INSERT INTO p5 VALUES (1, 'dup', 0)")
            later = p.fetchval("SELECT 7")
    assert await later == 7
    assert await con.fetchval("SELECT 1") == 1


async def test_atomic_pipeline_is_one_transaction(con):
    await _table(con, "p6")
    with pytest.raises(exceptions.UniqueViolationError):
        async with con.pipeline(atomic=True) as p:
            first = p.execute("INSERT INTO p6 VALUES (200, 'x', 0)")
            p.execute("INSERT INTO p6 VALUES (1, 'dup', 0)")
            third = p.fetchval("SELECT 3")
            fourth = p.execute("INSERT INTO p6 VALUES (201, 'y', 0)")
    assert await first == "INSERT 0 1"  # ran, then rolled back with the rest
    for skipped in (third, fourth):
        with pytest.raises(exceptions.InterfaceError) as ei:
            await skipped
        assert "was skipped: pipeline statement #2 failed first" in str(ei.value)
        assert isinstance(ei.value.__cause__, exceptions.UniqueViolationError)
    assert await con.fetchval("SELECT count(*) FROM p6 WHERE id >= 200") == 0
    assert not con.is_in_transaction()
    # an atomic pipeline that succeeds commits everything
    async with con.pipeline(atomic=True) as p:
        p.execute("INSERT INTO p6 VALUES (300, 'x', 0)")
        p.execute("INSERT INTO p6 VALUES (301, 'x', 0)")
    assert await con.fetchval("SELECT count(*) FROM p6 WHERE id >= 300") == 2


async def test_atomic_pipeline_with_a_statement_that_does_not_parse(con):
    with pytest.raises(exceptions.PostgresSyntaxError):
        await con.fetch_many_queries(["SELECT 1", "SELEKT 2", "SELECT 3"], atomic=True)
    res = await con.fetch_many_queries(
        ["SELECT 1", "SELEKT 2", "SELECT 3"], atomic=True, return_exceptions=True
    )
    assert isinstance(res[1], exceptions.PostgresSyntaxError)
    assert isinstance(res[2], exceptions.InterfaceError)
    # independent statements: only the bad one fails
    res = await con.fetch_many_queries(["SELECT 1", "SELEKT 2", "SELECT 3"], return_exceptions=True)
    assert res[0][0][0] == 1 and res[2][0][0] == 3
    assert isinstance(res[1], exceptions.PostgresSyntaxError)
    assert await con.fetchval("SELECT 1") == 1


async def test_bad_argument_names_statement_and_parameter_and_sends_nothing(con):
    await _table(con, "p7")
    queries = [("UPDATE p7 SET n = $1 WHERE id = $2", (1, i)) for i in range(20)]
    queries[6] = ("UPDATE p7 SET n = $1 WHERE id = $2", (1, "seven"))
    with pytest.raises(exceptions.DataError) as ei:
        await con.fetch_many_queries(queries)
    assert "query argument $2 of pipeline statement #7" in str(ei.value)
    assert await con.fetchval("SELECT count(*) FROM p7 WHERE n = 1") == 0
    with pytest.raises(exceptions.DataError, match="statement #2"):
        async with con.pipeline() as p:
            first = p.execute("UPDATE p7 SET n = $1 WHERE id = $2", 1, 0)
            p.execute("UPDATE p7 SET n = $1 WHERE id = $2", "x", 1)
    with pytest.raises(exceptions.InterfaceError, match="was not sent"):
        await first
    assert await con.fetchval("SELECT count(*) FROM p7 WHERE n = 1") == 0
    with pytest.raises(exceptions.InterfaceError, match="statement #1: the server expects 2"):
        await con.fetch_many_queries([("SELECT $1::int4, $2::int4", (1,))])
    assert await con.fetchval("SELECT 1") == 1


async def test_inside_a_transaction(con):
    await _table(con, "p8")
    async with con.transaction():
        async with con.pipeline() as p:
            p.execute("UPDATE p8 SET n = 1 WHERE id = 1")
            p.execute("UPDATE p8 SET n = 1 WHERE id = 2")
        assert con.is_in_transaction()
    assert await con.fetchval("SELECT count(*) FROM p8 WHERE n = 1") == 2
    # a failure aborts the caller's transaction: the statements after it get the server's
    # own "current transaction is aborted"
    with pytest.raises(exceptions.DivisionByZeroError):
        async with con.transaction():
            res = await con.fetch_many_queries(
                ["UPDATE p8 SET n = 2", "SELECT 1/0", "SELECT 1"], return_exceptions=True
            )
            assert isinstance(res[2], exceptions.InFailedSQLTransactionError)
            raise res[1]
    assert await con.fetchval("SELECT count(*) FROM p8 WHERE n = 2") == 0
    # rolled back with the transaction
    async with con.transaction():
        await con.fetch_many_queries(["UPDATE p8 SET n = 3"], atomic=True)
        assert con.is_in_transaction()
    assert await con.fetchval("SELECT count(*) FROM p8 WHERE n = 3") == 20


async def test_concurrent_fetch_gets_another_operation_in_progress(con):
    started = asyncio.Event()

    async def run():
        async with con.pipeline() as p:
            r = p.fetchval("SELECT pg_sleep(0.3)::text || 'x'")
            started.set()
        return await r

    task = asyncio.ensure_future(run())
    await started.wait()
    await asyncio.sleep(0.05)
    with pytest.raises(exceptions.InterfaceError, match="another operation is in progress"):
        await con.fetchval("SELECT 1")
    assert await task == "x"
    assert await con.fetchval("SELECT 1") == 1


async def test_timeout_cancels_and_connection_stays_usable(con):
    sleep = "SELECT pg_sleep($1)"
    # warm: the timeout below bounds preparing too, and a busy machine must not make the
    # statement before the slow one miss it
    await con.fetch_many_queries(["SELECT 1", (sleep, (0,)), "SELECT 3"])
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(asyncio.TimeoutError):
        async with con.pipeline(timeout=0.5) as p:
            fast = p.fetchval("SELECT 1")
            slow = p.fetchval(sleep, 30)
            after = p.fetchval("SELECT 3")
    assert asyncio.get_running_loop().time() - t0 < 10
    assert await fast == 1
    with pytest.raises(asyncio.TimeoutError):
        await slow
    with pytest.raises(asyncio.TimeoutError):
        await after
    assert await con.fetchval("SELECT 42") == 42
    with pytest.raises(asyncio.TimeoutError):
        await con.fetch_many_queries([(sleep, (30,)), "SELECT 1"], timeout=0.5)
    assert await con.fetchval("SELECT 43") == 43
    with pytest.raises(ValueError, match="invalid timeout"):
        con.pipeline(timeout="soon")


async def test_cancellation_of_the_whole_pipeline(con):
    async def run():
        return await con.fetch_many_queries(
            ["SELECT 1", "SELECT pg_sleep(30)", "SELECT 2"], atomic=True
        )

    task = asyncio.ensure_future(run())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await con.fetchval("SELECT 44") == 44
    assert not con.is_in_transaction()


async def test_cancellation_of_independent_statements(con):
    # statements already sent are independent: those after the cancelled one still run
    await con.execute("CREATE TEMP TABLE p11 (a int4)")
    queries = [("SELECT pg_sleep($1)", (0,)), "INSERT INTO p11 VALUES (1)"]
    await con.fetch_many_queries(queries)  # warm: all of it is sent at once below
    queries[0] = ("SELECT pg_sleep($1)", (30,))
    task = asyncio.ensure_future(con.fetch_many_queries(queries))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await con.fetchval("SELECT count(*) FROM p11") == 2
    assert not con.is_in_transaction()


@pytest.mark.parametrize("atomic", [False, True])
async def test_new_type_is_introspected_inside_the_pipeline(con, atomic):
    await con.execute("DROP TYPE IF EXISTS pipe_mood CASCADE")
    await con.execute("CREATE TYPE pipe_mood AS ENUM ('sad', 'ok', 'happy')")
    await con.execute("DROP TYPE IF EXISTS pipe_pair CASCADE")
    await con.execute("CREATE TYPE pipe_pair AS (m pipe_mood, n int4)")
    try:
        await con.reload_schema_state()
        res = await con.fetch_many_queries(
            [
                "SELECT 1",
                ("SELECT $1::pipe_mood", ("happy",)),
                "SELECT ROW('ok', 2)::pipe_pair AS p",
                "SELECT 4",
            ],
            atomic=atomic,
        )
        assert res[1][0][0] == "happy"
        assert tuple(res[2][0]["p"]) == ("ok", 2)
        assert res[3][0][0] == 4
    finally:
        await con.execute("DROP TYPE pipe_pair")
        await con.execute("DROP TYPE pipe_mood")


async def test_statement_cache_is_used_and_filled(con):
    con._stmt_cache.clear()
    q = "SELECT $1::int4 + 100"
    await con.fetch_many_queries([(q, (i,)) for i in range(3)])
    assert con._stmt_cache.get(q) is not None
    # a prepared statement of the cache serves the sequential API too
    assert await con.fetchval(q, 1) == 101


async def test_without_statement_cache(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), statement_cache_size=0)
    try:
        q = "SELECT $1::int4 * 3"
        res = await con.fetch_many_queries([(q, (i,)) for i in range(700)])
        assert [r[0][0] for r in res] == [i * 3 for i in range(700)]
        assert len(con._stmt_cache) == 0
    finally:
        await con.close()


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_long_pipeline_streams_in_bounded_memory(con):
    # 100,000 statements with a 1 KiB argument each (100 MiB encoded) and a tiny result:
    # the input is consumed as the pipeline goes and every reply taken as it arrives, so
    # the process grows by what the results take, not by the encoded messages or arguments
    n = 100_000
    seen = 0
    blob = "x" * 1023

    def gen():
        nonlocal seen
        for i in range(n):
            seen += 1
            yield "SELECT $1::int4 + length($2)", (i, blob + str(i % 10))

    peak = base = _rss()
    running = True

    async def sample():
        nonlocal peak
        while running:
            peak = max(peak, _rss())
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        res = await con.fetch_many_queries(gen())
    finally:
        running = False
        await sampler
    assert seen == n and len(res) == n
    assert res[-1][0][0] == n - 1 + 1024
    assert peak - base < 60 * 2**20, f"grew by {(peak - base) >> 20} MiB"
    del res
    assert await con.fetchval("SELECT 1") == 1


async def test_pool_connection_and_pool_level(pg):
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=2) as pool:
        async with pool.acquire() as c:
            async with c.pipeline() as p:
                r = p.fetchval("SELECT $1::int4", 5)
            assert await r == 5
            pipe = c.pipeline()
        res = await pool.fetch_many_queries(["SELECT 1", ("SELECT $1::text", ("a",))])
        assert [rs[0][0] for rs in res] == [1, "a"]
        # a pipeline kept past its connection's release refuses to run
        pipe.fetchval("SELECT 1")
        with pytest.raises(exceptions.InterfaceError, match="released"):
            await pipe.sync()


def _pool(pg, **kw):
    kw.setdefault("min_size", 1)
    kw.setdefault("max_size", 1)
    return asyncpg_rs.create_pool(**pg.connect_kwargs(), **kw)


async def test_pool_fetch_many_queries_checks_arguments_before_acquiring(pg):
    async with _pool(pg) as pool:
        async with pool.acquire():
            # the only connection is out: a check after acquiring would wait forever
            with pytest.raises(ValueError, match="invalid timeout"):
                await asyncio.wait_for(pool.fetch_many_queries(["SELECT 1"], timeout="x"), 5)
            with pytest.raises(exceptions.InterfaceError, match="record_class"):
                await asyncio.wait_for(pool.fetch_many_queries(["SELECT 1"], record_class=dict), 5)
        assert pool.get_idle_size() == 1


async def test_pool_pipeline_holds_a_connection_for_the_block(pg):
    pipelines = []

    class Recording(asyncpg_rs.Connection):
        def pipeline(self, **kwargs):
            pipelines.append(kwargs)
            return super().pipeline(**kwargs)

    async with _pool(pg, connection_class=Recording) as pool:
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
        async with pool.pipeline() as p:
            assert isinstance(p, asyncpg_rs.pipeline.Pipeline)
            assert pool.get_idle_size() == 0
            # the pool's only connection is the block's until it ends
            waiter = asyncio.ensure_future(pool.fetchval("SELECT pg_backend_pid()"))
            rows = p.fetch("SELECT g FROM generate_series(1, 3) g")
            row = p.fetchrow("SELECT $1::text AS t", "x")
            val = p.fetchval("SELECT $1::int4 + 1", 41)
            tag = p.execute("SELECT 1")
            assert await val == 42  # awaiting inside the block sends what is queued
            pid = p.fetchval("SELECT pg_backend_pid()")
            await p.sync()
            assert pid.done()
            await asyncio.sleep(0.05)
            assert not waiter.done()
        assert [r["g"] for r in await rows] == [1, 2, 3]
        assert (await row)["t"] == "x"
        assert await tag == "SELECT 1"
        assert await waiter == await pid  # the next borrower got the same connection
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
        # through Connection.pipeline, which subclasses and instrumentation wrap
        assert pipelines == [{"atomic": False, "timeout": None}]


async def test_pool_pipeline_releases_when_the_block_raises(pg, event_loop_name):
    table = f"pool_pipe_raise_{event_loop_name}"
    async with _pool(pg) as pool:
        await pool.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int4)")
        try:
            with pytest.raises(RuntimeError, match="boom"):
                async with pool.pipeline() as p:
                    insert = p.execute(f"INSERT INTO {table} VALUES (1)")
                    raise RuntimeError("boom")
            assert pool.get_idle_size() == 1
            with pytest.raises(exceptions.InterfaceError, match="was not sent"):
                await insert
            assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0

            # a failure inside the block after some statements ran: they stay done, the
            # session is reset for the next borrower
            with pytest.raises(exceptions.UndefinedTableError):
                async with pool.pipeline() as p:
                    p.fetchval("SELECT set_config('application_name', 'piped', false)")
                    p.fetchval("SELECT pg_advisory_lock(424242)")
                    p.execute(f"INSERT INTO {table} VALUES (2)")
                    await p.fetchval("SELECT * FROM no_such_table_here")
            assert pool.get_idle_size() == 1
            async with pool.acquire() as con:
                assert await con.fetchval("SHOW application_name") != "piped"
                assert not con.is_in_transaction()
                assert (
                    await con.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid()"
                    )
                    == 0
                )
            assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 1
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {table}")


async def test_pool_pipeline_timeout_leaves_the_connection_usable(pg):
    sleep = "SELECT pg_sleep($1)"
    async with _pool(pg) as pool:
        # warm: the timeout bounds preparing too (the pool's one connection keeps them)
        await pool.fetch_many_queries(["SELECT 1", (sleep, (0,))])
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.TimeoutError):
            async with pool.pipeline(timeout=0.5) as p:
                fast = p.fetchval("SELECT 1")
                slow = p.fetchval(sleep, 30)
        assert asyncio.get_running_loop().time() - t0 < 10
        assert await fast == 1
        with pytest.raises(asyncio.TimeoutError):
            await slow
        assert (pool.get_size(), pool.get_idle_size()) == (1, 1)
        assert await pool.fetchval("SELECT 42") == 42
        with pytest.raises(ValueError, match="invalid timeout"):
            pool.pipeline(timeout="soon")
        assert pool.get_idle_size() == 1


async def test_pool_pipeline_atomic_rolls_back_for_every_borrower(pg, event_loop_name):
    table = f"pool_pipe_atomic_{event_loop_name}"
    async with _pool(pg, max_size=2) as pool:
        await pool.execute(
            f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int4 PRIMARY KEY, n int4);"
            f"INSERT INTO {table} VALUES (1, 0), (2, 0)"
        )
        try:
            with pytest.raises(exceptions.UniqueViolationError):
                async with pool.pipeline(atomic=True) as p:
                    p.execute(f"UPDATE {table} SET n = 99")
                    p.execute(f"INSERT INTO {table} VALUES (1, 0)")
                    skipped = p.fetchval("SELECT 1")
            with pytest.raises(exceptions.InterfaceError, match="skipped"):
                await skipped
            assert pool.get_idle_size() == pool.get_size()
            # seen from both of the pool's connections at once: nothing committed
            async with pool.acquire() as a, pool.acquire() as b:
                assert a.get_server_pid() != b.get_server_pid()
                for con in (a, b):
                    assert await con.fetchval(f"SELECT max(n) FROM {table}") == 0
            async with pool.pipeline(atomic=True) as p:
                p.execute(f"UPDATE {table} SET n = 1")
                p.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 2")
            assert await pool.fetchval(f"SELECT sum(n) FROM {table}") == 3
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {table}")


async def test_pool_pipeline_after_its_block(pg):
    pool = await _pool(pg)
    try:
        ctx = pool.pipeline()
        async with ctx as p:
            r = p.fetchval("SELECT 1")
        assert await r == 1  # results stay readable
        with pytest.raises(exceptions.InterfaceError, match="pipeline is closed"):
            p.fetchval("SELECT 2")
        with pytest.raises(exceptions.InterfaceError, match="entered once"):
            async with ctx:
                pass
        assert pool.get_idle_size() == 1
    finally:
        await pool.close()
    with pytest.raises(exceptions.InterfaceError, match="pool is closed"):
        async with pool.pipeline():
            pass


async def test_query_loggers_see_every_statement(con):
    logged = []
    with con.query_logger(logged.append):
        await con.fetch_many_queries(
            ["SELECT 1", ("SELECT $1::int4", (2,)), "SELECT 1/0"], return_exceptions=True
        )
        await asyncio.sleep(0)  # loggers are called soon, not inline
    assert [q.query for q in logged] == ["SELECT 1", "SELECT $1::int4", "SELECT 1/0"]
    assert logged[1].args == (2,)
    assert logged[0].exception is None
    assert isinstance(logged[2].exception, exceptions.DivisionByZeroError)


async def test_block_raising_sends_nothing(con):
    await _table(con, "p9")
    with pytest.raises(ZeroDivisionError):
        async with con.pipeline() as p:
            r = p.execute("UPDATE p9 SET n = 9")
            1 / 0  # noqa: B018
    with pytest.raises(exceptions.InterfaceError, match="not sent"):
        await r
    assert await con.fetchval("SELECT count(*) FROM p9 WHERE n = 9") == 0
    with pytest.raises(exceptions.InterfaceError, match="closed"):
        p.fetchval("SELECT 1")


async def test_awaiting_inside_the_block_sends_what_is_queued(con):
    async with con.pipeline() as p:
        a = p.fetchval("SELECT 1")
        b = p.fetchval("SELECT 2")
        assert await b == 2
        assert a.done()
        c = p.fetchval("SELECT 3")
        d = p.fetchval("SELECT 4")
        assert await asyncio.gather(c, d) == [3, 4]
    assert await a == 1


async def test_connection_lost_fails_every_pending_result(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs())
    other = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        pid = con.get_server_pid()

        async def kill():
            await asyncio.sleep(0.3)
            await other.execute(f"SELECT pg_terminate_backend({pid})")

        await con.fetch_many_queries([("SELECT pg_sleep($1)", (0,)), "SELECT 2"])  # warm
        killer = asyncio.ensure_future(kill())
        with pytest.raises(exceptions.ConnectionDoesNotExistError):
            async with con.pipeline() as p:
                p.fetchval("SELECT pg_sleep($1)", 5)
                last = p.fetchval("SELECT 2")
        await killer
        with pytest.raises(exceptions.ConnectionDoesNotExistError):
            await last
        assert con.is_closed()
        # statements still to be sent when the connection went fail as queries do then
        with pytest.raises(exceptions.InterfaceError, match="closed"):
            await con.fetch_many_queries(["SELECT 1"])
    finally:
        await other.close()
        con.terminate()


# ---------------------------------------------------------------- behind PgBouncer


@pytest.fixture(scope="module")
def bouncer(pg):
    import pgcluster

    if getattr(pg, "external", False):
        pytest.skip("needs the throwaway cluster (ASYNCPG_RS_TEST_DSN is set)")
    b = pgcluster.PgBouncer.start(pg, "transaction", pool_size=3)
    try:
        yield b
    finally:
        b.stop()


async def test_through_pgbouncer_transaction_mode(bouncer):
    """Transaction mode hands a server connection out per transaction, so consecutive Syncs
    of one pipeline may run on different servers: 8 clients share 3 server connections,
    each running cold and warm pipelines (unnamed statements re-parsed before each Bind),
    atomic ones with a failure, and one inside a transaction; every result must be its
    own statement's."""
    table = "pipe_bouncer"
    admin = await asyncpg_rs.connect(**bouncer.connect_kwargs())
    await admin.execute(f"DROP TABLE IF EXISTS {table}")
    await admin.execute(f"CREATE TABLE {table}(id int PRIMARY KEY, v text)")
    await admin.executemany(
        f"INSERT INTO {table} VALUES ($1, $2)", [(i, f"v{i}") for i in range(200)]
    )
    pids = set()

    async def client(n):
        con = await asyncpg_rs.connect(**bouncer.connect_kwargs())
        try:
            assert con._session.pooled  # recognised: unnamed statements only
            for round_ in range(5):
                ids = [(n * 20 + k + round_) % 200 for k in range(20)]
                # a fresh query text per round and client: cold, then warm statements
                cold = (
                    f"SELECT v, {n} AS client, pg_backend_pid() AS pid FROM {table} WHERE id = $1"
                )
                res = await con.fetch_many_queries(
                    [(cold, (i,)) for i in ids] + [(f"SELECT $1::int4 + {round_}", (n,))]
                )
                assert [r[0]["v"] for r in res[:-1]] == [f"v{i}" for i in ids]
                assert all(r[0]["client"] == n for r in res[:-1])
                assert res[-1][0][0] == n + round_
                pids.update(r[0]["pid"] for r in res[:-1])
                with pytest.raises(exceptions.UniqueViolationError):
                    async with con.pipeline(atomic=True) as p:
                        p.execute(f"UPDATE {table} SET v = 'changed' WHERE id = $1", ids[0])
                        p.execute(f"INSERT INTO {table} VALUES ($1, 'dup')", ids[1])
                async with con.transaction():
                    async with con.pipeline() as p:
                        a = p.fetchval("SELECT pg_backend_pid()")
                        b = p.fetchval("SELECT pg_backend_pid()")
                        c = p.fetchval(f"SELECT v FROM {table} WHERE id = $1", ids[0])
                    # inside a transaction the pooler keeps one server connection
                    assert await a == await b
                    assert await c == f"v{ids[0]}"
        finally:
            await con.close()

    try:
        await asyncio.gather(*(client(n) for n in range(8)))
        assert await admin.fetchval(f"SELECT count(*) FROM {table} WHERE v = 'changed'") == 0
        assert len(pids) > 1  # the pipelines really ran on several server connections
    finally:
        await admin.execute(f"DROP TABLE {table}")
        await admin.close()


async def test_failures_leave_no_reference_cycles(con):
    # a failed pipeline's errors are kept in its futures; the frames they were raised
    # through must not be kept with them in a cycle only the GC would free
    await con.fetch_many_queries(["SELECT 1", "SELECT 1/0"], return_exceptions=True)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        with pytest.raises(exceptions.DivisionByZeroError):
            await con.fetch_many_queries(["SELECT 1", "SELECT 1/0"])
        with pytest.raises(exceptions.DivisionByZeroError):
            async with con.pipeline() as p:
                r = p.fetchval("SELECT 1/0")
        with pytest.raises(exceptions.DivisionByZeroError):
            await r
        del r, p
        for atomic in (False, True):
            with pytest.raises(exceptions.PostgresSyntaxError):
                await con.fetch_many_queries(["SELECT 1", "SELEKT 2"], atomic=atomic)
        for _ in range(3):
            await asyncio.sleep(0)
        assert gc.collect() == 0
    finally:
        if was_enabled:
            gc.enable()


async def test_small_statement_cache_and_many_distinct_queries(pg):
    # preparing the new statements of a chunk evicts the chunk's other statements from a
    # cache of 2: they are held for the chunk and closed afterwards
    con = await asyncpg_rs.connect(**pg.connect_kwargs(), statement_cache_size=2)
    try:
        queries = [(f"SELECT $1::int4 + {k}", (k,)) for k in range(8)] * 2
        for _ in range(2):
            res = await con.fetch_many_queries(queries)
            assert [r[0][0] for r in res] == [2 * k for k in range(8)] * 2
        assert len(con._stmt_cache) == 2
        assert await con.fetchval("SELECT 1") == 1
        left = await con.fetchval("SELECT count(*) FROM pg_prepared_statements")
        assert left <= 3  # the evicted ones were closed at the next operation
    finally:
        await con.close()


async def test_stale_cached_statement_raises_once_and_is_prepared_again(con):
    await con.execute("CREATE TEMP TABLE p10 (a int4)")
    await con.execute("INSERT INTO p10 VALUES (1)")
    q = "SELECT * FROM p10"
    assert (await con.fetch_many_queries([q]))[0][0]["a"] == 1
    await con.execute("ALTER TABLE p10 ADD COLUMN b text DEFAULT 'x'")
    # not retried inside the pipeline (statements after it may depend on it): it raises
    # the server's error, and the cache drops the statement
    res = await con.fetch_many_queries([q, "SELECT 2"], return_exceptions=True)
    assert isinstance(res[0], exceptions.FeatureNotSupportedError), res[0]
    assert res[1][0][0] == 2
    row = (await con.fetch_many_queries([q]))[0][0]
    assert tuple(row) == (1, "x")


async def test_pipeline_refused_while_another_operation_runs(con):
    slow = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0.05)
    with pytest.raises(exceptions.InterfaceError, match="another operation is in progress"):
        async with con.pipeline() as p:
            r = p.fetchval("SELECT 1")
    with pytest.raises(exceptions.InterfaceError, match=r"not sent: the pipeline stopped"):
        await r
    await slow
    assert await con.fetch_many_queries(["SELECT 1"]) == [[(1,)]]


async def test_prepared_statements_in_a_pipeline(con, pg):
    stmt = await con.prepare("SELECT $1::int4 * 10 AS v")
    async with con.pipeline() as p:
        a = p.fetchval(stmt, 1)
        b = p.fetchrow(stmt, 2)
    assert await a == 10
    assert (await b)["v"] == 20
    res = await con.fetch_many_queries([(stmt, (3,)), (stmt, [4])])
    assert [r[0]["v"] for r in res] == [30, 40]
    other = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        with pytest.raises(exceptions.InterfaceError, match="belongs to another connection"):
            await other.fetch_many_queries([(stmt, (1,))])
    finally:
        await other.close()
