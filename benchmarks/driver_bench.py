"""Driver benchmark: asyncpg_rs against asyncpg and psycopg 3, side by side, in one run.

Every cell runs in a fresh worker process (so peak RSS is per cell), for each driver on each
loop (the stdlib loop, uvloop, and asyncpg_rs's own loop when it is available), interleaved
and repeated; the table shows medians and the ratios asyncpg_rs / asyncpg and psycopg /
asyncpg on the same loop. psycopg 3 (when installed) runs through its fastest idiomatic
async API: binary results, every statement prepared from its first execution
(``prepare_threshold=0``), rows as plain tuples, ``executemany`` in pipeline mode.
The executemany cell also reports the server's CPU time per batch (the backend's
``/proc/<pid>/schedstat``, so the server must run on this machine).

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
import functools
import json
import os
import re
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
    "pg_type_c10": ("pg_type (~600 rows x 12 cols), 10 conns", "q/s"),
    "executemany_10k": ("executemany, 10k rows x 4 columns", "rows/s"),
}

DRIVERS = ("asyncpg", "asyncpg_rs", "psycopg")

# a catalogue query of the kind ORMs and introspection run: many small columns of
# catalogue types (oid, name, "char", bool, int2)
PG_TYPE_QUERY = (
    "SELECT oid, typname, typnamespace, typowner, typlen, typbyval, typtype, typcategory, "
    "typispreferred, typisdefined, typdelim, typrelid FROM pg_type"
)

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


@functools.lru_cache
def _percent_params(query):
    """``$1, $2`` placeholders as psycopg's ``%s``."""
    return re.sub(r"\$\d+", "%s", query)


class _Psycopg:
    """psycopg 3's fastest idiomatic async use behind the few methods the cells call."""

    @classmethod
    async def connect(cls, dsn):
        import psycopg

        self = cls()
        self.con = await psycopg.AsyncConnection.connect(dsn, autocommit=True, prepare_threshold=0)
        self.cur = self.con.cursor(binary=True)
        return self

    async def fetchval(self, query, *args):
        await self.cur.execute(_percent_params(query), args or None, prepare=True)
        return (await self.cur.fetchone())[0]

    async def fetch(self, query, *args):
        await self.cur.execute(_percent_params(query), args or None, prepare=True)
        return await self.cur.fetchall()

    async def execute(self, query):
        await self.cur.execute(query)

    async def executemany(self, query, data):
        await self.cur.executemany(_percent_params(query), data)

    async def close(self):
        await self.con.close()


def _server_ms(pid):
    """The backend's CPU time so far, in ms (nanosecond resolution, unlike /proc/stat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e6


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
        if cell in ("series1000_c10", "wide1000_c10", "pg_type_c10"):
            query = {
                "series1000_c10": "SELECT generate_series(1, 1000)",
                "wide1000_c10": NINE_COLUMNS_QUERY,
                "pg_type_c10": PG_TYPE_QUERY,
            }[cell]

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
            pid = await con.fetchval("SELECT pg_backend_pid()")
            await con.execute("CREATE TEMP TABLE bench_em (a int4, b text, c float8, d int8)")
            data = [(i, f"value {i}", i * 0.5, i * 1000003) for i in range(10000)]
            best = 0.0
            server = []
            busy = []
            stop = time.perf_counter() + duration
            while True:
                s0 = _server_ms(pid)
                t = time.perf_counter()
                await con.executemany("INSERT INTO bench_em VALUES ($1, $2, $3, $4)", data)
                el = time.perf_counter() - t
                server.append(_server_ms(pid) - s0)
                # the share of the batch's wall time the backend was on a CPU: near 1.0
                # the server, not the driver, sets the pace
                busy.append(server[-1] / (el * 1e3))
                best = max(best, len(data) / el)
                await con.execute("TRUNCATE bench_em")
                if time.perf_counter() > stop:
                    break
            return best, statistics.median(server), statistics.median(busy)
        raise SystemExit(f"unknown cell {cell}")
    finally:
        for c in conns:
            await c.close()


def _worker(driver_name, loop_name, cell, dsn, duration):
    if driver_name == "asyncpg":
        import asyncpg as driver
    elif driver_name == "psycopg":
        driver = _Psycopg
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        value = loop.run_until_complete(_cell(driver, cell, dsn, duration))
    finally:
        loop.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"rss_kib": peak, "rss_growth_kib": peak - base_rss}
    if isinstance(value, tuple):
        value, out["server_ms"], out["server_busy"] = value
    out["value"] = value
    print(json.dumps(out))


# ---------------------------------------------------------------- driver side


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn")
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--loops", default=None, help="comma list; default: all available")
    ap.add_argument(
        "--drivers",
        default=",".join(d for d in DRIVERS if d != "psycopg" or _have_psycopg()),
        help="comma list; default: asyncpg, asyncpg_rs and psycopg when installed",
    )
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
    drivers = [d for d in args.drivers.split(",") if d]
    results = interleaved(
        args.repeat,
        cells,
        loops,
        lambda driver, loop, cell: run_worker(__file__, (driver, loop, cell, dsn, args.duration)),
        drivers=drivers,
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


def _have_psycopg():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def _ratio(v, base):
    return f"{v / base:7.2f}" if v and base else "      -"


def _report(results, cells, loops):
    def med(cell, loop, driver, key="value"):
        return _median(results.get((cell, loop, driver), []), key)

    print()
    print(
        f"{'cell':44} {'loop':10} {'asyncpg':>12} {'asyncpg_rs':>12} {'psycopg':>12}"
        f" {'rs/apg':>7} {'psy/apg':>7} {'RSS apg':>9} {'RSS rs':>9}"
    )
    ratios = []
    for cell in cells:
        desc, unit = CELLS[cell]
        for loop in loops:
            av, rv, pv = (med(cell, loop, d) for d in DRIVERS)
            if av and rv:
                ratios.append(rv / av)
            print(
                f"{desc + ' (' + unit + ')':44} {loop:10} {_num(av)} {_num(rv)} {_num(pv)} "
                f"{_ratio(rv, av)} {_ratio(pv, av)} "
                f"{_mib(med(cell, loop, 'asyncpg', 'rss_kib'))} "
                f"{_mib(med(cell, loop, 'asyncpg_rs', 'rss_kib'))}"
            )
            sa, sr, sp = (med(cell, loop, d, "server_ms") for d in DRIVERS)
            if sa or sr or sp:
                fmt = lambda v: f"{v:12.1f}" if v else f"{'-':>12}"  # noqa: E731
                print(f"{'  server CPU per batch (ms)':44} {loop:10} {fmt(sa)} {fmt(sr)} {fmt(sp)}")
                ba, br, bp = (med(cell, loop, d, "server_busy") for d in DRIVERS)
                pct = lambda v: f"{v:12.0%}" if v else f"{'-':>12}"  # noqa: E731
                label = "  server busy, share of the batch"
                print(f"{label:44} {loop:10} {pct(ba)} {pct(br)} {pct(bp)}")
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(f"\ngeometric mean of asyncpg_rs/asyncpg: {geo:.2f} (min {min(ratios):.2f})")
    if "asyncpg_rs" in loops and "uvloop" in loops:
        # the headline: our driver on our loop (native fast path) against asyncpg + uvloop,
        # beside psycopg on uvloop
        print("\nagainst asyncpg on uvloop: asyncpg_rs on its own loop, psycopg on uvloop")
        best = []
        for cell in cells:
            desc, unit = CELLS[cell]
            av = med(cell, "uvloop", "asyncpg")
            rv = med(cell, "asyncpg_rs", "asyncpg_rs")
            pv = med(cell, "uvloop", "psycopg")
            if av and rv:
                best.append(rv / av)
            vs = f"{rv / pv:7.2f}" if rv and pv else "      -"
            print(
                f"  {desc + ' (' + unit + ')':44} {_num(av)} {_num(rv)} {_ratio(rv, av)}"
                f" {_ratio(pv, av)}  rs/psycopg {vs}"
            )
        if best:
            print(
                f"  geometric mean asyncpg_rs (own loop) / asyncpg (uvloop): "
                f"{statistics.geometric_mean(best):.2f}"
            )


if __name__ == "__main__":
    main()
