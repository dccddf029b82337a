"""Per-type decode cost: asyncpg_rs against asyncpg, side by side, in one run.

For each type, a worker fetches the same 100k-row table twice over: once selecting the
column once, once selecting it ``--copies`` times. The difference, divided by the extra
values, is the marginal cost of one more value of that type. Two measures of it:

- client CPU (``time.process_time``): what decoding costs the client, parsing the value's
  bytes off the wire and building the Python object. This is the decode cost, and the ratio
  the summary line uses;
- wall time: what the caller waits, which also holds the server's cost of producing the
  value (large for jsonb, whose text form the server builds per value) when the server is
  the slower side.

The heap is collected before each timed fetch (the garbage collector stays on, as in real
use). Each cell runs in a fresh worker process per driver and loop, interleaved and
repeated; the table shows medians in ns per value and the ratios asyncpg_rs / asyncpg
(below 1 means asyncpg_rs is faster).

    python benchmarks/types_bench.py                  # a throwaway cluster from tools/pgcluster.py
    python benchmarks/types_bench.py --dsn postgres://postgres@127.0.0.1:5432/postgres
    python benchmarks/types_bench.py --types numeric,uuid --repeat 3

This is a benchmark, not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time

from _harness import driver_loops, interleaved, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SOURCE_TABLE = "types_bench_src"

# name: (column definition, SQL for row g)
TYPES = {
    "int4": ("int4", "g"),
    "int8": ("int8", "g::int8 * 1000003"),
    "float8": ("float8", "g * 1.5"),
    "bool": ("bool", "g % 2 = 0"),
    "text16": ("text", "lpad(g::text, 16, 'x')"),
    "text100": ("text", "lpad(g::text, 100, 'x')"),
    "timestamptz": (
        "timestamptz",
        "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1.5 second'",
    ),
    "numeric": ("numeric", "(g * 1.37)::numeric(14, 3)"),
    "uuid": ("uuid", "md5(g::text)::uuid"),
    "int4[5]": ("int4[]", "ARRAY[g, g + 1, g + 2, g + 3, g + 4]"),
    "text": ("text", "'row number ' || g"),
    "jsonb": ("jsonb", "jsonb_build_object('id', g, 'name', 'row ' || g, 'ok', true)"),
}


def _column(name):
    return "c_" + "".join(ch if ch.isalnum() else "_" for ch in name)


# ---------------------------------------------------------------- worker side


async def _timed_fetch(con, query):
    """(wall, client CPU) seconds of one fetch, starting from a collected heap."""
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    rows = await con.fetch(query)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    del rows
    return wall, cpu


async def _cell(driver, typ, dsn, copies, iterations):
    col = _column(typ)
    one = f"SELECT {col} FROM {SOURCE_TABLE}"
    many = f"SELECT {', '.join([col] * copies)} FROM {SOURCE_TABLE}"
    con = await driver.connect(dsn)
    try:
        rows = len(await con.fetch(one))  # warm-up: statement cache, server buffers
        await con.fetch(many)
        one_wall = one_cpu = many_wall = many_cpu = float("inf")
        for _ in range(iterations):
            # alternate the two, so drift hits both alike
            w, c = await _timed_fetch(con, one)
            one_wall, one_cpu = min(one_wall, w), min(one_cpu, c)
            w, c = await _timed_fetch(con, many)
            many_wall, many_cpu = min(many_wall, w), min(many_cpu, c)
        extra = rows * (copies - 1)
        return {
            "value": (many_cpu - one_cpu) / extra * 1e9,
            "wall": (many_wall - one_wall) / extra * 1e9,
            "ns_per_row_one": one_wall / rows * 1e9,
        }
    finally:
        await con.close()


def _worker(driver_name, loop_name, typ, dsn, copies, iterations):
    if driver_name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    try:
        result = loop.run_until_complete(_cell(driver, typ, dsn, copies, iterations))
    finally:
        loop.close()
    print(json.dumps(result))


async def _prepare_source(dsn, rows):
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        await con.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")
        cols = ", ".join(f"{_column(n)} {d}" for n, (d, _) in TYPES.items())
        exprs = ", ".join(e for _, e in TYPES.values())
        await con.execute(f"CREATE UNLOGGED TABLE {SOURCE_TABLE} ({cols})")
        await con.execute(
            f"INSERT INTO {SOURCE_TABLE} SELECT {exprs} FROM generate_series(1, {rows}) g"
        )
        await con.execute(f"VACUUM ANALYZE {SOURCE_TABLE}")
    finally:
        await con.close()


async def _drop_source(dsn):
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        await con.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")
    finally:
        await con.close()


# ---------------------------------------------------------------- driver side


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument(
        "--loops",
        default=None,
        help="comma list (asyncio, uvloop, asyncpg_rs); default: asyncio,uvloop",
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument(
        "--copies", type=int, default=8, help="how many times the wide query selects the column"
    )
    ap.add_argument(
        "--iterations",
        type=int,
        default=3,
        help="timed (narrow, wide) pairs per worker; the worker keeps the best",
    )
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        driver, loop, typ, dsn, copies, iterations = args.worker
        _worker(driver, loop, typ, dsn, int(copies), int(iterations))
        return

    with server_dsn(args.dsn) as dsn:
        _run(args, dsn)


def _run(args, dsn):
    try:
        types = [t for t in args.types.split(",") if t]
        for t in types:
            if t not in TYPES:
                raise SystemExit(f"unknown type {t}; known: {', '.join(TYPES)}")
        loops = args.loops.split(",") if args.loops else driver_loops()
        asyncio.run(_prepare_source(dsn, args.rows))
        results = interleaved(
            args.repeat,
            types,
            loops,
            lambda driver, loop, typ: run_worker(
                __file__, (driver, loop, typ, dsn, args.copies, args.iterations)
            ),
        )
        _report(results, types, loops, args.rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"|".join(k): v for k, v in results.items()}, f, indent=1)
    finally:
        try:
            asyncio.run(_drop_source(dsn))
        except Exception:  # noqa: BLE001 - best effort; a throwaway cluster goes anyway
            pass


def _median(rs, key):
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else None


def _ns(v):
    return f"{v:9.1f}" if v is not None else f"{'error':>9}"


def _report(results, types, loops, rows):
    print()
    print(f"{rows} rows; marginal cost of one more value, ns, median of the repetitions")
    print(
        f"{'type':12} {'loop':10} {'CPU apg':>9} {'CPU rs':>9} {'ratio':>6}"
        f"   {'wall apg':>9} {'wall rs':>9} {'ratio':>6}"
    )
    ratios = []
    for typ in types:
        for loop in loops:
            a = results.get((typ, loop, "asyncpg"), [])
            r = results.get((typ, loop, "asyncpg_rs"), [])
            av, rv = _median(a, "value"), _median(r, "value")
            aw, rw = _median(a, "wall"), _median(r, "wall")
            ratio = rv / av if av and rv and av > 0 and rv > 0 else None
            wratio = rw / aw if aw and rw and aw > 0 and rw > 0 else None
            if ratio:
                ratios.append(ratio)
            print(
                f"{typ:12} {loop:10} {_ns(av)} {_ns(rv)} "
                f"{(f'{ratio:6.2f}' if ratio else '     -')}   {_ns(aw)} {_ns(rw)} "
                f"{(f'{wratio:6.2f}' if wratio else '     -')}"
            )
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(
            f"\ngeometric mean of the CPU ratios: {geo:.2f} (max {max(ratios):.2f}); "
            "below 1 is faster"
        )


if __name__ == "__main__":
    main()
