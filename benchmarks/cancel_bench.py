"""Cancellation of a large read: how promptly a timed-out fetch returns, and at what cost.

``asyncio.wait_for(conn.fetch(<2 M rows>), 0.3)`` on each loop (stdlib, uvloop, ours) with
asyncpg_rs, and with asyncpg on uvloop, each cell in a fresh process. Per cell, the medians
over the repeats of:

- return latency: from the call to the ``TimeoutError`` (the timeout asked for: 0.3 s);
- peak RSS growth during the cancelled fetch (``ru_maxrss`` after, minus RSS before);
- next-query latency: the ``SELECT 1`` right after (it waits for the cancellation to land).

    python benchmarks/cancel_bench.py [--dsn DSN] [--rows 2000000] [--timeout 0.3] [--repeat 5]

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time

from _harness import driver_loops, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def _measure(driver, dsn, rows, timeout):
    con = await driver.connect(dsn)
    try:
        await con.fetchval("SELECT 1")
        # generate_series in the select list streams (in FROM it is materialised first):
        # rows are arriving, and being decoded, when the timeout fires
        query = f"SELECT i, i::text AS t FROM (SELECT generate_series(1, {rows}) AS i) AS s"
        rss_before = _rss_kib()
        start = time.perf_counter()
        try:
            await asyncio.wait_for(con.fetch(query), timeout)
            outcome = "completed"
        except asyncio.TimeoutError:
            outcome = "timeout"
        returned = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        value = await asyncio.wait_for(con.fetchval("SELECT 1"), 30)
        next_query = time.perf_counter() - start
        return {
            "outcome": outcome if value == 1 else "wrong next result",
            "return_s": returned,
            "peak_rss_mb": max(0, peak - rss_before) / 1024,
            "next_query_s": next_query,
        }
    finally:
        await con.close()


def worker(driver_name, loop_name, dsn, rows, timeout):
    sys.path.insert(0, ROOT)
    if driver_name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    try:
        result = loop.run_until_complete(_measure(driver, dsn, int(rows), float(timeout)))
    finally:
        loop.close()
    import json

    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--timeout", type=float, default=0.3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    cells = [("asyncpg_rs", name) for name in driver_loops()]
    try:
        import asyncpg  # noqa: F401
        import uvloop  # noqa: F401

        cells.append(("asyncpg", "uvloop"))
    except ImportError:
        pass
    results = {cell: [] for cell in cells}
    with server_dsn(args.dsn) as dsn:
        for _ in range(args.repeat):
            for cell in cells:
                out = run_worker(__file__, [*cell, dsn, args.rows, args.timeout])
                results[cell].append(out)
    print(f"wait_for(fetch({args.rows} rows), {args.timeout}) — medians of {args.repeat}")
    print(
        f"{'driver':<11} {'loop':<11} {'return s':>9} {'peak RSS MB':>12} "
        f"{'next query s':>13}  outcomes"
    )
    for (driver_name, loop_name), outs in results.items():
        good = [o for o in outs if "error" not in o]
        errors = [o["error"] for o in outs if "error" in o]
        if not good:
            print(f"{driver_name:<11} {loop_name:<11} failed: {errors[:1]}")
            continue

        def med(key, good=good):
            return statistics.median(o[key] for o in good)

        outcomes = sorted({o["outcome"] for o in good} | set(errors))
        print(
            f"{driver_name:<11} {loop_name:<11} {med('return_s'):>9.3f} "
            f"{med('peak_rss_mb'):>12.1f} {med('next_query_s'):>13.3f}  "
            f"{','.join(outcomes)} (max return {max(o['return_s'] for o in good):.3f})"
        )


if __name__ == "__main__":
    main()
