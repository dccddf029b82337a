"""Echo server benchmark: asyncpg_rs's loop against uvloop, the stdlib loop and rloop.

For each loop and server style (asyncio streams, a Protocol, sock_recv + sock_sendall, and a
Protocol over TLS) an echo server runs in its own process; separate client processes keep C
connections busy with request/response round trips of 1 KiB and 64 KiB for a few seconds.
Reported: requests/s and the server's CPU time per request (from /proc), medians of
interleaved repetitions, and asyncpg_rs's ratios (> 1: better). The CPU time is also split
into user time (the loop, the protocol, Python) and system time (the kernel's TCP work,
which no loop can avoid): only the first is the loop's to win.

    python benchmarks/echo_bench.py [--repeat 3] [--duration 3] [--conns 10] [--clients 1]
        [--client-loop asyncpg_rs|uvloop|asyncio]

The clients are the load generator, the same for every server measured: a bare
``asyncio.Protocol`` on the loop ``--client-loop`` names, by default ours, because a server
benchmark needs the server, not the client, to run out of CPU first. Measured against one
uvloop TLS server at 1 KiB, a client process spent 14 µs of CPU per round trip on our loop
and 38 to 45 µs on uvloop, more than the server it loaded: with a uvloop client the client's
core saturated first and the throughput measured the client. At 64 KiB both clients cost
about the same (OpenSSL's work).

With ``--clients 2`` the clients and the server share the machine's cores, and a server that
needs less CPU per request leaves more of them to the clients: the throughput then reflects
the server's cost.

A benchmark, not a test: it asserts nothing and prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time

from _harness import cpu_seconds, new_loop, server_process

MODES = ("streams", "protocol", "sock", "tls")
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


def make_certificate(directory):
    """A throwaway self-signed certificate for the TLS mode: (certfile, keyfile)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [shutil.which("openssl") or "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"]
        + ["-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    return cert, key


async def serve(mode, certdir=None):
    loop = asyncio.get_running_loop()
    if mode in ("protocol", "tls"):
        context = None
        if mode == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*make_certificate(certdir))
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, ssl=context)
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


class EchoClient(asyncio.Protocol):
    """One connection's round trips: send the payload, wait for all of it back, repeat."""

    def __init__(self, payload, stop, done):
        self.payload, self.stop, self.done = payload, stop, done
        self.expected = len(payload)
        self.received = 0
        self.count = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.payload)

    def data_received(self, data):
        self.received += len(data)
        if self.received < self.expected:
            return
        self.received -= self.expected
        self.count += 1
        if time.perf_counter() < self.stop:
            self.transport.write(self.payload)
        else:
            self.transport.close()

    def connection_lost(self, exc):
        if self.done.done():
            return
        if exc is None and time.perf_counter() < self.stop:
            exc = ConnectionError("the echo server closed the connection before the run ended")
        if exc is not None:
            # a run that lost a connection is not a measurement: the client fails loudly
            self.done.set_exception(exc)
        else:
            self.done.set_result(self.count)


async def client(port, size, conns, duration, tls, grace=30.0):
    """``conns`` connections doing round trips of ``size`` bytes for ``duration`` seconds:
    (round trips completed, seconds taken). A server that stops answering fails the run
    with ``TimeoutError`` ``grace`` seconds after the end, instead of hanging it."""
    loop = asyncio.get_running_loop()
    payload = b"x" * size
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    async def one():
        done = loop.create_future()
        await loop.create_connection(
            lambda: EchoClient(payload, stop, done), "127.0.0.1", port, ssl=context
        )
        return await done

    # the window starts once the client is set up, so every run lasts at least ``duration``
    started = time.perf_counter()
    stop = started + duration
    try:
        async with asyncio.timeout(duration + grace):
            counts = await asyncio.gather(*(one() for _ in range(conns)))
    except TimeoutError:
        raise TimeoutError(f"the echo server on port {port} stopped answering") from None
    return sum(counts), time.perf_counter() - started


def one_run(loop_name, mode, size, conns, duration, clients=1, client_loop="asyncpg_rs"):
    import tempfile

    with (
        tempfile.TemporaryDirectory() as certdir,
        server_process(__file__, loop_name, mode, certdir) as (server, port),
    ):
        cpu0 = cpu_seconds(server.pid)
        tls = "1" if mode == "tls" else "0"
        per_client = max(1, conns // clients)
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--client", str(port), str(size)]
                + [str(per_client), str(duration), tls, client_loop],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(clients)
        ]
        rps = 0.0
        client_busy = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"client failed ({proc.returncode})")
            client_rps, busy = out.split()
            rps += float(client_rps)
            client_busy.append(float(busy))
        cpu1 = cpu_seconds(server.pid)
        total = rps * duration
        user = (cpu1[0] - cpu0[0]) / total * 1e6
        system = (cpu1[1] - cpu0[1]) / total * 1e6
        # a client near 100% of a core is what limits the throughput, not the server
        return rps, user + system, user, max(client_busy)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--clients", type=int, default=1, help="client processes sharing --conns")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument(
        "--client-loop",
        default="asyncpg_rs",
        choices=("asyncpg_rs", "uvloop", "asyncio"),
        help="the loop every client process runs on (the same for every server measured)",
    )
    ap.add_argument("--client", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        loop = new_loop(args.serve[0])
        loop.run_until_complete(serve(args.serve[1], args.serve[2]))
        return
    if args.client:
        port, size, conns, duration, tls, client_loop = args.client
        cpu0 = time.process_time()
        loop = new_loop(client_loop)
        try:
            count, took = loop.run_until_complete(
                client(int(port), int(size), int(conns), float(duration), tls == "1")
            )
        finally:
            loop.close()
        rps = count / took
        # the share of one core the client used while it ran
        print(rps, (time.process_time() - cpu0) / float(duration))
        return
    loops = ["asyncio", "uvloop"]
    try:
        import rloop  # noqa: F401

        loops.append("rloop")
    except ImportError:
        pass
    loops.append("asyncpg_rs")
    modes = [m for m in args.modes.split(",") if m in MODES]
    results = {}
    for rep in range(args.repeat):
        order = loops if rep % 2 == 0 else list(reversed(loops))
        for mode in modes:
            for size in SIZES:
                for loop in order:
                    try:
                        r = one_run(
                            loop,
                            mode,
                            size,
                            args.conns,
                            args.duration,
                            args.clients,
                            args.client_loop,
                        )
                    except Exception as exc:  # a loop that cannot serve this mode
                        print(f"{loop} {mode} {size}: {exc}", file=sys.stderr)
                        continue
                    results.setdefault((loop, mode, size), []).append(r)
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    print(
        f"echo, {args.conns} connections from {args.clients} client process(es)"
        f" on {args.client_loop},"
        f" median of {args.repeat} ({sys.version.split()[0]})"
    )
    print(f"{'mode':18}" + "".join(f"{lp + ' req/s':>18}{'µs CPU':>8}" for lp in loops))
    summary = []
    for mode in modes:
        for size in SIZES:
            row = f"{mode + ' ' + str(size // 1024) + 'KiB':18}"
            med = {}
            for lp in loops:
                rs = results.get((lp, mode, size), [])
                if rs:
                    med[lp] = tuple(statistics.median(r[i] for r in rs) for i in range(4))
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
                        med["asyncpg_rs"][3],
                        med["uvloop"][3],
                    )
                )
    print(
        "\nasyncpg_rs vs uvloop: throughput ratio, server CPU per request ratio (< 1 is better),"
        " server user-space µs per request (asyncpg_rs / uvloop), the busiest client's share"
        " of a core (asyncpg_rs / uvloop; near 1.0 the client, not the server, sets the"
        " throughput)"
    )
    for mode, size, tput, cpu, user_rs, user_uv, busy_rs, busy_uv in summary:
        print(
            f"  {mode + ' ' + str(size // 1024) + 'KiB':18} {tput:6.2f}x  {cpu:6.2f}"
            f"  {user_rs:5.2f} / {user_uv:5.2f}  {busy_rs:4.2f} / {busy_uv:4.2f}"
        )


if __name__ == "__main__":
    main()
