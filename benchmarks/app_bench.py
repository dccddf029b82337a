"""A whole application on each loop: aiohttp serving a small page to wrk.

An aiohttp server (one process, the loop under test) answers GET / with a short text page;
wrk (one thread, keep-alive connections) loads it for a few seconds. Reported: requests/s and
the server's CPU time per request, medians of interleaved repetitions, and asyncpg_rs's ratios
to uvloop and to the stdlib loop. Here the server is the bottleneck (wrk costs little), and
most of its CPU is aiohttp's Python code, which is the same on every loop: the loop's share is
what can differ.

    python benchmarks/app_bench.py [--repeat 5] [--duration 4] [--conns 50]

Needs wrk (Debian package ``wrk``) and aiohttp. A benchmark, not a test: it asserts nothing
and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import statistics
import subprocess
import sys

from _harness import cpu_seconds, new_loop, server_process

LOOPS = ("asyncio", "uvloop", "asyncpg_rs")


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


def one_run(wrk, loop_name, conns, duration):
    with server_process(__file__, loop_name) as (server, port):
        cpu0 = sum(cpu_seconds(server.pid))
        out = subprocess.run(
            [wrk, "-t1", f"-c{conns}", f"-d{duration}s", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu1 = sum(cpu_seconds(server.pid))
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"wrk printed no rate: {out!r}")
    rps = float(found.group(1))
    return rps, (cpu1 - cpu0) / (rps * duration) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        new_loop(args.serve).run_until_complete(serve())
        return
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
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


if __name__ == "__main__":
    main()
