"""The connection pool."""

import asyncio
import inspect
import os
import random
import warnings

import pgcluster
import pytest

import asyncpg_rs
from asyncpg_rs import exceptions


async def test_create_acquire_release_and_shortcuts(pg):
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=2, max_size=4) as pool:
        assert (pool.get_min_size(), pool.get_max_size(), pool.get_size()) == (2, 4, 2)
        assert pool.get_idle_size() == 2
        async with pool.acquire() as con:
            assert isinstance(con, asyncpg_rs.Connection)
            assert await con.fetchval("SELECT 1") == 1
            assert pool.get_idle_size() == 1
        con = await pool.acquire()
        await pool.release(con)
        assert await pool.fetchval("SELECT $1::int4", 5) == 5
        assert [tuple(r) for r in await pool.fetch("SELECT 1, 2")] == [(1, 2)]
        assert tuple(await pool.fetchrow("SELECT 3")) == (3,)
        assert await pool.execute("SELECT 1") == "SELECT 1"
        await pool.execute("CREATE TABLE IF NOT EXISTS pool_t (a int4)")
        await pool.executemany("INSERT INTO pool_t VALUES ($1)", [(1,), (2,)])
        assert await pool.fetchval("SELECT count(*) FROM pool_t") >= 2
        await pool.execute("DROP TABLE pool_t")
    assert pool.is_closing()


async def test_proxy_rules(pg):
    pool = await asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1)
    other = await asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1)
    try:
        con = await pool.acquire()
        stmt = await con.prepare("SELECT 1")
        await pool.release(con)
        with pytest.raises(exceptions.InterfaceError, match="released back to the pool"):
            await con.fetchval("SELECT 1")
        with pytest.raises(exceptions.InterfaceError, match="released back to the pool"):
            await stmt.fetchval()
        con2 = await other.acquire()
        with pytest.raises(exceptions.InterfaceError, match="is not a member of this pool"):
            await pool.release(con2)
        await other.release(con2)
    finally:
        await pool.close()
        await other.close()


async def test_proxy_methods_reach_what_is_patched_onto_the_connection(pg, monkeypatch):
    # The proxy's methods are found without __getattr__'s failed lookup, but they are still
    # looked up on the lent connection at each access: instrumentation that patches
    # Connection (or one connection) later is what runs.
    calls = []
    original = asyncpg_rs.Connection.fetchval

    async def traced(self, query, *args, **kwargs):
        calls.append(query)
        return await original(self, query, *args, **kwargs)

    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        monkeypatch.setattr(asyncpg_rs.Connection, "fetchval", traced)
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT 1") == 1
            assert await asyncpg_rs.pool.PoolConnectionProxy.fetchval(con, "SELECT 2") == 2
            assert con.fetchval.__self__ is con._con
            assert inspect.iscoroutinefunction(con.fetchval)
            assert "fetchrow" in dir(con)
        assert calls == ["SELECT 1", "SELECT 2"]
        with pytest.raises(exceptions.InterfaceError, match=r"Connection.fetchval\(\)"):
            con.fetchval  # noqa: B018
        with pytest.raises(exceptions.InterfaceError, match="released back to the pool"):
            con.get_settings  # noqa: B018


async def test_fifo_fairness_and_timeouts_leave_nothing_behind(pg):
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        order = []

        async def waiter(i):
            async with pool.acquire() as con:
                order.append(i)
                await con.fetchval("SELECT 1")

        tasks = []
        for i in range(5):
            tasks.append(asyncio.ensure_future(waiter(i)))
            await asyncio.sleep(0.01)
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await pool.acquire(timeout=0.05)
        await pool.release(held)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert pool.get_size() == 1 and pool.get_idle_size() == 1
        async with pool.acquire(timeout=1) as con:
            assert await con.fetchval("SELECT 1") == 1


async def test_broken_and_expired_connections_are_replaced(pg):
    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=1, max_size=1, max_queries=3
    ) as pool:
        pids = set()
        for _ in range(7):
            async with pool.acquire() as con:
                pids.add(con.get_server_pid())
        assert len(pids) == 3  # a new connection every 3 queries
        async with pool.acquire() as con:
            pid = con.get_server_pid()
        killer = await asyncpg_rs.connect(**pg.connect_kwargs())
        await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        async with pool.acquire() as con:
            assert con.get_server_pid() != pid
            assert await con.fetchval("SELECT 1") == 1
            pid = con.get_server_pid()
        await pool.expire_connections()
        async with pool.acquire() as con:
            assert con.get_server_pid() != pid
        await killer.close()


async def test_release_resets_every_session(pg):
    # A plain SELECT can take an advisory lock or change a setting, so the reset runs on
    # every release, as in asyncpg: the next user never inherits the session.
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        reported = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
        try:
            async with pool.acquire() as con:
                pid = con.get_server_pid()
                await con.execute("SET search_path = pg_catalog")
                await con.fetchval("SELECT pg_advisory_lock(42)")
                await con.fetchval("SELECT set_config('work_mem', '7MB', false)")
                await con.execute("BEGIN")
        finally:
            loop.set_exception_handler(None)
        # as asyncpg: the open transaction is reported to the loop's exception handler
        assert [m.split(" <")[0] for m in reported] == [
            "Resetting connection with an active transaction"
        ]
        logged = []
        async with pool.acquire() as con:
            assert con.get_server_pid() == pid
            assert not con.is_in_transaction()
            assert await con.fetchval("SHOW search_path") == '"$user", public'
            assert await con.fetchval("SHOW work_mem") != "7MB"
            assert (
                await con.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
                == 0
            )
            reset_query = con.get_reset_query()
            con.add_query_logger(logged.append)
        assert [q.query for q in logged] == [reset_query]


async def test_shortcuts_lease_and_reset_as_acquire_does(pg):
    # pool.fetch/fetchrow/fetchval/execute skip acquire()'s coroutines when a connection is
    # ready; what they leave behind must still be reset, and a subclass's acquire (or a
    # setup callback) must still see every one of them, as with asyncpg.
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        assert await pool.execute("SET search_path = pg_catalog") == "SET"
        assert await pool.execute("SELECT pg_advisory_lock(7)") == "SELECT 1"
        row = await pool.fetchrow("SELECT set_config('work_mem', '7MB', false) AS w")
        assert row["w"] == "7MB"
        assert await pool.fetchval("SHOW search_path") == '"$user", public'
        assert await pool.fetchval("SHOW work_mem") != "7MB"
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
        assert await pool.fetchval(locks, pid) == 0
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid
        with pytest.raises(exceptions.UndefinedTableError):
            await pool.fetch("SELECT * FROM no_such_table_here")
        assert pool.get_idle_size() == 1
        assert [tuple(r) for r in await pool.fetch("SELECT 1, 2")] == [(1, 2)]

    seen = []

    class CountingPool(asyncpg_rs.Pool):
        def acquire(self, *, timeout=None):
            seen.append("acquire")
            return super().acquire(timeout=timeout)

    kwargs = pg.connect_kwargs()
    sizes = {"min_size": 1, "max_size": 1, "max_queries": 50000}
    async with CountingPool(**kwargs, **sizes, max_inactive_connection_lifetime=300) as pool:
        assert await pool.fetchval("SELECT 1") == 1
        await pool.execute("SELECT 1")
        assert seen == ["acquire", "acquire"]

    set_up = []

    async def setup(con):
        set_up.append(type(con).__name__)

    async with asyncpg_rs.create_pool(**kwargs, min_size=1, max_size=1, setup=setup) as pool:
        assert await pool.fetchval("SELECT 2") == 2
        assert set_up == ["PoolConnectionProxy"]


async def test_shortcuts_wait_in_line_and_survive_cancels_and_killed_backends(pg):
    # More shortcut calls than connections: they wait in the holder queue as acquire()
    # does. One cancelled in line or mid-statement, or handed a connection that died while
    # idle (no floor to restore it: min_size 0), leaves the pool whole.
    app = "pool-shortcut-test"
    kwargs = pg.connect_kwargs()
    settings = {"application_name": app}
    killer = await asyncpg_rs.connect(**kwargs)
    try:
        async with asyncpg_rs.create_pool(
            **kwargs, min_size=0, max_size=2, server_settings=settings
        ) as pool:
            slow = [asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(0.3)")) for _ in range(2)]
            waiting = [asyncio.ensure_future(pool.fetchval("SELECT $1::int", i)) for i in range(20)]
            await asyncio.sleep(0.1)
            assert pool.get_idle_size() == 0
            for w in waiting[::3]:
                w.cancel()
            results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 10)
            for i, r in enumerate(results):
                if i % 3 == 0:
                    assert isinstance(r, asyncio.CancelledError)
                else:
                    assert r == i
            await asyncio.gather(*slow)

            mid = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(5)"))
            await asyncio.sleep(0.1)
            mid.cancel()
            with pytest.raises(asyncio.CancelledError):
                await mid
            assert await pool.fetchval("SELECT 7") == 7

            listed = "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            pids = {r[0] for r in await killer.fetch(listed, app)}
            assert len(pids) == 2
            for pid in pids:
                assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
            # the backends exit asynchronously: wait until they are gone (bounded), then
            # give the loop a moment to read their sockets' end
            alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])"
            for _ in range(200):
                if await killer.fetchval(alive, list(pids)) == 0:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            again = (pool.fetchval("SELECT pg_backend_pid()") for _ in range(6))
            got = await asyncio.wait_for(asyncio.gather(*again), 10)
            assert not set(got) & pids
            for _ in range(100):
                if pool.get_idle_size() == pool.get_size():
                    break
                await asyncio.sleep(0.02)
            assert 1 <= pool.get_idle_size() == pool.get_size() <= 2
    finally:
        await killer.close()


async def test_close_waits_for_borrowed_connections(pg):
    # close() waits for what is lent out (a connection held through acquire() and a shortcut
    # mid-statement), whose "returned" futures are made only when close() asks for them
    pool = await asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=2, max_size=2)
    held = await pool.acquire()
    shortcut = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0.1)
    assert not closing.done()
    assert await held.fetchval("SELECT 1") == 1
    await pool.release(held)
    assert await asyncio.wait_for(shortcut, 10) is None
    await asyncio.wait_for(closing, 10)
    assert pool.get_size() == 0


async def test_reset_rides_ahead_of_the_next_query(pg):
    # Without loggers or instrumentation the reset is not awaited on release: it goes out
    # at once and the next user's first query follows it on the wire.
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        for _ in range(3):
            async with pool.acquire() as con:
                assert not con.is_in_transaction()
                assert await con.fetchval("SHOW statement_timeout") == "0"
                assert (
                    await con.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid()"
                    )
                    == 0
                )
                await con.execute("SET statement_timeout = '5min'")
                await con.fetchval("SELECT pg_advisory_lock(7)")
        # released with a reset in flight, then closed: no error, nothing left behind
        async with pool.acquire() as con:
            await con.fetchval("SELECT pg_advisory_lock(7)")
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        async with pool.acquire() as con:
            # the lock died with the closed session
            assert await con.fetchval("SELECT pg_try_advisory_lock(7)") is True


async def test_failed_unawaited_query_closes_the_connection(pg):
    # the protocol's contract for the pipelined reset: a failure there is not lost
    con = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        con._protocol.send_unawaited("SELECT 1/0")
        with pytest.raises(asyncpg_rs.ConnectionDoesNotExistError, match="division by zero"):
            await con.fetchval("SELECT 1")
        assert con.is_closed()
    finally:
        con.terminate()


async def test_server_closing_during_an_unawaited_query_is_reported(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs())
    killer = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        con._protocol.send_unawaited("SELECT pg_sleep(5)")
        query = asyncio.ensure_future(con.fetchval("SELECT 1"))
        await asyncio.sleep(0.2)
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", con.get_server_pid())
        with pytest.raises(asyncpg_rs.ConnectionDoesNotExistError, match="administrator command"):
            await asyncio.wait_for(query, 10)
        assert con.is_closed()
    finally:
        con.terminate()
        await killer.close()


async def test_custom_reset_setup_init(pg):
    calls = []

    async def init(con):
        calls.append("init")

    async def setup(con):
        calls.append("setup")

    async def reset(con):
        calls.append("reset")

    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=1, max_size=1, init=init, setup=setup, reset=reset
    ) as pool:
        async with pool.acquire():
            pass
    assert calls == ["init", "setup", "reset"]


async def test_dangling_listener_warns(pg):
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            async with pool.acquire() as con:
                await con.add_listener("ch", lambda *a: None)
        assert any("active notification listener" in str(x.message) for x in w)


async def test_bad_arguments(pg):
    with pytest.raises(ValueError, match="min_size is greater than max_size"):
        await asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=5, max_size=2)
    with pytest.raises(exceptions.InterfaceError, match="asyncpg.connection.Connection"):

        async def connect(*args, **kwargs):
            return 42

        await asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1, connect=connect)


@pytest.mark.loops("asyncio", "uvloop")
async def test_load_with_backends_killed(pg):
    """64 tasks x 2000 operations on a pool of 10 while backends are terminated."""
    tasks_n, ops = 64, 2000
    app = "pool-load-test"
    pool = await asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=10, max_size=10, server_settings={"application_name": app}
    )
    killer = await asyncpg_rs.connect(**pg.connect_kwargs())
    done = 0
    failures = 0

    async def worker():
        nonlocal done, failures
        for _ in range(ops):
            try:
                async with pool.acquire(timeout=10) as con:
                    assert await con.fetchval("SELECT 1") == 1
            except (
                exceptions.PostgresError,
                exceptions.InterfaceError,
                exceptions.ConnectionDoesNotExistError,
                OSError,
            ):
                failures += 1
            done += 1

    async def kill_some():
        while done < tasks_n * ops:
            await asyncio.sleep(0.05)
            pids = await killer.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
            )
            if pids:
                await killer.fetchval("SELECT pg_terminate_backend($1)", random.choice(pids)[0])

    side = asyncio.ensure_future(kill_some())
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(tasks_n))), 240)
    side.cancel()
    assert done == tasks_n * ops
    assert failures < done // 10
    assert 1 <= pool.get_size() <= 10
    await pool.close()
    # backends exit asynchronously after Terminate: give them a moment
    for _ in range(100):
        left = await killer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
        )
        if left == 0:
            break
        await asyncio.sleep(0.05)
    assert left == 0
    await killer.close()


async def test_abandoned_asyncgen_transaction_does_not_race_release(pg):
    # An async generator holding a transaction is finalised (aclose scheduled by the loop)
    # while the pool releases its connection: the release rolls back, the generator's
    # __aexit__ must step aside instead of running ROLLBACK concurrently.
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def iterate(con):
        async with con.transaction():
            for record in await con.fetch("SELECT 1"):
                yield record

    class Boom(Exception):
        pass

    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        with pytest.raises(Boom):
            async with pool.acquire() as con:
                async for _ in iterate(con):
                    raise Boom
        for _ in range(5):
            await asyncio.sleep(0.01)
        async with pool.acquire() as con:
            assert not con.is_in_transaction()
            assert await con.fetchval("SELECT 2") == 2
    assert errors == []


async def test_release_waits_for_a_pending_cancellation(pg):
    # a query that timed out is cancelled in the background; releasing the connection
    # waits for that, so the next user gets an idle connection
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        con = await pool.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await con.execute("SELECT pg_sleep(10)", timeout=0.05)
        await asyncio.wait_for(pool.release(con), 10)
        async with pool.acquire(timeout=5) as again:
            assert await again.fetchval("SELECT 1") == 1


async def test_pool_survives_a_server_restart(pg):
    """Sessions die with the restart; tasks see the server's error or a closed connection,
    none hangs, and the pool serves again once the server is back."""
    if getattr(pg, "external", False):
        pytest.skip("restarts the throwaway cluster (ASYNCPG_RS_TEST_DSN is set)")
    loop = asyncio.get_running_loop()
    failures = []
    successes_after = 0
    restarted = asyncio.Event()

    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=4, max_size=8) as pool:

        async def worker():
            nonlocal successes_after
            for _ in range(200):
                try:
                    assert await pool.fetchval("SELECT 1") == 1
                    if restarted.is_set():
                        successes_after += 1
                except (
                    exceptions.ConnectionDoesNotExistError,
                    exceptions.AdminShutdownError,
                    exceptions.CannotConnectNowError,
                    ConnectionError,
                    OSError,
                ) as exc:
                    failures.append(type(exc).__name__)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.005)

        async def restart():
            await asyncio.sleep(0.2)
            await loop.run_in_executor(None, pg.restart, 0.3)
            restarted.set()

        await asyncio.wait_for(asyncio.gather(restart(), *(worker() for _ in range(16))), 120)
        assert failures, "the restart should have been noticed"
        assert successes_after > 0
        assert pool.get_size() <= 8
        assert await pool.fetchval("SELECT 2") == 2


@pytest.fixture
def own_cluster(pg):
    """A throwaway cluster of the test's own, for tests that change the server's role."""
    if getattr(pg, "external", False):
        pytest.skip("needs local PostgreSQL binaries (ASYNCPG_RS_TEST_DSN is set)")
    cluster = pgcluster.Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_acquire_reports_why_a_lost_floor_cannot_be_restored(own_cluster, caplog):
    # The server comes back as a standby: the pool's floor cannot be restored for
    # target_session_attrs='primary'. The maintenance task logs and retries without
    # holding the only place, so the caller's acquire connects and gets the reason.
    cluster = own_cluster
    loop = asyncio.get_running_loop()
    pool = await asyncpg_rs.create_pool(
        **cluster.connect_kwargs(), min_size=1, max_size=1, target_session_attrs="primary"
    )
    try:
        assert await pool.fetchval("SELECT 1") == 1

        def to_standby():
            cluster._run(
                [
                    os.path.join(cluster.bindir, "pg_ctl"),
                    "-D",
                    cluster.data_dir,
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ]
            )
            open(os.path.join(cluster.data_dir, "standby.signal"), "w").close()
            cluster._start()

        await loop.run_in_executor(None, to_standby)
        for _ in range(2):
            with pytest.raises(exceptions.TargetServerAttributeNotMatched) as e:
                await asyncio.wait_for(pool.execute("SELECT 1"), 15)
            assert str(e.value) == (
                "None of the hosts match the target attribute "
                "requirement <SessionAttribute.primary: 'primary'>"
            )
    finally:
        await asyncio.wait_for(pool.close(), 15)
    retries = [r for r in caplog.records if r.name == "asyncpg.pool"]
    assert retries, "the lost floor should have been noticed"
    assert all(
        r.getMessage() == "Failed to restore the pool connection floor; retrying" and r.exc_info
        for r in retries
    ), [r.getMessage() for r in retries]


async def test_resources_of_a_released_connection_refuse_at_call_time(pg):
    # as asyncpg: the check runs when the method is called, before any coroutine exists
    async with asyncpg_rs.create_pool(**pg.connect_kwargs(), min_size=1, max_size=1) as pool:
        async with pool.acquire() as con:
            stmt = await con.prepare("SELECT 1")
            txn = con.transaction()
            async with con.transaction():
                cur = await con.cursor("SELECT 1")
        calls = {
            "PreparedStatement.fetch": lambda: stmt.fetch(),
            "PreparedStatement.fetchval": lambda: stmt.fetchval(),
            "PreparedStatement.get_query": lambda: stmt.get_query(),
            "PreparedStatement.get_attributes": lambda: stmt.get_attributes(),
            "Cursor.fetch": lambda: cur.fetch(1),
            "Cursor.forward": lambda: cur.forward(1),
            "Transaction.start": lambda: txn.start(),
            "Transaction.rollback": lambda: txn.rollback(),
        }
        for name, call in calls.items():
            with pytest.raises(
                exceptions.InterfaceError,
                match=rf"cannot call {name}\(\): .*released back to the pool",
            ):
                call()


async def test_release_timeout_bounds_the_reset_and_drops_the_connection(pg):
    # as asyncpg: the acquire's timeout is the release's default, a reset that does not
    # finish in time raises TimeoutError to the releaser and the connection is not reused
    class SlowReset(asyncpg_rs.Connection):
        slow = True

        def get_reset_query(self):
            return "SELECT pg_sleep(5)" if self.slow else super().get_reset_query()

    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=1, max_size=1, connection_class=SlowReset
    ) as pool:
        con = await pool.acquire(timeout=5)
        pid = con.get_server_pid()
        with pytest.raises(asyncio.TimeoutError):
            await pool.release(con, timeout=0.2)
        SlowReset.slow = False
        async with pool.acquire(timeout=5) as again:
            assert again.get_server_pid() != pid
            assert await again.fetchval("SELECT 1") == 1


async def test_floor_restore_backs_off_exponentially(pg, monkeypatch):
    # the pool restores min_size after losing a connection; while that keeps failing the
    # retries back off 1, 2, 4 ... 60 s (asyncpg's schedule)
    offline = False
    delays = []
    real_sleep = asyncio.sleep

    async def connect(*args, **kwargs):
        if offline:
            raise exceptions.TargetServerAttributeNotMatched("primary away")
        return await asyncpg_rs.connect(*args, **kwargs)

    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=1, max_size=1, connect=connect
    ) as pool:

        async def recording_sleep(delay, *args):
            if asyncio.current_task() is pool._maintenance_task:
                delays.append(delay)
                delay = 0
            return await real_sleep(delay, *args)

        monkeypatch.setattr(asyncio, "sleep", recording_sleep)
        async with pool.acquire() as con:
            raw = con._con
        offline = True
        raw.terminate()  # the idle pooled connection dies
        for _ in range(500):
            if len(delays) >= 8:
                break
            await real_sleep(0.01)
        offline = False
        assert delays[:8] == [1, 2, 4, 8, 16, 32, 60, 60]
        for _ in range(500):
            if pool.get_size() == 1:
                break
            await real_sleep(0.01)
        assert await pool.fetchval("SELECT 1") == 1


async def test_floor_restored_after_a_connection_is_dropped_on_release(pg):
    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=1, max_size=2, max_queries=1
    ) as pool:
        async with pool.acquire() as con:
            first = con.get_server_pid()
            await con.fetchval("SELECT 1")
        # max_queries=1: the connection is recycled on release, and the floor comes back
        # without waiting for the next acquire
        for _ in range(500):
            if pool.get_size() == 1:
                break
            await asyncio.sleep(0.01)
        assert pool.get_size() == 1
        async with pool.acquire() as con:
            assert con.get_server_pid() != first


async def test_connection_kept_through_idle_shrink_is_reused(pg):
    # init_size 3 shrinks to min_size 1 once idle: the survivor must serve the next
    # acquires rather than a new connection being opened beside it
    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(),
        init_size=3,
        min_size=1,
        max_size=3,
        max_inactive_connection_lifetime=0.05,
    ) as pool:
        for _ in range(100):
            if pool.get_size() == 1:
                break
            await asyncio.sleep(0.02)
        assert pool.get_size() == 1
        async with pool.acquire() as con:
            survivor = con.get_server_pid()
        pids = []
        for _ in range(3):
            await asyncio.sleep(0.1)
            async with pool.acquire() as con:
                pids.append(con.get_server_pid())
        assert pids == [survivor] * 3
        assert pool.get_size() == 1


async def test_idle_lifetime_counts_from_the_last_release(pg):
    # One idle timer per idle stretch: a connection used more often than its lifetime
    # lives on past the first timer, and closes once it has sat idle for the whole lifetime.
    async with asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=0, max_size=1, max_inactive_connection_lifetime=0.4
    ) as pool:
        pids = set()
        for _ in range(8):
            pids.add(await pool.fetchval("SELECT pg_backend_pid()"))
            async with pool.acquire() as con:
                pids.add(con.get_server_pid())
            await asyncio.sleep(0.1)
        assert len(pids) == 1 and pool.get_size() == 1
        for _ in range(100):
            if pool.get_size() == 0:
                break
            await asyncio.sleep(0.02)
        assert pool.get_size() == 0
        assert await pool.fetchval("SELECT pg_backend_pid()") not in pids


async def test_holder_queue_serves_waiters_in_order_and_passes_on_a_lost_wakeup():
    from asyncpg_rs._holder_queue import HolderQueue

    queue = HolderQueue(asyncio.get_running_loop())
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert queue.get_nowait() == "b"  # the last one freed goes first
    assert await queue.get() == "a"
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    # woken by the put, then cancelled before it runs: the item must reach the next waiter
    queue.put_nowait("c")
    first.cancel()
    assert await second == "c"
    assert first.cancelled()
    # a waiter cancelled while waiting leaves nothing behind
    third = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    third.cancel()
    await asyncio.sleep(0)
    queue.put_nowait("d")
    assert queue.get_nowait() == "d" and queue.empty()
