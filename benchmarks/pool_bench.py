"""Pool benchmark: SELECT 1 on a pooled connection at 64 concurrent tasks on a pool of 10.

Two forms of the same operation: ``async with pool.acquire() as con: await
con.fetchval(...)`` ("acquire") and the one-statement shortcut ``await pool.fetchval(...)``
("shortcut"). asyncpg_rs's pool against asyncpg's, on each available loop, side by side in
one run, interleaved and repeated; prints medians of throughput and of server CPU per
operation (the CPU time the pool's backends used, read from /proc, divided by operations).

    python benchmarks/pool_bench.py [--dsn DSN] [--repeat 3] [--duration 3]
                                    [--forms acquire,shortcut]

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

from _harness import driver_loops, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TASKS = 64
POOL_SIZE = 10
FORMS = ("acquire", "shortcut")


def _backend_cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


async def _run(driver, dsn, duration, form):
    pool = await driver.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    pids = set()
    for _ in range(POOL_SIZE * 3):
        async with pool.acquire() as con:
            pids.add(con.get_server_pid())

    async def phase(seconds):
        stop = time.perf_counter() + seconds
        count = 0

        async def worker():
            nonlocal count
            while time.perf_counter() < stop:
                if form == "shortcut":
                    await pool.fetchval("SELECT 1")
                else:
                    async with pool.acquire() as con:
                        await con.fetchval("SELECT 1")
                count += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(TASKS)))
        return count, time.perf_counter() - started

    await phase(0.3)  # warm-up: statement caches, connections
    cpu0 = _backend_cpu_seconds(pids)
    count, elapsed = await phase(duration)
    cpu = _backend_cpu_seconds(pids) - cpu0
    await pool.close()
    return {"ops_per_s": count / elapsed, "server_us_per_op": cpu / max(count, 1) * 1e6}


def _worker(driver_name, loop_name, dsn, duration, form):
    if driver_name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    try:
        print(json.dumps(loop.run_until_complete(_run(driver, dsn, duration, form))))
    finally:
        loop.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--forms", default=",".join(FORMS), help="comma list of " + ", ".join(FORMS))
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        driver, loop, dsn, duration, form = args.worker
        _worker(driver, loop, dsn, float(duration), form)
        return
    forms = args.forms.split(",")
    unknown = set(forms) - set(FORMS)
    if unknown:
        raise SystemExit(f"unknown forms {sorted(unknown)}; choose from {FORMS}")
    with server_dsn(args.dsn) as dsn:
        loops = driver_loops()
        results = {}
        for rep in range(args.repeat):
            for loop in loops:
                for form in forms:
                    order = ["asyncpg", "asyncpg_rs"]
                    if rep % 2:
                        order.reverse()
                    for driver in order:
                        cell = (driver, loop, dsn, args.duration, form)
                        r = run_worker(__file__, cell, timeout=300)
                        if "error" in r:
                            print(f"  {loop} {form} {driver}: {r['error']}", file=sys.stderr)
                            continue
                        results.setdefault((loop, form, driver), []).append(r)
                        print(f"  rep {rep + 1} {loop:8} {form:8} {driver:10} {r}", file=sys.stderr)
    print(
        f"\n{'loop':10} {'form':8} {'ops/s asyncpg':>14} {'ops/s rs':>10} {'ratio':>6}"
        f" {'srv us/op apg':>14} {'srv us/op rs':>13} {'ratio':>6}"
    )
    for loop in loops:
        for form in forms:
            a = results.get((loop, form, "asyncpg"), [])
            r = results.get((loop, form, "asyncpg_rs"), [])
            if not a or not r:
                continue
            aq = statistics.median(x["ops_per_s"] for x in a)
            rq = statistics.median(x["ops_per_s"] for x in r)
            ac = statistics.median(x["server_us_per_op"] for x in a)
            rc = statistics.median(x["server_us_per_op"] for x in r)
            print(
                f"{loop:10} {form:8} {aq:14.0f} {rq:10.0f} {rq / aq:6.2f}"
                f" {ac:14.1f} {rc:13.1f} {rc / ac:6.2f}"
            )


if __name__ == "__main__":
    main()
