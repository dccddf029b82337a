"""Soak: a pool under mixed load with periodic backend kills, for a bounded time.

One process per loop (stdlib, uvloop, ours), one after the other, each for ``--minutes``
(split evenly): 16 tasks on a pool of 8 run a mix of SELECT 1, a 1000-row fetch, an INSERT,
a short transaction, an executemany and a prepared statement; every ``--kill-every`` seconds
a random pool backend is terminated from a side connection. Reported per loop: operations,
errors by class, lost acknowledged writes, wrong answers, and RSS and the number of objects
the GC tracks (``len(gc.get_objects())``) after warm-up and at the end (after a collection).

    python benchmarks/soak_bench.py [--dsn DSN] [--minutes 5] [--loops asyncpg_rs] [--kill-every 2]

A benchmark, not a test: it asserts nothing; growth of RSS or objects is for a human to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time

from _harness import driver_loops, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TASKS = 16
POOL = 8


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _snapshot():
    gc.collect()
    return {"rss_mb": round(_rss_mb(), 1), "gc_objects": len(gc.get_objects())}


async def _soak(dsn, seconds, kill_every):
    import asyncpg_rs as driver
    from asyncpg_rs import exceptions

    app = f"soak_{os.getpid()}"
    table = f"soak_{os.getpid()}"
    side = await driver.connect(dsn)
    await side.execute(f"CREATE TABLE {table} (w int, seq int)")
    pool = await driver.create_pool(
        dsn, min_size=POOL, max_size=POOL, server_settings={"application_name": app}
    )
    ops = wrong = kills = 0
    errors = {}
    acked = set()
    stop = asyncio.Event()
    expected = (
        exceptions.InterfaceError,
        exceptions.PostgresConnectionError,
        exceptions.AdminShutdownError,
        ConnectionError,
        asyncio.TimeoutError,
    )

    async def one(w, seq, rnd):
        nonlocal wrong
        kind = rnd.randrange(6)
        if kind == 0:
            wrong += await pool.fetchval("SELECT $1::int8", seq) != seq
        elif kind == 1:
            rows = await pool.fetch("SELECT i, i::text FROM generate_series(1, 1000) i")
            wrong += len(rows) != 1000 or rows[-1][1] != "1000"
        elif kind == 2:
            await pool.execute(f"INSERT INTO {table} VALUES ($1, $2)", w, seq)
            acked.add((w, seq))
        elif kind == 3:
            async with pool.acquire() as con, con.transaction():
                await con.execute(f"INSERT INTO {table} VALUES ($1, $2)", w, seq)
                got = await con.fetchval(f"SELECT count(*) FROM {table} WHERE w = $1", w)
            acked.add((w, seq))
            wrong += got < 1
        elif kind == 4:
            async with pool.acquire() as con:
                await con.executemany("SELECT $1::int4, $2::text", [(i, str(i)) for i in range(50)])
        else:
            async with pool.acquire() as con:
                stmt = await con.prepare("SELECT $1::int4 * 2")
                wrong += await stmt.fetchval(seq % 1000) != (seq % 1000) * 2

    async def worker(w):
        nonlocal ops
        rnd = random.Random(w)
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                await asyncio.wait_for(one(w, seq, rnd), 30)
                ops += 1
            except expected as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                await asyncio.sleep(0.01)

    async def killer():
        nonlocal kills
        while not stop.is_set():
            await asyncio.sleep(kill_every)
            pids = await side.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app
            )
            if pids and await side.fetchval(
                "SELECT pg_terminate_backend($1)", random.choice(pids)["pid"]
            ):
                kills += 1

    tasks = [asyncio.ensure_future(worker(w)) for w in range(TASKS)]
    await asyncio.sleep(min(5.0, seconds / 10))  # warm-up: caches, pool, allocator
    start = _snapshot()
    kill_task = asyncio.ensure_future(killer())
    await asyncio.sleep(seconds)
    stop.set()
    _, hung = await asyncio.wait(tasks, timeout=60)
    await asyncio.wait([kill_task], timeout=10)
    await pool.close()
    rows = await side.fetch(f"SELECT w, seq FROM {table}")
    lost = len(acked - {(r["w"], r["seq"]) for r in rows})
    await side.execute(f"DROP TABLE {table}")
    await side.close()
    end = _snapshot()
    return {
        "ops": ops,
        "kills": kills,
        "errors": errors,
        "hung": len(hung),
        "lost_acked_writes": lost,
        "wrong_answers": wrong,
        "start": start,
        "end": end,
    }


def worker(loop_name, dsn, seconds, kill_every):
    sys.path.insert(0, ROOT)
    loop = new_loop(loop_name)
    try:
        result = loop.run_until_complete(_soak(dsn, float(seconds), float(kill_every)))
    finally:
        loop.close()
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn")
    ap.add_argument("--minutes", type=float, default=5.0, help="in total, split over the loops")
    ap.add_argument("--loops", nargs="*", help="default: every loop the driver runs on")
    ap.add_argument("--kill-every", type=float, default=2.0)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    loops = args.loops or driver_loops()
    seconds = args.minutes * 60 / len(loops)
    with server_dsn(args.dsn) as dsn:
        for name in loops:
            started = time.monotonic()
            out = run_worker(__file__, [name, dsn, seconds, args.kill_every], timeout=seconds + 300)
            took = time.monotonic() - started
            print(f"{name:<11} {took:6.0f} s  {json.dumps(out)}", flush=True)


if __name__ == "__main__":
    main()
