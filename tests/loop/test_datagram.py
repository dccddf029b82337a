"""create_datagram_endpoint: UDP and Unix datagram sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest
from looptools import LOOP_TEST_MARKS

import asyncpg_rs

pytestmark = LOOP_TEST_MARKS


class Recorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue = asyncio.Queue()
        self.errors = []
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def test_unconnected_and_connected_endpoints():
    loop = asyncio.get_running_loop()
    server, sp = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    addr = server.get_extra_info("sockname")
    client, cp = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
    assert client.get_extra_info("peername") == addr
    client.sendto(b"hello")
    data, caddr = await asyncio.wait_for(sp.queue.get(), 5)
    assert data == b"hello"
    server.sendto(b"back", caddr)
    assert (await asyncio.wait_for(cp.queue.get(), 5))[0] == b"back"
    with pytest.raises(ValueError, match="Invalid address"):
        client.sendto(b"x", ("127.0.0.1", 9))
    with pytest.raises(TypeError):
        client.sendto("text")
    for _ in range(100):
        client.sendto(b"burst")
    got = [await asyncio.wait_for(sp.queue.get(), 5) for _ in range(100)]
    assert all(d == b"burst" for d, _ in got)
    client.close()
    server.close()
    assert await cp.lost is None and await sp.lost is None


async def test_sock_argument_and_errors():
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    transport, proto = await loop.create_datagram_endpoint(Recorder, sock=sock)
    assert transport.get_extra_info("socket").fileno() == sock.fileno()
    transport.close()
    await proto.lost
    with pytest.raises(ValueError, match="socket modifier keyword arguments"):
        s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await loop.create_datagram_endpoint(Recorder, sock=s2, local_addr=("127.0.0.1", 0))
        finally:
            s2.close()
    with pytest.raises(ValueError, match="unexpected address family"):
        await loop.create_datagram_endpoint(Recorder)
    # reuse_address was removed in Python 3.11 (SO_REUSEADDR on UDP is unsafe)
    with pytest.raises(TypeError):
        await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0), reuse_address=True
        )


async def test_reuse_port_and_broadcast():
    loop = asyncio.get_running_loop()
    t1, _ = await loop.create_datagram_endpoint(
        Recorder, local_addr=("127.0.0.1", 0), reuse_port=True
    )
    port = t1.get_extra_info("sockname")[1]
    t2, _ = await loop.create_datagram_endpoint(
        Recorder, local_addr=("127.0.0.1", port), reuse_port=True
    )
    t3, _ = await loop.create_datagram_endpoint(
        Recorder, local_addr=("127.0.0.1", 0), allow_broadcast=True
    )
    assert t3.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
    for t in (t1, t2, t3):
        t.close()


async def test_unix_datagram(tmp_path):
    loop = asyncio.get_running_loop()
    path = str(tmp_path / "dgram.sock")
    server, sp = await loop.create_datagram_endpoint(
        Recorder, local_addr=path, family=socket.AF_UNIX
    )
    client, _ = await loop.create_datagram_endpoint(
        Recorder, remote_addr=path, family=socket.AF_UNIX
    )
    client.sendto(b"unix dgram")
    assert (await asyncio.wait_for(sp.queue.get(), 5))[0] == b"unix dgram"
    client.close()
    server.close()


async def test_error_received_for_refused_datagrams():
    loop = asyncio.get_running_loop()
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    addr = closed.getsockname()
    closed.close()  # nothing listens there now: the kernel answers with port unreachable
    transport, proto = await loop.create_datagram_endpoint(Recorder, remote_addr=addr)
    for _ in range(50):
        transport.sendto(b"anyone?")
        await asyncio.sleep(0.01)
        if proto.errors:
            break
    assert proto.errors and isinstance(proto.errors[0], ConnectionRefusedError)
    assert not transport.is_closing()  # an ICMP error is reported, not fatal
    transport.close()
    await proto.lost


async def test_datagram_transport_api():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    assert transport.get_protocol() is proto
    assert isinstance(transport, asyncio.BaseTransport)
    # the stdlib's datagram transport shares its selector transports' Transport base
    assert isinstance(transport, asyncio.Transport)
    if isinstance(loop, asyncpg_rs.Loop):
        # the documented class (the stdlib's own is a stream-style Transport before 3.12)
        assert isinstance(transport, asyncio.DatagramTransport)
    assert transport.get_write_buffer_size() == 0
    transport.set_write_buffer_limits(high=1000, low=100)
    assert transport.get_write_buffer_limits() == (100, 1000)
    with pytest.raises(ValueError):
        transport.set_write_buffer_limits(high=1, low=10)
    transport.abort()
    assert transport.is_closing()
    assert await proto.lost is None


def test_a_task_started_before_the_datagram_arrives_sees_it(loop):
    # callbacks already scheduled (here the first step of run_until_complete's task, which
    # sets up the future datagram_received resolves) run before the I/O of the next poll,
    # as in asyncio's FIFO ready queue and uvloop; CPython's test_events checks this
    class Catcher(asyncio.DatagramProtocol):
        waiting = None

        def datagram_received(self, data, addr):
            self.waiting.set_result(data)

        async def next_datagram(self):
            self.waiting = loop.create_future()
            return await asyncio.wait_for(self.waiting, 5)

    def endpoint():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        return loop.run_until_complete(loop.create_datagram_endpoint(Catcher, sock=sock))

    (t1, p1), (t2, p2) = endpoint(), endpoint()
    try:
        t1.sendto(b"a", t2.get_extra_info("sockname"))
        assert loop.run_until_complete(p2.next_datagram()) == b"a"
        t2.sendto(b"b", t1.get_extra_info("sockname"))
        assert loop.run_until_complete(p1.next_datagram()) == b"b"
    finally:
        t1.close()
        t2.close()
        loop.run_until_complete(asyncio.sleep(0))
