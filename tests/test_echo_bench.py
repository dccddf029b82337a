"""The load generator of benchmarks/echo_bench.py counts what it claims (so its numbers
measure the servers): every round trip it counts is one whole payload echoed by the
server, over TCP and TLS, and a server that drops connections fails the run instead of
shortening it. On the stdlib loop and on ours."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import echo_bench  # noqa: E402

pytestmark = pytest.mark.loops("asyncio", "asyncpg_rs")


@pytest.fixture(scope="module")
def server_context(tmp_path_factory):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*echo_bench.make_certificate(str(tmp_path_factory.mktemp("echo"))))
    return context


class Tally:
    """What a test's echo server saw, over all its connections."""

    def __init__(self):
        self.echoed = 0
        # payloads that began before the echo of the one ahead of them had been written
        self.overlapping = 0


class CountingEcho(asyncio.Protocol):
    """Echoes everything into ``tally``; ``close_after`` bytes end the connection. The
    second half of each piece goes back a moment after the first, so the client sees
    payloads arrive in parts."""

    def __init__(self, tally, size=None, close_after=None):
        self.tally = tally
        self.size = size
        self.close_after = close_after
        self.received = self.written = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.size and self.received % self.size == 0 and self.written < self.received:
            self.tally.overlapping += 1
        self.received += len(data)
        self.tally.echoed += len(data)
        half = len(data) // 2
        self.written += half
        self.transport.write(data[:half])
        asyncio.get_running_loop().call_later(0.002, self._send_rest, data[half:])

    def _send_rest(self, rest):
        if self.transport.is_closing():
            return
        self.transport.write(rest)
        self.written += len(rest)
        if self.close_after is not None and self.tally.echoed >= self.close_after:
            self.transport.close()


async def _serve(factory, context):
    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("size", [1024, 65536])
async def test_every_counted_round_trip_is_one_whole_echo(tls, size, server_context):
    tally = Tally()
    server, port = await _serve(lambda: CountingEcho(tally, size), server_context if tls else None)
    try:
        count, took = await echo_bench.client(port, size, 3, 0.3, tls)
    finally:
        server.close()
        await server.wait_closed()
    assert count > 3
    assert took >= 0.3
    # request and response: the client sends a payload only once the last one came back
    # whole, and stops at the deadline, so the server echoed exactly what was counted
    assert tally.overlapping == 0
    assert tally.echoed == count * size, (tally.echoed / size, count)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_connection_the_server_drops_fails_the_run(tls, server_context):
    tally = Tally()
    server, port = await _serve(
        lambda: CountingEcho(tally, close_after=4 * 1024), server_context if tls else None
    )
    try:
        with pytest.raises(ConnectionError, match="closed the connection before the run"):
            await asyncio.wait_for(echo_bench.client(port, 1024, 1, 5.0, tls), 10)
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_server_that_stops_answering_fails_the_run(tls, server_context):
    class Silent(asyncio.Protocol):
        def data_received(self, data):
            pass

    server, port = await _serve(Silent, server_context if tls else None)
    try:
        with pytest.raises(TimeoutError, match=f"port {port} stopped answering"):
            await asyncio.wait_for(echo_bench.client(port, 1024, 2, 0.2, tls, grace=0.3), 10)
    finally:
        server.close()
        await server.wait_closed()
