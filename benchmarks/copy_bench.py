"""COPY benchmark: asyncpg_rs against asyncpg, side by side, in one run.

Every cell runs in a fresh worker process, for each driver on each loop (the stdlib loop and
uvloop by default), interleaved and repeated; the table shows medians and the ratio
asyncpg_rs / asyncpg throughput on the same loop (above 1 means asyncpg_rs is faster), and
the client's CPU time per row: where the server is the slower side (COPY OUT to a fast
sink, COPY IN of text), throughput says little about the driver and CPU says more.

Cells:

- ``records``: ``copy_records_to_table`` of N rows (int4, text, timestamptz, numeric, with
  NULLs in every column), the records built before the clock starts;
- ``out_bytesio`` / ``out_async``: ``copy_from_table`` of an N-row table into a ``BytesIO``
  / an ``async def`` sink;
- ``in_file``: ``copy_to_table`` from a file-like (``BytesIO``) holding the N rows as text;
- ``records_narrow`` / ``records_wide``: ``copy_records_to_table`` of N rows into an ordinary
  (WAL-logged) table of one int4 column, where the server is the slower side, and of
  (int4, int8, text, timestamptz, float8).

Every cell also reports the server's CPU time per row: the backend's run time from
``/proc/<pid>/schedstat`` (``SELECT pg_backend_pid()``) before and after each operation, so
the server must run on this machine. Where the server is the bottleneck, what the driver
makes it do per row (message sizes, send pattern) is what decides the throughput.

    python benchmarks/copy_bench.py                   # a throwaway cluster from tools/pgcluster.py
    python benchmarks/copy_bench.py --dsn postgres://postgres@127.0.0.1:5432/postgres
    python benchmarks/copy_bench.py --cells records --rows 200000 --repeat 3

This is a benchmark, not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import decimal
import io
import json
import os
import resource
import statistics
import time

from _harness import driver_loops, interleaved, new_loop, run_worker, server_dsn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CELLS = {
    # name: description (the unit is rows/s for every cell)
    "records": "copy_records_to_table",
    "records7": "copy_records_to_table, 7 columns",
    "query_to_file": "copy_from_query -> file path",
    "cursor": "cursor iteration (prefetch 50)",
    "out_bytesio": "copy_from_table -> BytesIO",
    "out_async": "copy_from_table -> async sink",
    "in_file": "copy_to_table <- file-like",
    "records_narrow": "copy_records_to_table, int4 table",
    "records_wide": "copy_records_to_table, 5-col table",
}

WIDE5 = "a int4, b int8, c text, d timestamptz, e float8"

SOURCE_TABLE = "copy_bench_src"
COLUMNS = "a int4, b text, c timestamptz, d numeric"


def _records(n):
    """N records of (int4, text, timestamptz, numeric); every 10th value of a column is NULL."""
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    sec = datetime.timedelta(seconds=1)
    out = []
    for i in range(n):
        out.append(
            (
                None if i % 10 == 1 else i,
                None if i % 10 == 2 else f"row number {i}",
                None if i % 10 == 3 else base + i * sec,
                None if i % 10 == 4 else decimal.Decimal(i) / 100,
            )
        )
    return out


COLUMNS7 = "a int4, b int8, c text, d float8, e bool, f timestamptz, g numeric"


def _records7(n):
    """N records of seven columns of different types; every 10th value of each is NULL."""
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    sec = datetime.timedelta(seconds=1)
    return [
        tuple(
            None if i % 10 == k else v
            for k, v in enumerate(
                (
                    i,
                    i * 1000003,
                    f"row number {i}",
                    i * 1.5,
                    i % 2 == 0,
                    base + i * sec,
                    decimal.Decimal(i) / 100,
                )
            )
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- worker side


def _server_ns(pid):
    """The backend's CPU time so far, in ns (schedstat: finer than /proc/<pid>/stat's ticks)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def _best_of(iterations, run, rows, pid=None):
    """Run ``run()`` ``iterations`` times: the best throughput in rows/s, the least client
    CPU time per row (ns) it took, which the server's share does not blur, and the median
    server CPU time per row (ns) of the backend ``pid``."""
    best = 0.0
    cpu = float("inf")
    server = []
    for _ in range(iterations):
        s = _server_ns(pid) if pid else 0
        t, c = time.perf_counter(), time.process_time()
        await run()
        best = max(best, rows / (time.perf_counter() - t))
        cpu = min(cpu, (time.process_time() - c) / rows * 1e9)
        if pid:
            server.append((_server_ns(pid) - s) / rows)
    out = {"value": best, "cpu_ns_per_row": cpu}
    if server:
        out["server_ns_per_row"] = statistics.median(server)
    return out


async def _cell(driver, cell, dsn, rows, iterations):
    con = await driver.connect(dsn)
    pid = await con.fetchval("SELECT pg_backend_pid()")
    table = f"copy_bench_t{os.getpid()}"
    try:
        if cell in ("records_narrow", "records_wide"):
            if cell == "records_narrow":
                await con.execute(f"CREATE TABLE {table} (a int4)")
                records = [(i,) for i in range(rows)]
            else:
                await con.execute(f"CREATE TABLE {table} ({WIDE5})")
                base = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
                sec = datetime.timedelta(seconds=1)
                records = [
                    (i, i * 1000003, f"row number {i}", base + i * sec, i * 0.5)
                    for i in range(rows)
                ]

            async def run():
                await con.execute(f"TRUNCATE {table}")
                await con.copy_records_to_table(table, records=records)

            return await _best_of(iterations, run, rows, pid)
        if cell == "records":
            await con.execute(f"CREATE TEMP TABLE bench_rec ({COLUMNS})")
            records = _records(rows)

            async def run():
                await con.execute("TRUNCATE bench_rec")
                await con.copy_records_to_table("bench_rec", records=records)

            return await _best_of(iterations, run, rows, pid)
        if cell == "records7":
            await con.execute(f"CREATE TEMP TABLE bench_rec7 ({COLUMNS7})")
            records = _records7(rows)

            async def run():
                await con.execute("TRUNCATE bench_rec7")
                await con.copy_records_to_table("bench_rec7", records=records)

            return await _best_of(iterations, run, rows, pid)
        if cell == "query_to_file":
            import tempfile

            path = os.path.join(tempfile.mkdtemp(), "out.copy")

            async def run():
                await con.copy_from_query(f"SELECT * FROM {SOURCE_TABLE}", output=path)

            try:
                return await _best_of(iterations, run, rows, pid)
            finally:
                os.unlink(path)
        if cell == "cursor":

            async def run():
                n = 0
                async with con.transaction():
                    async for _ in con.cursor(f"SELECT * FROM {SOURCE_TABLE}"):
                        n += 1
                assert n == rows

            return await _best_of(iterations, run, rows, pid)
        if cell == "out_bytesio":

            async def run():
                buf = io.BytesIO()
                await con.copy_from_table(SOURCE_TABLE, output=buf)

            return await _best_of(iterations, run, rows, pid)
        if cell == "out_async":
            total = 0

            async def sink(chunk):
                nonlocal total
                total += len(chunk)

            async def run():
                await con.copy_from_table(SOURCE_TABLE, output=sink)

            return await _best_of(iterations, run, rows, pid)
        if cell == "in_file":
            # the source bytes are made by the server (the same for both drivers), untimed
            buf = io.BytesIO()
            await con.copy_from_table(SOURCE_TABLE, output=buf)
            data = buf.getvalue()
            await con.execute(f"CREATE TEMP TABLE bench_in ({COLUMNS})")

            async def run():
                await con.execute("TRUNCATE bench_in")
                await con.copy_to_table("bench_in", source=io.BytesIO(data))

            return await _best_of(iterations, run, rows, pid)
        raise SystemExit(f"unknown cell {cell}")
    finally:
        await con.execute(f"DROP TABLE IF EXISTS {table}")
        await con.close()


def _worker(driver_name, loop_name, cell, dsn, rows, iterations):
    if driver_name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    loop = new_loop(loop_name)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        result = loop.run_until_complete(_cell(driver, cell, dsn, rows, iterations))
    finally:
        loop.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(rss_kib=peak, rss_growth_kib=peak - base_rss)
    print(json.dumps(result))


async def _prepare_source(dsn, rows):
    """The table the COPY OUT cells read: N rows like ``_records`` makes, NULLs included."""
    import asyncpg

    con = await asyncpg.connect(dsn)
    try:
        await con.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")
        await con.execute(f"CREATE UNLOGGED TABLE {SOURCE_TABLE} ({COLUMNS})")
        await con.execute(
            f"INSERT INTO {SOURCE_TABLE} SELECT "
            "CASE WHEN g % 10 = 1 THEN NULL ELSE g END, "
            "CASE WHEN g % 10 = 2 THEN NULL ELSE 'row number ' || g END, "
            "CASE WHEN g % 10 = 3 THEN NULL "
            "ELSE '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second' END, "
            "CASE WHEN g % 10 = 4 THEN NULL ELSE g / 100.0 END "
            f"FROM generate_series(0, {rows - 1}) g"
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
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument(
        "--loops",
        default=None,
        help="comma list (asyncio, uvloop, asyncpg_rs); default: asyncio,uvloop",
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--iterations",
        type=int,
        default=2,
        help="timed runs per worker; the worker reports its best",
    )
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        driver, loop, cell, dsn, rows, iterations = args.worker
        _worker(driver, loop, cell, dsn, int(rows), int(iterations))
        return

    with server_dsn(args.dsn) as dsn:
        _run(args, dsn)


def _run(args, dsn):
    try:
        cells = [c for c in args.cells.split(",") if c]
        for c in cells:
            if c not in CELLS:
                raise SystemExit(f"unknown cell {c}; known: {', '.join(CELLS)}")
        loops = args.loops.split(",") if args.loops else driver_loops()
        asyncio.run(_prepare_source(dsn, args.rows))
        results = interleaved(
            args.repeat,
            cells,
            loops,
            lambda driver, loop, cell: run_worker(
                __file__, (driver, loop, cell, dsn, args.rows, args.iterations)
            ),
        )
        _report(results, cells, loops, args.rows)
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


def _num(v):
    return f"{v:12.0f}" if v else f"{'error':>12}"


def _mib(kib):
    return f"{kib / 1024:8.0f}M" if kib else "        -"


def _report(results, cells, loops, rows):
    print()
    print(
        f"{rows} rows per operation; throughput in rows/s and client CPU in ns per row, "
        "medians of the repetitions"
    )
    print(
        f"{'cell':32} {'loop':10} {'asyncpg':>12} {'asyncpg_rs':>12} {'ratio':>7}"
        f" {'CPU apg':>8} {'CPU rs':>8} {'ratio':>6} {'srv apg':>8} {'srv rs':>8} {'ratio':>6}"
        f" {'RSS apg':>9} {'RSS rs':>9}"
    )
    ratios = []
    for cell in cells:
        desc = CELLS[cell]
        for loop in loops:
            a = results.get((cell, loop, "asyncpg"), [])
            r = results.get((cell, loop, "asyncpg_rs"), [])
            av, rv = _median(a, "value"), _median(r, "value")
            ar, rr = _median(a, "rss_kib"), _median(r, "rss_kib")
            ac, rc = _median(a, "cpu_ns_per_row"), _median(r, "cpu_ns_per_row")
            sa, sr = _median(a, "server_ns_per_row"), _median(r, "server_ns_per_row")
            sratio = sr / sa if sa and sr else None
            ratio = rv / av if av and rv else None
            cratio = rc / ac if ac and rc else None
            if ratio:
                ratios.append(ratio)
            print(
                f"{desc:32} {loop:10} {_num(av)} {_num(rv)} "
                f"{(f'{ratio:7.2f}' if ratio else '      -')} "
                f"{(f'{ac:8.0f}' if ac else '       -')} {(f'{rc:8.0f}' if rc else '       -')} "
                f"{(f'{cratio:6.2f}' if cratio else '     -')} "
                f"{(f'{sa:8.0f}' if sa else '       -')} {(f'{sr:8.0f}' if sr else '       -')} "
                f"{(f'{sratio:6.2f}' if sratio else '     -')} {_mib(ar)} {_mib(rr)}"
            )
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(
            f"\ngeometric mean of the throughput ratios: {geo:.2f} (min {min(ratios):.2f}); "
            "above 1 is faster. CPU ratio below 1: asyncpg_rs uses less client CPU; "
            "srv: the server's CPU ns per row."
        )


if __name__ == "__main__":
    main()
