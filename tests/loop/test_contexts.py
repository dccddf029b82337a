"""Protocol callbacks run in the ``contextvars`` context the connection was set up in.

A request-scoped variable (a tracing span, a request id) set around ``create_connection``,
``create_server``, ``create_datagram_endpoint`` or a subprocess must be what the protocol's
callbacks see. Where the stdlib loop agrees (callbacks the loop itself triggers) the test runs
on both loops; where it does not (a callback triggered from another context: ``close()`` or
``write()`` called from a task with other values) asyncio runs the callback in the caller's
context, and uvloop, like ours, in the connection's: those tests run on ours only.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS

request_id = contextvars.ContextVar("request_id", default="unset")


class Seen(asyncio.Protocol):
    """Records ``request_id`` as each callback sees it."""

    def __init__(self):
        self.seen = {}
        self.transport = None
        self.got_data = asyncio.get_running_loop().create_future()
        self.got_eof = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def _note(self, name):
        self.seen[name] = request_id.get()

    def connection_made(self, transport):
        self.transport = transport
        self._note("connection_made")

    def data_received(self, data):
        self._note("data_received")
        if not self.got_data.done():
            self.got_data.set_result(data)

    def eof_received(self):
        self._note("eof_received")
        self.got_eof.set_result(None)
        # returning None: the transport closes itself, connection_lost follows

    def pause_writing(self):
        self._note("pause_writing")

    def resume_writing(self):
        self._note("resume_writing")

    def connection_lost(self, exc):
        self._note("connection_lost")
        self.lost.set_result(exc)


class SeenBuffered(Seen, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint):
        self._note("get_buffer")
        self.buffer = bytearray(1024)
        return self.buffer

    def buffer_updated(self, nbytes):
        self._note("buffer_updated")
        self.data_received(bytes(self.buffer[:nbytes]))


async def _peer_pair():
    """A listening socket (non-blocking, for loop.sock_accept) and its address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    return listener, listener.getsockname()


@pytest.mark.parametrize("protocol_class", [Seen, SeenBuffered])
async def test_client_callbacks_see_the_context_of_create_connection(protocol_class):
    loop = asyncio.get_running_loop()
    listener, addr = await _peer_pair()
    with listener:
        request_id.set("request-1")
        transport, proto = await loop.create_connection(protocol_class, *addr)
        request_id.set("changed-after-connect")
        peer, _ = await loop.sock_accept(listener)
        with peer:
            await loop.sock_sendall(peer, b"hello")
            assert await asyncio.wait_for(proto.got_data, 5) == b"hello"
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(proto.got_eof, 5)
        assert await asyncio.wait_for(proto.lost, 5) is None
    expected = {"connection_made", "eof_received", "connection_lost", "data_received"}
    if protocol_class is SeenBuffered:
        expected |= {"get_buffer", "buffer_updated"}
    assert set(proto.seen) == expected
    assert set(proto.seen.values()) == {"request-1"}, proto.seen
    transport.close()


async def test_server_callbacks_see_the_context_of_create_server():
    loop = asyncio.get_running_loop()
    protocols = []

    def factory():
        proto = Seen()
        proto.seen["factory"] = request_id.get()
        protocols.append(proto)
        return proto

    async def start():
        request_id.set("server")
        return await loop.create_server(factory, "127.0.0.1", 0)

    server = await asyncio.create_task(start())
    async with server:
        addr = server.sockets[0].getsockname()
        request_id.set("client")
        client = socket.create_connection(addr)
        client.setblocking(False)
        with client:
            await loop.sock_sendall(client, b"ping")
            while not protocols:
                await asyncio.sleep(0.01)
            proto = protocols[0]
            await asyncio.wait_for(proto.got_data, 5)
            client.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(proto.got_eof, 5)
        await asyncio.wait_for(proto.lost, 5)
    assert set(proto.seen) == {
        "factory",
        "connection_made",
        "data_received",
        "eof_received",
        "connection_lost",
    }
    assert set(proto.seen.values()) == {"server"}, proto.seen


class SeenDatagram(asyncio.DatagramProtocol):
    def __init__(self):
        self.seen = {}
        self.received = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.seen["connection_made"] = request_id.get()

    def datagram_received(self, data, addr):
        self.seen["datagram_received"] = request_id.get()
        self.received.set_result(data)

    def error_received(self, exc):
        self.seen["error_received"] = request_id.get()

    def connection_lost(self, exc):
        self.seen["connection_lost"] = request_id.get()
        self.lost.set_result(exc)


async def test_datagram_callbacks_see_the_context_of_the_endpoint():
    loop = asyncio.get_running_loop()
    request_id.set("udp")
    transport, proto = await loop.create_datagram_endpoint(
        SeenDatagram, local_addr=("127.0.0.1", 0)
    )
    request_id.set("elsewhere")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"datagram", transport.get_extra_info("sockname"))
        assert await asyncio.wait_for(proto.received, 5) == b"datagram"
    assert proto.seen == {"connection_made": "udp", "datagram_received": "udp"}
    transport.close()
    await asyncio.wait_for(proto.lost, 5)


class SeenSubprocess(asyncio.SubprocessProtocol):
    def __init__(self):
        self.seen = {}
        self.exited = asyncio.get_running_loop().create_future()
        self.out = bytearray()

    def connection_made(self, transport):
        self.seen["connection_made"] = request_id.get()

    def pipe_data_received(self, fd, data):
        self.seen["pipe_data_received"] = request_id.get()
        self.out += data

    def pipe_connection_lost(self, fd, exc):
        self.seen.setdefault("pipe_connection_lost", request_id.get())

    def process_exited(self):
        self.seen["process_exited"] = request_id.get()

    def connection_lost(self, exc):
        self.seen["connection_lost"] = request_id.get()
        self.exited.set_result(exc)


@pytest.mark.loops("asyncpg_rs")  # asyncio runs process_exited and connection_lost elsewhere
async def test_subprocess_callbacks_see_the_context_of_subprocess_exec():
    loop = asyncio.get_running_loop()
    request_id.set("child")
    transport, proto = await loop.subprocess_exec(
        SeenSubprocess, sys.executable, "-c", "print('out')", stdin=None
    )
    request_id.set("elsewhere")
    try:
        await asyncio.wait_for(proto.exited, 10)
    finally:
        transport.close()
    assert bytes(proto.out).strip() == b"out"
    assert proto.seen == dict.fromkeys(
        [
            "connection_made",
            "pipe_data_received",
            "pipe_connection_lost",
            "process_exited",
            "connection_lost",
        ],
        "child",
    )


# ---------------------------------------------------------------- ours (and uvloop's) only
# asyncio runs these callbacks in the context of whoever triggered them


@pytest.mark.loops("asyncpg_rs")
async def test_connection_lost_after_close_from_another_context():
    loop = asyncio.get_running_loop()
    listener, addr = await _peer_pair()
    with listener:
        request_id.set("connection")
        transport, proto = await loop.create_connection(Seen, *addr)

        def close_elsewhere():
            request_id.set("closer")
            transport.close()

        # a handle copies the current context; close() then runs with other values
        loop.call_soon(close_elsewhere)
        await asyncio.wait_for(proto.lost, 5)
    assert proto.seen["connection_lost"] == "connection"


@pytest.mark.loops("asyncpg_rs")
async def test_flow_control_callbacks_see_the_connection_context_not_the_writers():
    loop = asyncio.get_running_loop()
    listener, addr = await _peer_pair()
    with listener:
        request_id.set("connection")
        transport, proto = await loop.create_connection(Seen, *addr)
        peer, _ = await loop.sock_accept(listener)
        with peer:
            transport.set_write_buffer_limits(high=1024, low=0)

            async def writer():
                request_id.set("writer")
                while transport.get_write_buffer_size() == 0:
                    transport.write(b"x" * 65536)

            await asyncio.create_task(writer())
            assert proto.seen["pause_writing"] == "connection"
            while "resume_writing" not in proto.seen:
                await loop.sock_recv(peer, 1 << 20)
        assert proto.seen["resume_writing"] == "connection"
        transport.abort()
        await asyncio.wait_for(proto.lost, 5)


@pytest.mark.loops("asyncpg_rs")
async def test_datagram_connection_lost_after_close_from_another_context():
    loop = asyncio.get_running_loop()
    request_id.set("udp")
    transport, proto = await loop.create_datagram_endpoint(
        SeenDatagram, local_addr=("127.0.0.1", 0)
    )

    def close_elsewhere():
        request_id.set("closer")
        transport.close()

    loop.call_soon(close_elsewhere)
    await asyncio.wait_for(proto.lost, 5)
    assert proto.seen["connection_lost"] == "udp"


@pytest.mark.loops("asyncpg_rs")
async def test_tls_callbacks_keep_the_context_through_start_tls(certs):
    server_ctx, client_ctx = certs
    loop = asyncio.get_running_loop()
    upgraded = loop.create_future()

    class TlsServer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if data == b"STARTTLS\n":
                self.transport.write(b"OK\n")
                task = loop.create_task(
                    loop.start_tls(self.transport, self, server_ctx, server_side=True)
                )
                task.add_done_callback(lambda t: upgraded.set_result(t.result()))
            else:
                self.tls.write(data.upper())

        def eof_received(self):
            return False

    server = await loop.create_server(TlsServer, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        request_id.set("connection")
        transport, proto = await loop.create_connection(Seen, "127.0.0.1", port)
        transport.write(b"STARTTLS\n")
        assert await asyncio.wait_for(proto.got_data, 5) == b"OK\n"
        request_id.set("start_tls")
        proto.got_data = loop.create_future()
        tls = await loop.start_tls(transport, proto, client_ctx, server_hostname="localhost")
        server_side = await asyncio.wait_for(upgraded, 5)
        server_proto = server_side.get_protocol()
        server_proto.tls = server_side
        request_id.set("after")
        tls.write(b"secret")
        assert await asyncio.wait_for(proto.got_data, 5) == b"SECRET"
        server_side.close()
        await asyncio.wait_for(proto.lost, 5)
    assert proto.seen["data_received"] == "connection"
    assert proto.seen["connection_lost"] == "connection"


async def test_flow_control_inside_a_callback_runs_in_the_same_context():
    # pause_writing triggered by a write made inside connection_made or data_received: the
    # connection's context is already entered there (and cannot be entered twice)
    loop = asyncio.get_running_loop()

    class FloodOnEvents(Seen):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.set_write_buffer_limits(high=1024, low=0)
            while transport.get_write_buffer_size() == 0:
                transport.write(b"m" * 65536)
            self.made_paused = self.seen.get("pause_writing")

        def data_received(self, data):
            super().data_received(data)
            while self.transport.get_write_buffer_size() == 0:
                self.transport.write(b"d" * 65536)

    listener, addr = await _peer_pair()
    with listener:
        request_id.set("connection")
        transport, proto = await loop.create_connection(FloodOnEvents, *addr)
        request_id.set("elsewhere")
        peer, _ = await loop.sock_accept(listener)
        with peer:
            assert proto.made_paused == "connection"
            while "resume_writing" not in proto.seen:
                await loop.sock_recv(peer, 1 << 20)
            del proto.seen["pause_writing"]
            await loop.sock_sendall(peer, b"go")
            await asyncio.wait_for(proto.got_data, 5)
            assert proto.seen["pause_writing"] == "connection"
            assert proto.seen["data_received"] == "connection"
        transport.abort()
        await asyncio.wait_for(proto.lost, 5)
    # connection_lost follows abort() from this task: asyncio runs it in this task's context
    del proto.seen["connection_lost"]
    assert set(proto.seen.values()) == {"connection"}, proto.seen
