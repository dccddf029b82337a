"""Driver benchmark: asyncpg_rs against asyncpg, side by side, in one run.

Every cell runs in a fresh worker process (so peak RSS is per cell), for each driver on each
loop (the stdlib loop, uvloop, and asyncpg_rs's own loop when it is available), interleaved
and repeated; the table shows medians and the ratio asyncpg_rs / asyncpg on the same loop.

    python benchmarks/driver_bench.py                 # a throwaway cluster from tools/pgcluster.py
    python benchmarks/driver_bench.py --dsn postgres://postgres@127.0.0.1:5432/postgres
    python benchmarks/driver_bench.py --cells select1_c1,rows100k_c1 --repeat 5

The throwaway cluster has TLS on, so by default (sslmode=prefer) both drivers talk TLS; add
``?sslmode=disable`` to a ``--dsn`` to measure plain TCP, where asyncpg_rs on its own loop
takes the native transport-to-protocol path.

This is a benchmark, not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time

from _harness import driver_loops, interleaved, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CELLS = {
    # name: (description, unit)
    "select1_c1": ("SELECT 1, 1 connection", "q/s"),
    "select1_c10": ("SELECT 1, 10 connections", "q/s"),
    "series1000_c10": ("generate_series(1,1000), 10 conns", "q/s"),
    "wide1000_c10": ("1000 rows x 9 typed columns, 10 conns", "q/s"),
    "rows100k_c1": ("100k rows x (int4,int8,float8,text,tstz)", "rows/s"),
    "executemany_10k": ("executemany, 10k rows", "rows/s"),
}

# 1000 rows of nine columns of different types: where decoding, not the round trip, counts
NINE_COLUMNS_QUERY = (
    "SELECT g::int4, g::int8 * 1000003, g * 1.5::float8, g % 2 = 0, 'row ' || g, "
    "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', "
    "(g * 1.37)::numeric(14, 3), md5(g::text)::uuid, ARRAY[g, g + 1, g + 2]::int4[] "
    "FROM generate_series(1, 1000) g"
)

WIDE_QUERY = (
    "SELECT g::int4, g::int8, g::float8, 'row number ' || g::text, "
    "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second' "
    "FROM generate_series(1, 100000) g"
)


# ---------------------------------------------------------------- worker side


async def _timed_loop(conns, op, duration):
    """Run ``op(conn)`` back to back on every connection for ``duration``; returns ops/s."""
    stop = time.perf_counter() + duration
    counts = [0] * len(conns)

    async def worker(i, con):
        n = 0
        while time.perf_counter() < stop:
            await op(con)
            n += 1
        counts[i] = n

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    return sum(counts) / (time.perf_counter() - started)


async def _cell(driver, cell, dsn, duration):
    nconns = 10 if cell.endswith("_c10") else 1
    conns = [await driver.connect(dsn) for _ in range(nconns)]
    try:
        if cell.startswith("select1"):

            async def op(con):
                await con.fetchval("SELECT 1")

            await _timed_loop(conns, op, 0.3)  # warm-up: statement cache, JIT-free paths
            return await _timed_loop(conns, op, duration)
        if cell in ("series1000_c10", "wide1000_c10"):
            query = (
                "SELECT generate_series(1, 1000)"
                if cell == "series1000_c10"
                else NINE_COLUMNS_QUERY
            )

            async def op(con):
                await con.fetch(query)

            await _timed_loop(conns, op, 0.3)
            return await _timed_loop(conns, op, duration)
        if cell == "rows100k_c1":
            con = conns[0]
            await con.fetch(WIDE_QUERY)
            best = 0.0
            stop = time.perf_counter() + duration
            while True:
                t = time.perf_counter()
                rows = await con.fetch(WIDE_QUERY)
                el = time.perf_counter() - t
                best = max(best, len(rows) / el)
                del rows
                if time.perf_counter() > stop:
                    break
            return best
        if cell == "executemany_10k":
            con = conns[0]
            await con.execute("CREATE TEMP TABLE bench_em (a int4, b text, c float8)")
            data = [(i, f"value {i}", i * 0.5) for i in range(10000)]
            best = 0.0
            stop = time.perf_counter() + duration
            while True:
                t = time.perf_counter()
                await con.executemany("INSERT INTO bench_em VALUES ($1, $2, $3)", data)
                el = time.perf_counter() - t
                best = max(best, len(data) / el)
                await con.execute("TRUNCATE bench_em")
                if time.perf_counter() > stop:
                    break
            return best
        raise SystemExit(f"unknown cell {cell}")
    finally:
        for c in conns:
            await c.close()


def _worker(driver_name, loop_name, cell, dsn, duration):
    if driver_name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        value = loop.run_until_complete(_cell(driver, cell, dsn, duration))
    finally:
        loop.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"value": value, "rss_kib": peak, "rss_growth_kib": peak - base_rss}))


# ---------------------------------------------------------------- driver side


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn")
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--loops", default=None, help="comma list; default: all available")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        driver, loop, cell, dsn, duration = args.worker
        _worker(driver, loop, cell, dsn, float(duration))
        return

    with server_dsn(args.dsn) as dsn:
        _run(args, dsn)


def _run(args, dsn):
    cells = [c for c in args.cells.split(",") if c]
    loops = args.loops.split(",") if args.loops else driver_loops()
    results = interleaved(
        args.repeat,
        cells,
        loops,
        lambda driver, loop, cell: run_worker(__file__, (driver, loop, cell, dsn, args.duration)),
    )
    _report(results, cells, loops)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"|".join(k): v for k, v in results.items()}, f, indent=1)


def _median(rs, key):
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else None


def _num(v):
    return f"{v:12.0f}" if v else f"{'error':>12}"


def _mib(kib):
    return f"{kib / 1024:8.0f}M" if kib else "        -"


def _report(results, cells, loops):
    print()
    print(
        f"{'cell':44} {'loop':10} {'asyncpg':>12} {'asyncpg_rs':>12} {'ratio':>7}"
        f" {'RSS apg':>9} {'RSS rs':>9}"
    )
    ratios = []
    for cell in cells:
        desc, unit = CELLS[cell]
        for loop in loops:
            a = results.get((cell, loop, "asyncpg"), [])
            r = results.get((cell, loop, "asyncpg_rs"), [])
            av, rv = _median(a, "value"), _median(r, "value")
            ar, rr = _median(a, "rss_kib"), _median(r, "rss_kib")
            ratio = rv / av if av and rv else None
            if ratio:
                ratios.append(ratio)
            print(
                f"{desc + ' (' + unit + ')':44} {loop:10} {_num(av)} {_num(rv)} "
                f"{(f'{ratio:7.2f}' if ratio else '      -')} {_mib(ar)} {_mib(rr)}"
            )
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(f"\ngeometric mean of ratios: {geo:.2f} (min {min(ratios):.2f})")
    if "asyncpg_rs" in loops and "uvloop" in loops:
        # the headline: our driver on our loop (native fast path) against asyncpg + uvloop
        print("\nasyncpg_rs on its own loop vs asyncpg on uvloop:")
        best = []
        for cell in cells:
            desc, unit = CELLS[cell]
            av = _median(results.get((cell, "uvloop", "asyncpg"), []), "value")
            rv = _median(results.get((cell, "asyncpg_rs", "asyncpg_rs"), []), "value")
            if av and rv:
                best.append(rv / av)
                print(f"  {desc + ' (' + unit + ')':44} {_num(av)} {_num(rv)} {rv / av:7.2f}")
        if best:
            print(f"  geometric mean: {statistics.geometric_mean(best):.2f}")


if __name__ == "__main__":
    main()
