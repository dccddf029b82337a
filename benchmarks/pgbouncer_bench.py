"""Through PgBouncer in transaction mode: SELECT 1 and a one-row lookup at 10 connections.

asyncpg_rs with its default settings against asyncpg with ``statement_cache_size=0`` (the
setting asyncpg's documentation requires behind a transaction pooler), on each loop, side by
side in one run, interleaved and repeated; prints the medians and their ratio. It starts its
own throwaway cluster and a PgBouncer (Debian's package) in front of it.

    python benchmarks/pgbouncer_bench.py [--repeat 3] [--duration 3] [--pool-size 5]

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from _harness import driver_loops, new_loop, run_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONNECTIONS = 10
QUERIES = {
    "select1": ("SELECT 1", ()),
    "lookup": ("SELECT oid, typname, typlen FROM pg_type WHERE oid = $1", (23,)),
}


async def _run(driver, kwargs, query, duration):
    sql, args = QUERIES[query]
    cons = [await driver.connect(**kwargs) for _ in range(CONNECTIONS)]

    async def phase(seconds):
        stop = time.perf_counter() + seconds
        count = 0

        async def worker(con):
            nonlocal count
            while time.perf_counter() < stop:
                await con.fetchrow(sql, *args)
                count += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in cons))
        return count, time.perf_counter() - started

    await phase(0.3)  # warm-up: statement caches, pooler's server connections
    count, elapsed = await phase(duration)
    for c in cons:
        await c.close()
    return {"qps": count / elapsed}


def _worker(driver_name, loop_name, kwargs_json, query, duration):
    kwargs = json.loads(kwargs_json)
    if driver_name == "asyncpg":
        import asyncpg as driver

        kwargs["statement_cache_size"] = 0
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    try:
        print(json.dumps(loop.run_until_complete(_run(driver, kwargs, query, duration))))
    finally:
        loop.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--pool-size", type=int, default=5, help="PgBouncer's server connections")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        driver, loop, kwargs, query, duration = args.worker
        _worker(driver, loop, kwargs, query, float(duration))
        return
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import pgcluster

    cluster = pgcluster.Cluster.start()
    loops = driver_loops()
    results = {}
    try:
        for rep in range(args.repeat):
            for query in QUERIES:
                for loop in loops:
                    order = ["asyncpg", "asyncpg_rs"] if rep % 2 == 0 else ["asyncpg_rs", "asyncpg"]
                    for driver in order:
                        # a PgBouncer per measurement: Debian's 1.18 stops answering SCRAM
                        # logins after a couple of hundred of them (both drivers alike)
                        bouncer = pgcluster.PgBouncer.start(
                            cluster, "transaction", pool_size=args.pool_size
                        )
                        try:
                            kwargs = json.dumps(bouncer.connect_kwargs())
                            r = run_worker(
                                __file__, (driver, loop, kwargs, query, args.duration), timeout=120
                            )
                        finally:
                            bouncer.stop()
                        if "error" in r:
                            print(f"  {query} {loop} {driver}: {r['error']}", file=sys.stderr)
                            continue
                        results.setdefault((query, loop, driver), []).append(r["qps"])
                        print(
                            f"  rep {rep + 1} {query:8} {loop:10} {driver:10} {r['qps']:.0f} q/s",
                            file=sys.stderr,
                        )
    finally:
        cluster.stop()
    print(
        f"\nPgBouncer {pgcluster.PgBouncer.binary()}, transaction mode, {args.pool_size} server "
        f"connections, {CONNECTIONS} client connections"
    )
    print(f"{'query':8} {'loop':10} {'asyncpg (cache 0)':>18} {'asyncpg_rs':>11} {'ratio':>6}")
    for query in QUERIES:
        for loop in loops:
            a = results.get((query, loop, "asyncpg"))
            r = results.get((query, loop, "asyncpg_rs"))
            if not a or not r:
                continue
            am, rm = statistics.median(a), statistics.median(r)
            print(f"{query:8} {loop:10} {am:18.0f} {rm:11.0f} {rm / am:6.2f}")


if __name__ == "__main__":
    main()
