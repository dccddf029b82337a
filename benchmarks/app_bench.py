"""A whole application on each loop: aiohttp serving wrk, with and without the database.

Two benchmarks, both an aiohttp server in its own process (one per measured combination)
loaded by wrk (one thread, keep-alive connections); reported are requests/s and the server's
CPU time per request (``/proc/<pid>/stat`` utime+stime), medians of interleaved rounds.

Without ``--db``: GET / answers a short text page, on the stdlib loop, uvloop and ours. Here
the server is the bottleneck, most of its CPU is aiohttp's Python code (the same on every
loop), and the loop's share is what can differ.

With ``--db``: the four TechEmpower database tests over a throwaway PostgreSQL (the
project's tools/pgcluster.py, TLS on; or ``--dsn``), each request going through a pool:

    /db                   one random World row (of 10,000) by id, as JSON
    /queries?queries=20   20 random World rows, each its own query on one connection
    /fortunes             the 12 Fortune rows plus one added at request time, sorted by
                          message, HTML-escaped, rendered into an HTML table
    /updates?queries=20   20 random World rows read one by one, given new random numbers
                          and written back in one ``executemany`` (sorted by id, so
                          concurrent batches cannot deadlock), alike for both drivers

Combinations: asyncpg_rs on its own loop, asyncpg_rs on uvloop (informative), asyncpg on
uvloop, asyncpg on the stdlib loop; each over plain TCP (``sslmode=disable``) and TLS
(``sslmode=require``). The framework (aiohttp), the handlers, the pool size (``--pool``,
min = max, so every backend exists before the load starts and none is recycled) and wrk's
settings are the same everywhere: only the driver and the loop differ. One more, "asyncpg_rs,
pipelined" (``rs-pipelined``), is the same application using what asyncpg lacks: the 20 reads
of /queries and /updates in one pipeline (``db_app``); it runs only those two endpoints.
The defaults, a pool of 10 and 32 wrk connections, suit a 2-core machine: requests queue for
the pool, as in a pooled application under load, and ten backends are already more than the
cores.

Each round starts one server per combination (their order rotating from round to round,
plain and TLS alternating first), warms every pooled connection's statement cache, then runs
the endpoints (their order rotating too) for ``--duration`` seconds each. Besides the
server's own CPU per request, the CPU of its PostgreSQL backends per request is reported
(their pids come from ``pg_backend_pid()``), so a driver that made the server work harder
would show. Ratios are against asyncpg on uvloop: of the medians, and the range of the
same-round ratios, which shows how noisy the machine was.

    python benchmarks/app_bench.py [--repeat 5] [--duration 4] [--conns 50]
    python benchmarks/app_bench.py --db                    # 3 rounds of 2 s: about 4 minutes
    python benchmarks/app_bench.py --db --rounds 5 --duration 5 --tls plain \\
        --endpoints db,fortunes --combos rs-ours,apg-uvloop --json out.json

Needs wrk (Debian package ``wrk``; not needed by the test suite) and aiohttp; ``--db`` also
PostgreSQL's server binaries (as the tests do) and asyncpg. A benchmark, not a test: it
asserts nothing and prints numbers (tests/test_app_bench.py checks the endpoints' bodies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import urllib.parse

from _harness import cpu_seconds, new_loop, server_dsn, server_process

LOOPS = ("asyncio", "uvloop", "asyncpg_rs")

# ---------------------------------------------------------------- the hello page


async def serve():
    from aiohttp import web

    async def hello(request):
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(port, flush=True)
    # run until stdin closes (the parent ends us)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def run_wrk(wrk, conns, duration, url):
    """wrk's numbers for one run: (requests, requests/s, failures: non-2xx plus errors,
    wrk's own CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rate or not total:
        raise RuntimeError(f"wrk printed no rate: {out!r}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return int(total.group(1)), float(rate.group(1)), failed, wrk_cpu


def one_run(wrk, loop_name, conns, duration):
    with server_process(__file__, loop_name) as (server, port):
        cpu0 = sum(cpu_seconds(server.pid))
        requests, rps, _, _ = run_wrk(wrk, conns, duration, f"http://127.0.0.1:{port}/")
        cpu1 = sum(cpu_seconds(server.pid))
    return rps, (cpu1 - cpu0) / requests * 1e6


def hello_main(wrk, args):
    results = {}
    for rep in range(args.repeat):
        order = LOOPS if rep % 2 == 0 else tuple(reversed(LOOPS))
        for loop in order:
            results.setdefault(loop, []).append(one_run(wrk, loop, args.conns, args.duration))
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    med = {
        lp: tuple(statistics.median(r[i] for r in rs) for i in range(2))
        for lp, rs in results.items()
    }
    print(f"aiohttp hello, wrk {args.conns} connections, median of {args.repeat}")
    for lp in LOOPS:
        print(f"  {lp:12} {med[lp][0]:10,.0f} req/s  {med[lp][1]:6.1f} µs server CPU per request")
    ours = med["asyncpg_rs"]
    for other in ("uvloop", "asyncio"):
        print(
            f"asyncpg_rs vs {other}: throughput {ours[0] / med[other][0]:.2f}x,"
            f" server CPU per request {ours[1] / med[other][1]:.2f}"
        )


# ---------------------------------------------------------------- the database application

WORLD_ROWS = 10_000
# TechEmpower's Fortune table: the markup, the quotes and the non-ASCII line are there to
# prove the page is escaped and encoded
FORTUNES = (
    "fortune: No such file or directory",
    "A computer scientist is someone who fixes things that aren't broken.",
    "After enough decimal places, nobody gives a damn.",
    "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    "A computer program does what you tell it to do, not what you want it to do.",
    "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen",
    "Any program that runs right is obsolete.",
    "A list is only as strong as its weakest link. \u2014 Donald Knuth",
    "Feature: A bug with seniority.",
    "Computers make very fast, very accurate mistakes.",
    '<script>alert("This should not be displayed in a browser alert box.");</script>',
    "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af",
)
ADDED_FORTUNE = "Additional fortune added at request time."

WORLD_QUERY = "SELECT id, randomnumber FROM world WHERE id = $1"
FORTUNE_QUERY = "SELECT id, message FROM fortune"
UPDATE_QUERY = "UPDATE world SET randomnumber = $1 WHERE id = $2"

ENDPOINTS = {
    # name: (path wrk loads, what the table calls it)
    "db": ("/db", "single query"),
    "queries": ("/queries?queries=20", "20 queries"),
    "fortunes": ("/fortunes", "fortunes"),
    "updates": ("/updates?queries=20", "20 updates"),
}
COMBOS = {
    # name: (driver, loop, label, pipelined)
    "rs-ours": ("asyncpg_rs", "asyncpg_rs", "asyncpg_rs, its loop", False),
    "rs-pipelined": ("asyncpg_rs", "asyncpg_rs", "asyncpg_rs, pipelined", True),
    "rs-uvloop": ("asyncpg_rs", "uvloop", "asyncpg_rs, uvloop", False),
    "apg-uvloop": ("asyncpg", "uvloop", "asyncpg, uvloop", False),
    "apg-asyncio": ("asyncpg", "asyncio", "asyncpg, stdlib loop", False),
}
# The endpoints whose pipelined handlers differ: the others make one query per request,
# where a pipeline has nothing to batch, so the pipelined combination skips them.
PIPELINED_ENDPOINTS = ("queries", "updates")
BASELINE = "apg-uvloop"
TLS_MODES = {"plain": "disable", "tls": "require"}


async def create_schema(con):
    """World (10,000 rows of id, randomnumber) and Fortune (12 rows), made afresh."""
    await con.execute(
        "DROP TABLE IF EXISTS world, fortune;"
        "CREATE TABLE world (id integer PRIMARY KEY, randomnumber integer NOT NULL);"
        "CREATE TABLE fortune (id integer PRIMARY KEY, message varchar(2048) NOT NULL)"
    )
    await con.execute(
        "INSERT INTO world SELECT g, 1 + floor(random() * $1)::int FROM generate_series(1, $1) g",
        WORLD_ROWS,
    )
    await con.executemany("INSERT INTO fortune VALUES ($1, $2)", list(enumerate(FORTUNES, start=1)))
    await con.execute("ANALYZE world; ANALYZE fortune")


def _count(request):
    """The ``queries`` parameter as TechEmpower reads it: 1 to 500, 1 when not a number."""
    try:
        n = int(request.query.get("queries", "1"))
    except ValueError:
        return 1
    return min(max(n, 1), 500)


def _random_id():
    return random.randint(1, WORLD_ROWS)


def render_fortunes(rows):
    """The Fortunes page: ``rows`` of (id, message), sorted by message, every one escaped."""
    cells = "".join(
        f"<tr><td>{fid}</td><td>{html.escape(message)}</td></tr>" for fid, message in rows
    )
    return (
        "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
        f"<tr><th>id</th><th>message</th></tr>{cells}</table></body></html>"
    )


def db_app(pool, pipelined=False):
    """The aiohttp application of the four tests over ``pool`` (asyncpg's or ours).

    ``pipelined`` (asyncpg_rs only) is what an application moving to asyncpg_rs can do
    beyond asyncpg: the 20 reads of /queries and /updates go out together in one pipeline
    (``fetch_many_queries``, one Sync, read-only), still one statement per row as
    TechEmpower asks; the updates then follow in the same ``executemany`` as otherwise."""
    from aiohttp import web

    async def read_worlds(con, n):
        ids = [_random_id() for _ in range(n)]
        if pipelined:
            results = await con.fetch_many_queries([(WORLD_QUERY, (i,)) for i in ids], atomic=True)
            return [rows[0] for rows in results]
        return [await con.fetchrow(WORLD_QUERY, i) for i in ids]

    async def single(request):
        row = await pool.fetchrow(WORLD_QUERY, _random_id())
        return web.json_response({"id": row[0], "randomNumber": row[1]})

    async def queries(request):
        async with pool.acquire() as con:
            rows = await read_worlds(con, _count(request))
        return web.json_response([{"id": row[0], "randomNumber": row[1]} for row in rows])

    async def fortunes(request):
        rows = [(r[0], r[1]) for r in await pool.fetch(FORTUNE_QUERY)]
        rows.append((0, ADDED_FORTUNE))
        rows.sort(key=lambda r: r[1])
        return web.Response(text=render_fortunes(rows), content_type="text/html")

    async def updates(request):
        async with pool.acquire() as con:
            rows = await read_worlds(con, _count(request))
            worlds = [{"id": row[0], "randomNumber": _random_id()} for row in rows]
            await con.executemany(
                UPDATE_QUERY,
                sorted(((w["randomNumber"], w["id"]) for w in worlds), key=lambda a: a[1]),
            )
        return web.json_response(worlds)

    app = web.Application()
    app.router.add_get("/db", single)
    app.router.add_get("/queries", queries)
    app.router.add_get("/fortunes", fortunes)
    app.router.add_get("/updates", updates)
    return app


async def warm_pool(pool, size):
    """Every pooled connection prepares the four statements (held at once, so each is a
    different connection); returns their backends' pids."""

    async def one(con):
        await con.fetchrow(WORLD_QUERY, 1)
        await con.fetch(FORTUNE_QUERY)
        row = await con.fetchrow(WORLD_QUERY, 1)
        await con.executemany(UPDATE_QUERY, [(row[1], 1)])
        return await con.fetchval("SELECT pg_backend_pid()")

    cons = [await pool.acquire() for _ in range(size)]
    try:
        return list(await asyncio.gather(*(one(c) for c in cons)))
    finally:
        for c in cons:
            await pool.release(c)


def import_driver(name):
    if name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    return driver


async def serve_db(driver_name, dsn, pool_size, pipelined):
    from aiohttp import web

    driver = import_driver(driver_name)
    pool = await driver.create_pool(
        dsn, min_size=pool_size, max_size=pool_size, max_inactive_connection_lifetime=0
    )
    backends = await warm_pool(pool, pool_size)
    runner = web.AppRunner(db_app(pool, pipelined), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"port": port, "backends": backends}), flush=True)
    # run until stdin closes (the parent ends us)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    await pool.close()


@contextlib.contextmanager
def db_server(driver, loop, dsn, pool_size, pipelined):
    """One server process; yields (process, port, backend pids), or raises with its error."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-db", driver, loop, dsn, str(pool_size)]
        + (["--pipelined"] if pipelined else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        if not line:
            server.wait(10)
            err = server.stderr.read().strip().splitlines()
            raise RuntimeError(err[-1] if err else f"server exited {server.returncode}")
        started = json.loads(line)
        yield server, started["port"], started["backends"]
    finally:
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _cpu(pids):
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a backend that has gone adds nothing more
            total += sum(cpu_seconds(pid))
    return total


def measure_combo(wrk, args, combo, dsn, endpoints):
    """One server for ``combo``; every endpoint in ``endpoints`` measured on it in turn:
    ``{endpoint: {"rps", "cpu_us", "pg_us", "failed"} or {"error"}}``."""
    driver, loop, _, pipelined = COMBOS[combo]
    try:
        with db_server(driver, loop, dsn, args.pool, pipelined) as (server, port, backends):
            out = {}
            for ep in endpoints:
                url = f"http://127.0.0.1:{port}{ENDPOINTS[ep][0]}"
                cpu0, pg0 = sum(cpu_seconds(server.pid)), _cpu(backends)
                requests, rps, failed, wrk_cpu = run_wrk(wrk, args.conns, args.duration, url)
                cpu1, pg1 = sum(cpu_seconds(server.pid)), _cpu(backends)
                if requests == 0 or failed:
                    out[ep] = {"error": f"{failed} of {requests} requests failed"}
                    continue
                out[ep] = {
                    "rps": rps,
                    "cpu_us": (cpu1 - cpu0) / requests * 1e6,
                    "pg_us": (pg1 - pg0) / requests * 1e6,
                    "wrk_us": wrk_cpu / requests * 1e6,
                }
            return out
    except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError) as e:
        return {ep: {"error": str(e)} for ep in endpoints}


def _with_sslmode(dsn, sslmode):
    parts = urllib.parse.urlsplit(dsn)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "sslmode"]
    query.append(("sslmode", sslmode))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _rotated(items, n):
    items = list(items)
    n %= len(items) or 1
    return items[n:] + items[:n]


def db_main(wrk, args):
    endpoints = args.endpoints.split(",")
    combos = args.combos.split(",")
    tls_modes = args.tls.split(",")
    for name, known in ((endpoints, ENDPOINTS), (combos, COMBOS), (tls_modes, TLS_MODES)):
        unknown = set(name) - set(known)
        if unknown:
            raise SystemExit(f"unknown {sorted(unknown)}; choose from {sorted(known)}")
    results = {}  # (tls, endpoint, combo) -> [per-round dict]
    with server_dsn(args.dsn) as dsn:
        setup_loop = asyncio.new_event_loop()
        setup_loop.run_until_complete(_prepare_database(dsn))
        setup_loop.close()
        dsn = _with_database(dsn, "app_bench")
        for rnd in range(args.rounds):
            for tls in _rotated(tls_modes, rnd):
                tls_dsn = _with_sslmode(dsn, TLS_MODES[tls])
                for combo in _rotated(combos, rnd):
                    measured = _rotated(endpoints, rnd)
                    if COMBOS[combo][3]:
                        measured = [ep for ep in measured if ep in PIPELINED_ENDPOINTS]
                    if not measured:
                        continue
                    got = measure_combo(wrk, args, combo, tls_dsn, measured)
                    for ep, r in got.items():
                        results.setdefault((tls, ep, combo), []).append(r)
                        print(f"  round {rnd + 1} {tls:5} {ep:8} {combo:11} {r}", file=sys.stderr)
    report(results, args, endpoints, combos, tls_modes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"|".join(k): v for k, v in results.items()}, f, indent=1)


def _with_database(dsn, database):
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


async def _prepare_database(dsn):
    """A database of its own, so the benchmark's tables never meet anyone else's."""
    import asyncpg_rs

    con = await asyncpg_rs.connect(dsn)
    try:
        exists = await con.fetchval("SELECT 1 FROM pg_database WHERE datname = 'app_bench'")
        if not exists:
            await con.execute("CREATE DATABASE app_bench")
    finally:
        await con.close()
    con = await asyncpg_rs.connect(_with_database(dsn, "app_bench"))
    try:
        await create_schema(con)
    finally:
        await con.close()


def _median(rs, key):
    vals = [r[key] for r in rs if key in r]
    return statistics.median(vals) if vals else None


def _paired_ratios(results, tls, ep, combo):
    """The throughput ratio combo / baseline within each round that measured both."""
    ours = results.get((tls, ep, combo), [])
    base = results.get((tls, ep, BASELINE), [])
    return [a["rps"] / b["rps"] for a, b in zip(ours, base) if "rps" in a and "rps" in b]


def report(results, args, endpoints, combos, tls_modes):
    print(
        f"\naiohttp + a pool of {args.pool} under wrk ({args.conns} connections, 1 thread),"
        f" median of {args.rounds} rounds of {args.duration} s; ratios against asyncpg on uvloop"
    )
    header = (
        f"{'endpoint':13} {'combination':22} {'req/s':>8} {'ratio':>6} {'(rounds)':>12}"
        f" {'server µs/req':>14} {'ratio':>6} {'PG µs/req':>10} {'both':>6}"
        f" {'wrk µs/req':>10} {'ceiling':>7}"
    )
    for tls in tls_modes:
        print(f"\n{tls} (sslmode={TLS_MODES[tls]})")
        print(header)
        for ep in endpoints:
            base = results.get((tls, ep, BASELINE), [])
            base_rps, base_cpu = _median(base, "rps"), _median(base, "cpu_us")
            base_pg, base_wrk = _median(base, "pg_us"), _median(base, "wrk_us")
            for combo in combos:
                rs = results.get((tls, ep, combo), [])
                if not rs:
                    continue  # a pipelined combination on an endpoint of one query
                rps, cpu, pg, wrk_us = (
                    _median(rs, k) for k in ("rps", "cpu_us", "pg_us", "wrk_us")
                )
                label = COMBOS[combo][2]
                if rps is None:
                    errs = {r.get("error") for r in rs}
                    print(f"{ENDPOINTS[ep][1]:13} {label:22} error: {'; '.join(map(str, errs))}")
                    continue
                ratio = f"{rps / base_rps:5.2f}x" if base_rps else "     -"
                paired = _paired_ratios(results, tls, ep, combo)
                spread = f"{min(paired):.2f}-{max(paired):.2f}" if paired else "-"
                cpu_ratio = f"{cpu / base_cpu:6.2f}" if base_cpu else "     -"
                # server and backends together: on a machine that runs both, the CPU the
                # whole request costs bounds the throughput
                both = f"{(cpu + pg) / (base_cpu + base_pg):6.2f}" if base_cpu else "     -"
                # With every core busy, throughput is cores / CPU per request: the ratio
                # this combination could reach if its server cost nothing at all is the
                # baseline's whole CPU per request over this one's PostgreSQL plus wrk.
                ceiling = "     -"
                if base_cpu and base_wrk is not None and wrk_us is not None:
                    whole = base_cpu + base_pg + base_wrk
                    ceiling = f"{whole / (pg + wrk_us):6.2f}x"
                print(
                    f"{ENDPOINTS[ep][1]:13} {label:22} {rps:8,.0f} {ratio} {spread:>12}"
                    f" {cpu:14,.0f} {cpu_ratio} {pg:10,.0f} {both} {wrk_us or 0:10,.0f}"
                    f" {ceiling}"
                )


# ---------------------------------------------------------------- command line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", action="store_true", help="the four database tests")
    ap.add_argument("--repeat", type=int, default=5, help="hello page: repetitions")
    ap.add_argument("--rounds", type=int, default=3, help="--db: interleaved rounds")
    ap.add_argument("--duration", type=int, default=None, help="seconds per wrk run (4; --db 2)")
    ap.add_argument("--conns", type=int, default=None, help="wrk connections (50; --db 32)")
    ap.add_argument("--pool", type=int, default=10, help="--db: pool size per server process")
    ap.add_argument("--dsn", help="--db: a server to use instead of a throwaway cluster")
    ap.add_argument("--endpoints", default=",".join(ENDPOINTS))
    ap.add_argument("--combos", default=",".join(COMBOS))
    ap.add_argument("--tls", default=",".join(TLS_MODES))
    ap.add_argument("--json", help="--db: also write the raw results here")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--serve-db", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--pipelined", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        new_loop(args.serve).run_until_complete(serve())
        return
    if args.serve_db:
        driver, loop, dsn, pool_size = args.serve_db
        new_loop(loop).run_until_complete(serve_db(driver, dsn, int(pool_size), args.pipelined))
        return
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    if args.db:
        args.duration = args.duration or 2
        args.conns = args.conns or 32
        db_main(wrk, args)
    else:
        args.duration = args.duration or 4
        args.conns = args.conns or 50
        hello_main(wrk, args)


if __name__ == "__main__":
    main()
