"""Notifications (add_listener), log messages (add_log_listener) and termination listeners.

Waits on events are bounded with ``asyncio.wait_for`` only so that a missing delivery fails
the test instead of hanging it; nothing here asserts how fast anything is.
"""

import asyncio

import pytest

import asyncpg_rs
from asyncpg_rs import exceptions

WAIT = 10  # seconds before a delivery that never comes fails the test


@pytest.fixture
def connect(pg):
    async def _connect():
        return await asyncpg_rs.connect(**pg.connect_kwargs())

    return _connect


async def test_notification_delivered_while_idle(con, connect):
    got = asyncio.Queue()

    def listener(connection, pid, channel, payload):
        got.put_nowait((connection, pid, channel, payload))

    await con.add_listener("chan one", listener)
    other = await connect()
    try:
        # `con` runs nothing: the notification arrives on an idle connection
        await other.execute("SELECT pg_notify('chan one', 'hello')")
        connection, pid, channel, payload = await asyncio.wait_for(got.get(), WAIT)
        assert connection is con
        assert pid == other.get_server_pid()
        assert (channel, payload) == ("chan one", "hello")
        await other.execute("""NOTIFY "chan one" """)
        assert (await asyncio.wait_for(got.get(), WAIT))[2:] == ("chan one", "")
    finally:
        await other.close()


async def test_notifications_delivered_while_queries_run(con, connect):
    got = []
    all_in = asyncio.Event()

    async def listener(connection, pid, channel, payload):
        got.append(int(payload))
        if len(got) == 100:
            all_in.set()

    await con.add_listener("busy", listener)
    other = await connect()
    try:

        async def notify():
            for i in range(100):
                await other.execute(f"NOTIFY busy, '{i}'")

        async def query():
            total = 0
            for _ in range(50):
                total += await con.fetchval("SELECT sum(g) FROM generate_series(1, 2000) g")
            return total

        _, total = await asyncio.gather(notify(), query())
        assert total == 50 * 2001000
        await asyncio.wait_for(all_in.wait(), WAIT)
        assert sorted(got) == list(range(100))
    finally:
        await other.close()


async def test_remove_listener_stops_delivery(con, connect):
    got = asyncio.Queue()

    def first(*args):
        got.put_nowait(("first", args[3]))

    def second(*args):
        got.put_nowait(("second", args[3]))

    await con.add_listener("rm", first)
    await con.add_listener("rm", second)
    await con.remove_listener("rm", first)
    await con.execute("NOTIFY rm, 'x'")
    assert await asyncio.wait_for(got.get(), WAIT) == ("second", "x")
    await con.remove_listener("rm", second)
    # the channel is unlistened; a marker on another channel shows nothing else came
    await con.add_listener("marker", lambda *a: got.put_nowait(("marker", a[3])))
    await con.execute("NOTIFY rm, 'y'; NOTIFY marker, 'z'")
    assert await asyncio.wait_for(got.get(), WAIT) == ("marker", "z")
    assert got.empty()


async def test_listener_that_raises_goes_to_the_exception_handler(con):
    loop = asyncio.get_running_loop()
    reported = asyncio.Queue()
    loop.set_exception_handler(lambda lp, ctx: reported.put_nowait(ctx))

    def bad(connection, pid, channel, payload):
        raise ZeroDivisionError("sync listener broke")

    async def bad_async(connection, pid, channel, payload):
        raise KeyError("async listener broke")

    try:
        await con.add_listener("boom", bad)
        await con.add_listener("boom", bad_async)
        await con.execute("NOTIFY boom")
        contexts = [await asyncio.wait_for(reported.get(), WAIT) for _ in range(2)]
        excs = sorted((type(c["exception"]).__name__, str(c["exception"])) for c in contexts)
        assert excs == [
            ("KeyError", "'async listener broke'"),
            ("ZeroDivisionError", "sync listener broke"),
        ]
        assert all("message" in c for c in contexts)
        # the connection is unharmed and keeps delivering
        assert await con.fetchval("SELECT 41 + 1") == 42
        assert not con.is_closed()
        await con.execute("NOTIFY boom")
        for _ in range(2):
            await asyncio.wait_for(reported.get(), WAIT)
    finally:
        loop.set_exception_handler(None)


async def test_log_listener_gets_notices_and_warnings(con):
    got = asyncio.Queue()

    def on_log(connection, message):
        got.put_nowait((connection, message))

    con.add_log_listener(on_log)
    await con.execute("""
        DO $$ BEGIN
            RAISE NOTICE 'a notice %', 1;
            RAISE WARNING 'a warning' USING DETAIL = 'some detail', HINT = 'a hint';
        END $$
    """)
    connection, notice = await asyncio.wait_for(got.get(), WAIT)
    assert connection is con
    assert isinstance(notice, exceptions.PostgresLogMessage)
    assert (notice.severity, notice.sqlstate, notice.message) == ("NOTICE", "00000", "a notice 1")
    _, warning = await asyncio.wait_for(got.get(), WAIT)
    assert isinstance(warning, exceptions.PostgresLogMessage)
    assert isinstance(warning, exceptions.PostgresWarning)
    assert (warning.severity, warning.sqlstate) == ("WARNING", "01000")
    assert (warning.message, warning.detail, warning.hint) == ("a warning", "some detail", "a hint")
    # a notice from a query run with arguments (the extended protocol) arrives as well
    await con.fetchval("""
        SELECT 1 FROM (SELECT set_config('client_min_messages', 'notice', false)) s
    """)
    await con.execute("CREATE TEMP TABLE IF NOT EXISTS log_t (a int)")
    await con.execute("CREATE TEMP TABLE IF NOT EXISTS log_t (a int)")
    _, skipped = await asyncio.wait_for(got.get(), WAIT)
    assert skipped.severity == "NOTICE" and "already exists" in skipped.message
    con.remove_log_listener(on_log)
    await con.execute("DO $$ BEGIN RAISE NOTICE 'unheard'; END $$")
    assert await con.fetchval("SELECT 1") == 1
    assert got.empty()


async def test_log_listener_that_raises_is_reported(con):
    loop = asyncio.get_running_loop()
    reported = asyncio.Queue()
    loop.set_exception_handler(lambda lp, ctx: reported.put_nowait(ctx))
    try:

        def bad(connection, message):
            raise RuntimeError(f"cannot log {message.message}")

        con.add_log_listener(bad)
        await con.execute("DO $$ BEGIN RAISE NOTICE 'n1'; END $$")
        ctx = await asyncio.wait_for(reported.get(), WAIT)
        assert isinstance(ctx["exception"], RuntimeError)
        assert str(ctx["exception"]) == "cannot log n1"
        assert await con.fetchval("SELECT 2") == 2
    finally:
        loop.set_exception_handler(None)


async def test_backend_terminated_fires_termination_listeners_once(con, connect):
    calls = []
    fired = asyncio.Event()

    def on_close(connection):
        calls.append(connection)
        fired.set()

    async def on_close_async(connection):
        calls.append("async")

    con.add_termination_listener(on_close)
    con.add_termination_listener(on_close_async)
    killer = await connect()
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", con.get_server_pid())
    finally:
        await killer.close()
    # `con` is idle: the server's goodbye alone must be noticed
    await asyncio.wait_for(fired.wait(), WAIT)
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls.count(con) == 1 and calls.count("async") == 1
    assert con.is_closed()
    with pytest.raises(exceptions.InterfaceError):
        await con.fetchval("SELECT 1")
    await con.close()
    con.terminate()
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(calls) == 2


async def test_termination_listener_on_close_and_on_kill_during_a_query(connect):
    con = await connect()
    calls = []
    con.add_termination_listener(calls.append)
    await con.close()
    await con.close()
    assert calls == [con]

    con = await connect()
    calls = []
    con.add_termination_listener(calls.append)
    killer = await connect()
    try:
        query = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(30)"))
        # wait until the query is running on the server before killing its backend
        for _ in range(500):
            running = await killer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                con.get_server_pid(),
            )
            if running:
                break
            await asyncio.sleep(0.01)
        await killer.fetchval("SELECT pg_terminate_backend($1)", con.get_server_pid())
        with pytest.raises(exceptions.ConnectionDoesNotExistError, match="administrator command"):
            await asyncio.wait_for(query, WAIT)
    finally:
        await killer.close()
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == [con]
    assert con.is_closed()
    await con.close()
    assert calls == [con]
