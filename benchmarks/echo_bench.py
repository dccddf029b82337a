"""Echo server benchmark: asyncpg_rs's loop against uvloop, the stdlib loop and rloop.

For each loop and server style (asyncio streams, a Protocol, sock_recv + sock_sendall) an echo
server runs in its own process; a separate client process (uvloop, fixed for every run) keeps
C connections busy with request/response round trips of 1 KiB and 64 KiB for a few seconds.
Reported: requests/s and the server's CPU time per request (from /proc), medians of
interleaved repetitions, and asyncpg_rs's ratios (> 1: better). The CPU time is also split
into user time (the loop, the protocol, Python) and system time (the kernel's TCP work,
which no loop can avoid): only the first is the loop's to win.

    python benchmarks/echo_bench.py [--repeat 3] [--duration 3] [--conns 10]

A benchmark, not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

from _harness import new_loop

MODES = ("streams", "protocol", "sock")
SIZES = (1024, 65536)


# ---------------------------------------------------------------- server


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def stream_handler(reader, writer):
    while True:
        data = await reader.read(262144)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def sock_handler(loop, conn):
    try:
        while True:
            data = await loop.sock_recv(conn, 262144)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    finally:
        conn.close()


async def serve(mode):
    loop = asyncio.get_running_loop()
    if mode == "protocol":
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    elif mode == "streams":
        server = await asyncio.start_server(stream_handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    else:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def accept_loop():
            while True:
                conn, _ = await loop.sock_accept(listener)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                loop.create_task(sock_handler(loop, conn))

        loop.create_task(accept_loop())
    print(port, flush=True)
    # run until stdin closes (the parent ends us)
    await loop.run_in_executor(None, sys.stdin.read)


# ---------------------------------------------------------------- client


async def client(port, size, conns, duration):
    payload = b"x" * size
    stop = time.perf_counter() + duration
    counts = []

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        while time.perf_counter() < stop:
            writer.write(payload)
            await reader.readexactly(size)
            n += 1
        writer.close()
        counts.append(n)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    return sum(counts) / (time.perf_counter() - started)


def cpu_seconds(pid):
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def one_run(loop_name, mode, size, conns, duration):
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", loop_name, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(server.stdout.readline())
        cpu0 = cpu_seconds(server.pid)
        out = subprocess.run(
            [sys.executable, __file__, "--client", str(port), str(size), str(conns), str(duration)],
            capture_output=True,
            text=True,
            check=True,
        )
        cpu1 = cpu_seconds(server.pid)
        rps = float(out.stdout.strip())
        total = rps * duration
        user = (cpu1[0] - cpu0[0]) / total * 1e6
        system = (cpu1[1] - cpu0[1]) / total * 1e6
        return rps, user + system, user
    finally:
        server.stdin.close()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        loop = new_loop(args.serve[0])
        loop.run_until_complete(serve(args.serve[1]))
        return
    if args.client:
        import uvloop

        port, size, conns, duration = args.client
        rps = uvloop.run(client(int(port), int(size), int(conns), float(duration)))
        print(rps)
        return
    loops = ["asyncio", "uvloop"]
    try:
        import rloop  # noqa: F401

        loops.append("rloop")
    except ImportError:
        pass
    loops.append("asyncpg_rs")
    results = {}
    for rep in range(args.repeat):
        order = loops if rep % 2 == 0 else list(reversed(loops))
        for mode in MODES:
            for size in SIZES:
                for loop in order:
                    try:
                        r = one_run(loop, mode, size, args.conns, args.duration)
                    except Exception as exc:  # a loop that cannot serve this mode
                        print(f"{loop} {mode} {size}: {exc}", file=sys.stderr)
                        continue
                    results.setdefault((loop, mode, size), []).append(r)
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    print(f"echo, {args.conns} connections, median of {args.repeat} ({sys.version.split()[0]})")
    print(f"{'mode':18}" + "".join(f"{lp + ' req/s':>18}{'µs CPU':>8}" for lp in loops))
    summary = []
    for mode in MODES:
        for size in SIZES:
            row = f"{mode + ' ' + str(size // 1024) + 'KiB':18}"
            med = {}
            for lp in loops:
                rs = results.get((lp, mode, size), [])
                if rs:
                    med[lp] = tuple(statistics.median(r[i] for r in rs) for i in range(3))
                    row += f"{med[lp][0]:>18,.0f}{med[lp][1]:>8.1f}"
                else:
                    row += f"{'n/a':>18}{'':>8}"
            print(row)
            if "asyncpg_rs" in med and "uvloop" in med:
                summary.append(
                    (
                        mode,
                        size,
                        med["asyncpg_rs"][0] / med["uvloop"][0],
                        med["asyncpg_rs"][1] / med["uvloop"][1],
                        med["asyncpg_rs"][2],
                        med["uvloop"][2],
                    )
                )
    print(
        "\nasyncpg_rs vs uvloop: throughput ratio, server CPU per request ratio (< 1 is better),"
        " server user-space µs per request (asyncpg_rs / uvloop)"
    )
    for mode, size, tput, cpu, user_rs, user_uv in summary:
        print(
            f"  {mode + ' ' + str(size // 1024) + 'KiB':18} {tput:6.2f}x  {cpu:6.2f}"
            f"  {user_rs:5.2f} / {user_uv:5.2f}"
        )


if __name__ == "__main__":
    main()
