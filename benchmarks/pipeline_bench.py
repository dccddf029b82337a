"""Pipelining: a "request" of 20 independent ``fetchrow`` by primary key on one connection.

asyncpg_rs pipelined (``async with con.pipeline()``, the 20 statements sent before the first
reply is read) against asyncpg sequential (20 awaits, on uvloop), side by side in one run,
interleaved and repeated; prints the medians of requests per second and the ratios. Twice:
with the server on the same machine (loopback), and behind an added round-trip latency
(default 1 ms: 0.5 ms each way) made by a TCP relay in its own process, which delays every
chunk in each direction by half the round trip (threads and ``time.sleep``, whose precision
is tens of microseconds; an event loop's timers round to whole milliseconds). asyncpg_rs
sequential is measured too, for reference, and the pipeline with one Sync for the 20
statements (``atomic=True``) besides the default Sync per statement.

    python benchmarks/pipeline_bench.py [--repeat 3] [--duration 2] [--latency-ms 1]
        [--sslmode disable]

Both drivers connect with the same ``sslmode`` (default ``disable``: plain TCP, as an
application and its database on one private network usually talk; the throwaway cluster
offers TLS, so ``prefer`` measures TLS).

It starts its own throwaway cluster (or uses $ASYNCPG_RS_BENCH_DSN). A benchmark, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import socket
import statistics
import sys
import threading
import time
import urllib.parse

from _harness import new_loop, run_worker, server_dsn, server_process

LOOKUPS = 20
ROWS = 10_000
SQL = "SELECT id, name, score FROM pipeline_bench WHERE id = $1"
# (label, driver, loop, mode)
CONTENDERS = [
    ("asyncpg sequential, uvloop", "asyncpg", "uvloop", "seq"),
    ("asyncpg_rs sequential, our loop", "asyncpg_rs", "asyncpg_rs", "seq"),
    ("asyncpg_rs pipelined, uvloop", "asyncpg_rs", "uvloop", "pipe"),
    ("asyncpg_rs pipelined, our loop", "asyncpg_rs", "asyncpg_rs", "pipe"),
    # one Sync for the 20 (one implicit transaction): what read-only lookups can choose
    ("asyncpg_rs pipelined atomic, our loop", "asyncpg_rs", "asyncpg_rs", "atomic"),
]
BASELINE = CONTENDERS[0][0]


# ---------------------------------------------------------------- the latency relay


def _pump(src, dst, delay):
    """Forward what ``src`` receives to ``dst``, each chunk ``delay`` seconds after it
    arrived, in order (a reader thread queues, a writer thread waits out each deadline)."""
    queue: list = []
    cond = threading.Condition()
    seq = 0

    def writer():
        while True:
            with cond:
                while not queue:
                    cond.wait()
                due, _, data = heapq.heappop(queue)
            left = due - time.perf_counter()
            if left > 0:
                time.sleep(left)
            if data is None:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    threading.Thread(target=writer, daemon=True).start()
    while True:
        try:
            data = src.recv(262144)
        except OSError:
            data = b""
        with cond:
            seq += 1
            heapq.heappush(queue, (time.perf_counter() + delay, seq, data or None))
            cond.notify()
        if not data:
            return


def _serve_relay(target_host, target_port, one_way_ms):
    delay = float(one_way_ms) / 1000.0
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def handle(client):
        upstream = socket.create_connection((target_host, int(target_port)))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, upstream, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, delay), daemon=True).start()

    def accept():
        while True:
            client, _ = listener.accept()
            handle(client)

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()  # serve until the benchmark closes our stdin


# ---------------------------------------------------------------- the measured work


async def _run(driver_name, mode, dsn, duration):
    if driver_name == "asyncpg":
        import asyncpg as driver
    else:
        import asyncpg_rs as driver
    con = await driver.connect(dsn)
    rng = random.Random(1)

    async def request():
        ids = [rng.randrange(ROWS) for _ in range(LOOKUPS)]
        if mode == "seq":
            rows = [await con.fetchrow(SQL, i) for i in ids]
        else:
            async with con.pipeline(atomic=mode == "atomic") as p:
                pending = [p.fetchrow(SQL, i) for i in ids]
            rows = [await r for r in pending]
        assert [r["id"] for r in rows] == ids

    for _ in range(20):  # warm-up: the statement cache, the connection's buffers
        await request()
    count = 0
    started = time.perf_counter()
    stop = started + duration
    while time.perf_counter() < stop:
        await request()
        count += 1
    elapsed = time.perf_counter() - started
    await con.close()
    return {"rps": count / elapsed}


def _worker(driver, loop_name, mode, dsn, duration):
    loop = new_loop(loop_name)
    try:
        print(json.dumps(loop.run_until_complete(_run(driver, mode, dsn, float(duration)))))
    finally:
        loop.close()


async def _setup(dsn):
    import asyncpg_rs

    con = await asyncpg_rs.connect(dsn)
    await con.execute(
        "DROP TABLE IF EXISTS pipeline_bench; "
        "CREATE TABLE pipeline_bench (id int4 PRIMARY KEY, name text, score float8)"
    )
    await con.executemany(
        "INSERT INTO pipeline_bench VALUES ($1, $2, $3)",
        [(i, f"name {i}", i / 7) for i in range(ROWS)],
    )
    await con.execute("ANALYZE pipeline_bench")
    await con.close()


def _target(dsn, port, sslmode):
    """``dsn`` with ``sslmode`` and, with ``port``, pointed at 127.0.0.1:``port``."""
    u = urllib.parse.urlparse(dsn)
    if port is not None:
        netloc = u.netloc.rsplit("@", 1)
        hostport = f"127.0.0.1:{port}"
        u = u._replace(netloc=f"{netloc[0]}@{hostport}" if len(netloc) == 2 else hostport)
    query = urllib.parse.parse_qsl(u.query)
    query = [(k, v) for k, v in query if k != "sslmode"] + [("sslmode", sslmode)]
    return urllib.parse.urlunparse(u._replace(query=urllib.parse.urlencode(query)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--latency-ms", type=float, default=1.0, help="added round trip")
    ap.add_argument("--sslmode", default="disable", help="both drivers' sslmode")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    if args.serve:
        _serve_relay(*args.serve)
        return
    one_way = args.latency_ms / 2
    results: dict = {}
    with server_dsn() as dsn:
        asyncio.run(_setup(dsn))
        u = urllib.parse.urlparse(dsn)
        host, port = u.hostname or "127.0.0.1", u.port or 5432
        with server_process(__file__, host, port, one_way) as (_, relay_port):
            targets = [
                ("loopback", _target(dsn, None, args.sslmode)),
                (f"+{args.latency_ms:g} ms RTT", _target(dsn, relay_port, args.sslmode)),
            ]
            for rep in range(args.repeat):
                for net, target in targets:
                    order = CONTENDERS if rep % 2 == 0 else CONTENDERS[::-1]
                    for label, driver, loop, mode in order:
                        r = run_worker(__file__, (driver, loop, mode, target, args.duration))
                        if "error" in r:
                            print(f"  {net} {label}: {r['error']}", file=sys.stderr)
                            continue
                        results.setdefault((net, label), []).append(r["rps"])
                        print(
                            f"  rep {rep + 1} {net:14} {label:38} {r['rps']:8.1f} req/s",
                            file=sys.stderr,
                        )
    print(
        f"\n{LOOKUPS} fetchrow by primary key per request, one connection; medians of "
        f"{args.repeat} interleaved runs of {args.duration:g} s each. Added latency: "
        f"{one_way:g} ms each way ({args.latency_ms:g} ms round trip) through a relay "
        f"process; loopback: direct. sslmode={args.sslmode}."
    )
    print(f"{'network':14} {'driver':38} {'req/s':>9} {'lookups/s':>10} {'vs asyncpg':>10}")
    for net, _ in targets:
        base = results.get((net, BASELINE))
        base_m = statistics.median(base) if base else None
        for label, *_ in CONTENDERS:
            got = results.get((net, label))
            if not got:
                continue
            m = statistics.median(got)
            ratio = f"{m / base_m:9.2f}x" if base_m else "-"
            print(f"{net:14} {label:38} {m:9.1f} {m * LOOKUPS:10.0f} {ratio:>10}")


if __name__ == "__main__":
    main()
