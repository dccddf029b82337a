"""Faults under load against real servers: killed backends, restarts, a misbehaving network,
cancellation storms and the server's own timeouts. Bounded in time, on every loop.

Every test checks: no task hangs (each phase has a deadline), no connection leaks (the
server's own count of our sessions goes back to zero), no acknowledged write is lost (every
INSERT that returned is in the table afterwards), no cross-talk (each query's answer is
checked against its own argument), and errors only of asyncpg's classes. Each prints one
``FAULT-SUMMARY {...}`` line with its figures (``pytest -s`` shows them).

Server restarts use a cluster of their own (started once for this module), so the shared
one stays up for the other tests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time

import pgcluster
import pytest
from wire_relay import Relay

import asyncpg_rs
from asyncpg_rs import exceptions

# what a dying, restarting or unreachable server may legitimately raise
CONNECTION_ERRORS = (
    exceptions.ConnectionDoesNotExistError,
    exceptions.InterfaceError,
    exceptions.PostgresConnectionError,
    exceptions.AdminShutdownError,
    exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
_names = itertools.count()


def _summary(test, loop_name, **figures):
    print("FAULT-SUMMARY " + json.dumps({"test": test, "loop": loop_name, **figures}))


async def _our_sessions(side, app):
    return await side.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
    )


async def _sessions_gone(side, app, seconds=5.0):
    deadline = time.monotonic() + seconds
    while True:
        n = await _our_sessions(side, app)
        if n == 0 or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.05)


class Load:
    """Workers that insert acknowledged rows and echo their arguments through a pool."""

    def __init__(self, pool, table, workers):
        self.pool = pool
        self.table = table
        self.workers = workers
        self.acked = set()
        self.ops = 0
        self.errors = {}
        self.crosstalk = 0
        self.stop = asyncio.Event()
        self.last_success = 0.0
        self.first_error = None

    async def worker(self, w):
        for seq in itertools.count():
            if self.stop.is_set():
                return
            try:
                await self.pool.execute(f"INSERT INTO {self.table} VALUES ($1, $2)", w, seq)
                self.acked.add((w, seq))
                token = w * 1_000_000 + seq
                got = await self.pool.fetchval("SELECT $1::int8", token)
                if got != token:
                    self.crosstalk += 1
                self.ops += 2
                self.last_success = time.monotonic()
            except CONNECTION_ERRORS as e:
                name = type(e).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                if self.first_error is None:
                    self.first_error = time.monotonic()
                await asyncio.sleep(0.02)

    async def run(self, seconds, disturb):
        tasks = [asyncio.ensure_future(self.worker(w)) for w in range(self.workers)]
        try:
            await disturb()
            await asyncio.sleep(seconds)
            # the disturbance (a restart) ends under load, not after it
            if getattr(disturb, "task", None) is not None:
                await asyncio.wait_for(asyncio.shield(disturb.task), 60)
        finally:
            self.stop.set()
            # a hung task fails the test here rather than the run
            done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
        return len(pending)

    async def lost_writes(self, side):
        rows = await side.fetch(f"SELECT w, seq FROM {self.table}")
        present = {(r["w"], r["seq"]) for r in rows}
        return len(self.acked - present)


async def test_backends_terminated_under_pool_load(pg, event_loop_name):
    app = f"fault_kill_{next(_names)}"
    table = f"fault_kill_{event_loop_name}_{next(_names)}"
    side = await asyncpg_rs.connect(**pg.connect_kwargs())
    await side.execute(f"CREATE TABLE {table} (w int, seq int)")
    kills = 0
    try:
        pool = await asyncpg_rs.create_pool(
            **pg.connect_kwargs(), min_size=4, max_size=4, server_settings={"application_name": app}
        )
        load = Load(pool, table, workers=12)

        async def killer():
            nonlocal kills
            for _ in range(12):
                await asyncio.sleep(0.12)
                pids = await side.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
                )
                if pids:
                    pid = random.choice(pids)["pid"]
                    if await side.fetchval("SELECT pg_terminate_backend($1)", pid):
                        kills += 1

        async def disturb():
            disturb.task = asyncio.ensure_future(killer())

        hung = await load.run(1.8, disturb)
        await asyncio.wait_for(disturb.task, 30)
        # the pool serves again once the killing stops
        assert await asyncio.wait_for(pool.fetchval("SELECT 7"), 10) == 7
        await asyncio.wait_for(pool.close(), 10)
        leaked = await _sessions_gone(side, app)
        lost = await load.lost_writes(side)
        _summary(
            "kills",
            event_loop_name,
            ops=load.ops,
            kills=kills,
            errors=load.errors,
            hangs=hung,
            leaked=leaked,
            lost_acked_writes=lost,
            crosstalk=load.crosstalk,
        )
        assert hung == 0 and leaked == 0 and lost == 0 and load.crosstalk == 0
        assert kills > 0 and load.ops > 0
    finally:
        await side.execute(f"DROP TABLE IF EXISTS {table}")
        await side.close()


@pytest.fixture(scope="module")
def own_cluster(pg):
    if getattr(pg, "external", False):
        pytest.skip("restarts need a throwaway cluster of their own")
    cluster = pgcluster.Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_server_restart_under_pool_load(own_cluster, event_loop_name, mode):
    cluster = own_cluster
    loop = asyncio.get_running_loop()
    table = f"fault_restart_{event_loop_name}_{mode}"
    side = await asyncpg_rs.connect(**cluster.connect_kwargs())
    await side.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (w int, seq int)")
    await side.close()
    # an acknowledged commit must survive an immediate stop: wait for the WAL write
    pool = await asyncpg_rs.create_pool(
        **cluster.connect_kwargs(),
        min_size=4,
        max_size=4,
        server_settings={"synchronous_commit": "on"},
    )
    load = Load(pool, table, workers=8)
    times = {}

    async def disturb():
        async def restart():
            await asyncio.sleep(0.3)
            times["stop"] = time.monotonic()
            await loop.run_in_executor(None, lambda: cluster.restart(mode=mode))
            times["up"] = time.monotonic()

        disturb.task = asyncio.ensure_future(restart())

    try:
        hung = await load.run(0.3, disturb)
        await asyncio.wait_for(disturb.task, 60)
        # recovery: from the server being back to the pool's first good answer
        recovered = None
        deadline = time.monotonic() + 30
        while recovered is None and time.monotonic() < deadline:
            try:
                if await asyncio.wait_for(pool.fetchval("SELECT 1"), 5) == 1:
                    recovered = time.monotonic()
            except CONNECTION_ERRORS:
                await asyncio.sleep(0.02)
        # the load again, briefly, on the recovered pool
        load.stop.clear()
        hung += await load.run(0.5, _nothing)
        await asyncio.wait_for(pool.close(), 10)
        side = await asyncpg_rs.connect(**cluster.connect_kwargs())
        try:
            lost = await load.lost_writes(side)
            leaked = await side.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        finally:
            await side.close()
        recovery = None if recovered is None else round(recovered - times["up"], 3)
        _summary(
            f"restart-{mode}",
            event_loop_name,
            ops=load.ops,
            errors=load.errors,
            hangs=hung,
            leaked=leaked,
            lost_acked_writes=lost,
            crosstalk=load.crosstalk,
            server_down_s=round(times["up"] - times["stop"], 3),
            recovery_after_up_s=recovery,
        )
        assert recovered is not None, "the pool never served again"
        assert hung == 0 and leaked == 0 and lost == 0 and load.crosstalk == 0
        assert load.errors, "the restart should have been noticed"
    finally:
        pool.terminate()


async def _nothing():
    pass


# ---------------------------------------------------------------- a misbehaving network


async def test_relay_blackhole_pause_and_reset(pg, event_loop_name):
    figures = {}
    with Relay(pg.host, pg.port) as relay:
        kw = pg.connect_kwargs(host=relay.host, port=relay.port)

        # blackhole: the timeout fires, and the connection does not wait forever after it
        con = await asyncpg_rs.connect(**kw, ssl=False, command_timeout=1.0)
        relay.blackhole()
        start = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await con.fetchval("SELECT 1", timeout=0.3)
        figures["blackhole_timeout_s"] = round(time.monotonic() - start, 3)
        start = time.monotonic()
        try:
            await asyncio.wait_for(con.fetchval("SELECT 2", timeout=0.3), 10)
            figures["blackhole_next"] = "answered"
        except (asyncio.TimeoutError, *CONNECTION_ERRORS) as e:
            figures["blackhole_next"] = type(e).__name__
        figures["blackhole_next_s"] = round(time.monotonic() - start, 3)
        con.terminate()
        relay.blackhole(False)

        # without command_timeout the stuck CancelRequest is not bounded, but the next
        # query's own timeout still fires while it waits for it (as asyncpg's does)
        con = await asyncpg_rs.connect(**kw, ssl=False)
        relay.blackhole()
        with pytest.raises(asyncio.TimeoutError):
            await con.fetchval("SELECT 1", timeout=0.3)
        waiting = asyncio.ensure_future(con.fetchval("SELECT 2", timeout=0.3))
        done, _ = await asyncio.wait({waiting}, timeout=10)
        assert done, "the second query's timeout did not fire"
        assert isinstance(waiting.exception(), asyncio.TimeoutError), waiting.exception()
        con.terminate()
        relay.blackhole(False)

        # pause: everything waits, then every query gets its own answer
        cons = [await asyncpg_rs.connect(**kw, ssl=False) for _ in range(4)]
        relay.pause()
        tasks = [
            asyncio.ensure_future(c.fetchval("SELECT $1::int4 + 0", i * 10 + j))
            for i, c in enumerate(cons)
            for j in range(1)
        ]
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in tasks)
        relay.resume()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert results == [i * 10 for i in range(4)]
        for c in cons:
            await c.close()

        # resets under load: errors of asyncpg's classes, never a wrong answer
        pool = await asyncpg_rs.create_pool(**kw, ssl=False, min_size=3, max_size=3)
        ops = crosstalk = 0
        errors = {}
        stop = asyncio.Event()

        async def worker(w):
            nonlocal ops, crosstalk
            for n in itertools.count():
                if stop.is_set():
                    return
                token = w * 100_000 + n
                try:
                    got = await pool.fetchval("SELECT $1::int8", token, timeout=5)
                    ops += 1
                    crosstalk += got != token
                except CONNECTION_ERRORS as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    await asyncio.sleep(0.01)

        tasks = [asyncio.ensure_future(worker(w)) for w in range(6)]
        resets = 0
        for _ in range(6):
            await asyncio.sleep(0.15)
            resets += relay.reset_all()
        await asyncio.sleep(0.2)
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=30)
        assert await asyncio.wait_for(pool.fetchval("SELECT 5"), 10) == 5
        await asyncio.wait_for(pool.close(), 10)
    _summary(
        "relay",
        event_loop_name,
        ops=ops,
        resets=resets,
        errors=errors,
        hangs=len(pending),
        crosstalk=crosstalk,
        **figures,
    )
    assert not pending and crosstalk == 0 and ops > 0 and resets > 0


# ---------------------------------------------------------------- cancellation storms


async def test_cancellation_storm_on_one_connection(con, event_loop_name):
    rnd = random.Random(7)
    cancelled = completed = 0
    # one operation at a time (a connection runs one), each cancelled at a random moment:
    # before it is sent, while it is on the wire, while its answer is being read
    for i in range(150):
        task = asyncio.ensure_future(con.fetchval("SELECT $1::int4", i))
        pause = rnd.choice([None, 0, 0, 0.0002, 0.001, 0.003])
        if pause is not None:
            await asyncio.sleep(pause)
            task.cancel()
        try:
            result = await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            cancelled += 1
        else:
            assert result == i, (i, result)
            completed += 1
    # and slow queries cancelled mid-flight (the server-side cancel path)
    for _ in range(5):
        t = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(5)"))
        await asyncio.sleep(rnd.choice([0.001, 0.01, 0.05]))
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        cancelled += 1
    assert await asyncio.wait_for(con.fetchval("SELECT 42"), 10) == 42
    assert not con.is_in_transaction()
    _summary("cancel-storm-connection", event_loop_name, cancelled=cancelled, completed=completed)


async def test_cancellation_storm_on_a_pool(pg, event_loop_name):
    app = f"fault_storm_{next(_names)}"
    rnd = random.Random(11)
    side = await asyncpg_rs.connect(**pg.connect_kwargs())
    pool = await asyncpg_rs.create_pool(
        **pg.connect_kwargs(), min_size=2, max_size=4, server_settings={"application_name": app}
    )
    cancelled = completed = 0

    async def job(i):
        async with pool.acquire() as c:
            sleep = rnd.choice([0, 0, 0.01, 0.05])
            return await c.fetchval("SELECT $1::int4 FROM pg_sleep($2)", i, sleep)

    try:
        for _ in range(8):
            tasks = [asyncio.ensure_future(job(i)) for i in range(16)]
            await asyncio.sleep(rnd.choice([0, 0.001, 0.01, 0.03]))
            for t in tasks:
                if rnd.random() < 0.5:
                    t.cancel()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
            for i, r in enumerate(results):
                if isinstance(r, asyncio.CancelledError):
                    cancelled += 1
                else:
                    assert r == i
                    completed += 1
        answers = await asyncio.wait_for(
            asyncio.gather(*(pool.fetchval("SELECT $1::int4", i) for i in range(20))), 20
        )
        assert answers == list(range(20))
        sessions = await _our_sessions(side, app)
        assert sessions <= 4
        await asyncio.wait_for(pool.close(), 10)
        leaked = await _sessions_gone(side, app)
        _summary(
            "cancel-storm-pool",
            event_loop_name,
            cancelled=cancelled,
            completed=completed,
            leaked=leaked,
        )
        assert leaked == 0
    finally:
        pool.terminate()
        await side.close()


# ---------------------------------------------------------------- the server's timeouts


async def test_statement_and_idle_in_transaction_timeouts(pg, event_loop_name):
    con = await asyncpg_rs.connect(**pg.connect_kwargs())
    try:
        await con.execute("SET statement_timeout = 100")
        with pytest.raises(exceptions.QueryCanceledError, match="statement timeout"):
            await asyncio.wait_for(con.fetchval("SELECT pg_sleep(5)"), 10)
        assert await con.fetchval("SELECT 3") == 3
        await con.execute(
            "SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 200"
        )
        tr = con.transaction()
        await tr.start()
        await con.fetchval("SELECT 1")
        await asyncio.sleep(0.6)
        with pytest.raises(
            (
                exceptions.IdleInTransactionSessionTimeoutError,
                exceptions.ConnectionDoesNotExistError,
                exceptions.InterfaceError,
            )
        ) as info:
            await asyncio.wait_for(con.fetchval("SELECT 2"), 10)
        assert con.is_closed()
        _summary("server-timeouts", event_loop_name, idle_timeout_error=type(info.value).__name__)
    finally:
        con.terminate()
