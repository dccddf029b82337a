"""What the benchmarks share: the loops to compare, worker processes, the server to use.

Each benchmark runs every measured cell in a fresh worker process (``python bench.py
--worker ...``) that prints one JSON line; ``run_worker`` starts it and reads that line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def new_loop(name):
    """A new event loop of the named kind: asyncio, uvloop, rloop or asyncpg_rs."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    if name == "asyncpg_rs":
        import asyncpg_rs

        return asyncpg_rs.new_event_loop()
    if name == "asyncio":
        return asyncio.new_event_loop()
    # a misspelt name must not quietly measure the stdlib loop under another label
    raise ValueError(f"unknown loop {name!r}: asyncio, uvloop, rloop or asyncpg_rs")


def driver_loops():
    """The loops a driver benchmark runs on: the stdlib one, uvloop, and ours."""
    loops = ["asyncio"]
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        loops.append("uvloop")
    with contextlib.suppress(ImportError):
        import asyncpg_rs

        # the driver needs the loop's transports (create_connection), not only its core
        if hasattr(asyncpg_rs, "Loop") and (
            asyncpg_rs.Loop.create_connection is not asyncio.AbstractEventLoop.create_connection
        ):
            loops.append("asyncpg_rs")
    return loops


def run_worker(script, args, timeout=900):
    """Run ``script --worker *args`` in a fresh interpreter; its last stdout line as JSON,
    or ``{"error": ...}`` when it failed."""
    cmd = [sys.executable, script, "--worker", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def server_dsn(dsn=None):
    """The server to measure against: ``dsn``, ``$ASYNCPG_RS_BENCH_DSN``, or a throwaway
    cluster from tools/pgcluster.py, stopped afterwards."""
    dsn = dsn or os.environ.get("ASYNCPG_RS_BENCH_DSN")
    if dsn:
        yield dsn
        return
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import pgcluster  # the project's throwaway-cluster manager

    cluster = pgcluster.Cluster.start()
    try:
        yield cluster.dsn()
    finally:
        cluster.stop()


def interleaved(repeat, cells, loops, measure, width=16, drivers=("asyncpg", "asyncpg_rs")):
    """``measure(driver, loop, cell)`` for every cell, loop and driver, ``repeat`` times, the
    drivers taking turns to go first so that drift hurts all alike; returns
    ``{(cell, loop, driver): [result, ...]}`` and logs each result to stderr."""
    results = {}
    for rep in range(repeat):
        for cell in cells:
            for loop in loops:
                k = rep % len(drivers)
                order = list(drivers[k:]) + list(drivers[:k])
                for driver in order:
                    r = measure(driver, loop, cell)
                    results.setdefault((cell, loop, driver), []).append(r)
                    print(
                        f"  rep {rep + 1} {cell:{width}} {loop:10} {driver:10} {r}", file=sys.stderr
                    )
    return results


def cpu_seconds(pid):
    """(user, system) CPU seconds a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@contextlib.contextmanager
def server_process(script, *args):
    """Run ``script --serve *args`` (a server that prints its port, then serves until its
    stdin closes); yields ``(process, port)`` and ends it afterwards."""
    server = subprocess.Popen(
        [sys.executable, script, "--serve", *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield server, int(server.stdout.readline())
    finally:
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
