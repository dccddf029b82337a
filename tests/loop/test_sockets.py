"""loop.sock_* on non-blocking sockets, name resolution, executors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import socket
import tempfile
import threading
import weakref

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS


def nb(sock):
    sock.setblocking(False)
    return sock


async def tcp_pair():
    loop = asyncio.get_running_loop()
    listener = nb(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = nb(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    accepted, (conn, _) = await asyncio.gather(
        loop.sock_connect(client, listener.getsockname()), loop.sock_accept(listener)
    )
    assert accepted is None
    listener.close()
    return client, conn


async def test_tcp_connect_accept_send_recv():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        assert server.gettimeout() == 0
        payload = os.urandom(4 * 1024 * 1024)  # larger than the socket buffers

        async def read_all(n):
            chunks = []
            while n:
                data = await loop.sock_recv(server, min(n, 65536))
                assert data
                chunks.append(data)
                n -= len(data)
            return b"".join(chunks)

        sent, received = await asyncio.gather(
            loop.sock_sendall(client, payload), read_all(len(payload))
        )
        assert sent is None
        assert received == payload

        buf = bytearray(10)
        await loop.sock_sendall(server, b"into")
        n = await loop.sock_recv_into(client, buf)
        assert buf[:n] == b"into"
    finally:
        client.close()
        server.close()


async def test_recv_waits_for_data():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        loop.call_later(0.02, client.send, b"late")
        assert await loop.sock_recv(server, 10) == b"late"
    finally:
        client.close()
        server.close()


async def test_cancelled_recv_releases_the_socket():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        task = asyncio.ensure_future(loop.sock_recv(server, 10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        client.send(b"after")
        assert await asyncio.wait_for(loop.sock_recv(server, 10), 5) == b"after"
    finally:
        client.close()
        server.close()


async def test_connect_by_name_and_refused():
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    sock = nb(socket.socket(socket.AF_INET))
    try:
        await loop.sock_connect(sock, ("localhost", port))  # resolved like asyncio does
    finally:
        sock.close()
        listener.close()
    sock = nb(socket.socket(socket.AF_INET))
    try:
        with pytest.raises(OSError):
            await loop.sock_connect(sock, ("127.0.0.1", port))
    finally:
        sock.close()


async def test_unix_socket():
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s")
        listener = nb(socket.socket(socket.AF_UNIX))
        listener.bind(path)
        listener.listen()
        client = nb(socket.socket(socket.AF_UNIX))
        _, (conn, _) = await asyncio.gather(
            loop.sock_connect(client, path), loop.sock_accept(listener)
        )
        try:
            await loop.sock_sendall(client, b"unix")
            assert await loop.sock_recv(conn, 10) == b"unix"
        finally:
            for s in (client, conn, listener):
                s.close()


async def test_udp_sendto_recvfrom():
    loop = asyncio.get_running_loop()
    a = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    try:
        assert await loop.sock_sendto(a, b"dgram", b.getsockname()) == 5
        data, addr = await loop.sock_recvfrom(b, 100)
        assert (data, addr) == (b"dgram", a.getsockname())
        await loop.sock_sendto(b, b"back", a.getsockname())
        buf = bytearray(100)
        n, addr = await loop.sock_recvfrom_into(a, buf)
        assert bytes(buf[:n]) == b"back" and addr == b.getsockname()
    finally:
        a.close()
        b.close()


async def test_blocking_socket_rejected(event_loop_name):
    loop = asyncio.get_running_loop()
    loop.set_debug(True)  # the stdlib checks in debug mode (we always do)
    sock = socket.socket()
    try:
        with pytest.raises(ValueError, match="must be non-blocking"):
            await loop.sock_recv(sock, 1)
    finally:
        sock.close()
        loop.set_debug(False)


@pytest.mark.parametrize("fallback_only", [False, True])
async def test_sock_sendfile(fallback_only):
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    data = os.urandom(300_000)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        f.seek(0)
        try:

            async def read_all(n):
                out = bytearray()
                while len(out) < n:
                    out += await loop.sock_recv(server, 65536)
                return bytes(out)

            if fallback_only:
                sent, got = await asyncio.gather(
                    loop._sock_sendfile_fallback(client, f, 1000, 100_000),
                    read_all(100_000),
                )
                assert sent == 100_000 and got == data[1000:101_000]
                assert f.tell() == 101_000
            else:
                sent, got = await asyncio.gather(
                    loop.sock_sendfile(client, f, 10, None), read_all(len(data) - 10)
                )
                assert sent == len(data) - 10 and got == data[10:]
        finally:
            client.close()
            server.close()


async def test_sock_sendfile_argument_errors():
    loop = asyncio.get_running_loop()
    udp = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    tcp = nb(socket.socket())
    try:
        with tempfile.TemporaryFile() as f:
            with pytest.raises(ValueError, match="SOCK_STREAM"):
                await loop.sock_sendfile(udp, f)
            with pytest.raises(ValueError, match="count must be a positive integer"):
                await loop.sock_sendfile(tcp, f, 0, 0)
            with pytest.raises(ValueError, match="offset must be a non-negative integer"):
                await loop.sock_sendfile(tcp, f, -1)
        with tempfile.TemporaryFile("w") as f:
            with pytest.raises(ValueError, match="binary mode"):
                await loop.sock_sendfile(tcp, f)
    finally:
        udp.close()
        tcp.close()


async def test_getaddrinfo_numeric_and_named():
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert infos[0][4] == ("127.0.0.1", 80)
    infos = await loop.getaddrinfo("::1", "443", family=socket.AF_INET6, type=socket.SOCK_STREAM)
    assert infos[0][4][:2] == ("::1", 443)
    infos = await loop.getaddrinfo("localhost", 5432, type=socket.SOCK_STREAM)
    assert infos and all(len(i) == 5 for i in infos)
    with pytest.raises(socket.gaierror):
        await loop.getaddrinfo("no-such-host.invalid", 80)
    host, port = await loop.getnameinfo(
        ("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    )
    assert (host, port) == ("127.0.0.1", "80")


async def test_run_in_executor():
    loop = asyncio.get_running_loop()
    ident = await loop.run_in_executor(None, threading.get_ident)
    assert ident != threading.get_ident()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    assert await loop.run_in_executor(pool, sum, [1, 2, 3]) == 6
    loop.set_default_executor(pool)
    assert await loop.run_in_executor(None, pow, 2, 10) == 1024
    with pytest.raises(TypeError):
        loop.set_default_executor(concurrent.futures.ProcessPoolExecutor())
    with pytest.raises(ZeroDivisionError):
        await loop.run_in_executor(None, divmod, 1, 0)


# ---------------------------------------------------------------- sock_recv / sock_sendall
# On our loop these run in Rust and keep the socket registered between operations; the
# cases below are the ones that design must get right, run on both loops alike.


async def test_partial_reads_lose_nothing():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        client.send(bytes(range(100)))
        await asyncio.sleep(0.01)
        parts = [await loop.sock_recv(server, 30) for _ in range(3)]
        parts.append(await loop.sock_recv(server, 30))  # a short read: the last 10
        assert b"".join(parts) == bytes(range(100))
        assert [len(p) for p in parts] == [30, 30, 30, 10]
        # nothing left: the next one waits for the next send
        loop.call_later(0.02, client.send, b"more")
        assert await asyncio.wait_for(loop.sock_recv(server, 30), 5) == b"more"
        assert await loop.sock_recv(server, 0) == b""
    finally:
        client.close()
        server.close()


async def test_recv_into_cancelled_leaves_the_buffer_alone():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        buf = bytearray(b"." * 8)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv_into(server, buf), 0.02)
        client.send(b"payload!")
        await asyncio.sleep(0.05)  # data arrives; nobody may write it into `buf` now
        assert buf == bytearray(b"." * 8)
        other = bytearray(8)
        assert await asyncio.wait_for(loop.sock_recv_into(server, other), 5) == 8
        assert other == bytearray(b"payload!")
    finally:
        client.close()
        server.close()


async def test_eof_and_reset():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    reader = asyncio.ensure_future(loop.sock_recv(server, 10))
    await asyncio.sleep(0.01)
    client.close()
    assert await asyncio.wait_for(reader, 5) == b""
    assert await loop.sock_recv(server, 10) == b""  # EOF stays EOF
    server.close()

    client, server = await tcp_pair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    reader = asyncio.ensure_future(loop.sock_recv(server, 10))
    await asyncio.sleep(0.01)
    client.close()  # linger 0: the peer sees RST
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader, 5)
    server.close()


async def test_sendall_to_a_slow_reader_and_full_duplex():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        payload = os.urandom(8 * 1024 * 1024)
        view = memoryview(bytearray(payload))

        async def slow_read(n):
            got = bytearray()
            while len(got) < n:
                got += await loop.sock_recv(server, 100_000)
                await asyncio.sleep(0)
            return bytes(got)

        async def echo_back():
            # the other direction at the same time, on the same sockets
            await loop.sock_sendall(server, b"pong" * 1000)

        sent, got, _ = await asyncio.gather(
            loop.sock_sendall(client, view), slow_read(len(payload)), echo_back()
        )
        assert sent is None and got == payload
        back = bytearray()
        while len(back) < 4000:
            back += await loop.sock_recv(client, 4000)
        assert back == b"pong" * 1000
    finally:
        client.close()
        server.close()


async def test_closed_socket_number_reused():
    loop = asyncio.get_running_loop()
    for _ in range(3):
        client, server = await tcp_pair()
        fd = server.fileno()
        loop.call_later(0.01, client.send, b"x")
        assert await asyncio.wait_for(loop.sock_recv(server, 1), 5) == b"x"
        server.close()
        client.close()
        # the next pair likely gets the same numbers: it must not inherit anything
        client, server = await tcp_pair()
        if server.fileno() != fd:
            server, client = client, server
        loop.call_later(0.01, client.send, b"y")
        assert await asyncio.wait_for(loop.sock_recv(server, 1), 5) == b"y"
        client.close()
        server.close()


async def test_many_sockets_opened_used_and_closed():
    loop = asyncio.get_running_loop()
    for _ in range(300):
        client, server = await tcp_pair()
        loop.call_soon(client.send, b"z")
        assert await asyncio.wait_for(loop.sock_recv(server, 1), 5) == b"z"
        client.close()
        server.close()
    if hasattr(loop, "_watch_count"):
        # the records of closed sockets are swept: the loop's table stays small
        assert loop._watch_count() < 200


async def test_socket_subclass_and_datagrams_go_through():
    loop = asyncio.get_running_loop()

    class Counting(socket.socket):
        recvs = 0

        def recv(self, n, *args):
            type(self).recvs += 1
            return super().recv(n, *args)

    a, b = socket.socketpair()
    sub = Counting(fileno=b.detach())
    sub.setblocking(False)
    a.setblocking(False)
    try:
        loop.call_later(0.01, a.send, b"sub")
        assert await asyncio.wait_for(loop.sock_recv(sub, 10), 5) == b"sub"
        assert Counting.recvs >= 1  # its recv was honoured
    finally:
        a.close()
        sub.close()

    x = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    y = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    x.bind(("127.0.0.1", 0))
    y.connect(x.getsockname())
    try:
        loop.call_later(0.01, y.send, b"one")
        loop.call_later(0.02, y.send, b"two")
        # a datagram shorter than asked says nothing about what else is queued
        assert await asyncio.wait_for(loop.sock_recv(x, 100), 5) == b"one"
        assert await asyncio.wait_for(loop.sock_recv(x, 100), 5) == b"two"
    finally:
        x.close()
        y.close()


async def test_bad_arguments():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        with pytest.raises(ValueError, match="negative buffersize"):
            await loop.sock_recv(server, -1)
        await loop.sock_sendall(client, b"kept")
        await asyncio.sleep(0.01)
        with pytest.raises(MemoryError):
            await loop.sock_recv(server, 2**44)  # a 16 TiB buffer: refused, not a crash
        assert await loop.sock_recv(server, 4) == b"kept"
        with pytest.raises(TypeError):
            await loop.sock_sendall(client, "text")
        with pytest.raises(TypeError):
            await loop.sock_recv_into(server, b"read-only")
        # the socket is still fine
        await loop.sock_sendall(client, b"ok")
        assert await asyncio.wait_for(loop.sock_recv(server, 2), 5) == b"ok"
    finally:
        client.close()
        server.close()
    closed = nb(socket.socket())
    closed.close()
    with pytest.raises(OSError):
        await loop.sock_recv(closed, 1)


async def test_transport_socket_refused():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    async with server:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, *server.sockets[0].getsockname()
        )
        # a socket object over the transport's own descriptor
        sock = nb(socket.socket(fileno=transport.get_extra_info("socket").fileno()))
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(sock, 1)
        finally:
            sock.detach()
        transport.close()


async def test_add_reader_beside_sock_operations():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        loop.call_later(0.01, client.send, b"a")
        assert await asyncio.wait_for(loop.sock_recv(server, 1), 5) == b"a"
        seen = loop.create_future()
        loop.add_reader(server, lambda: seen.done() or seen.set_result(server.recv(1)))
        client.send(b"b")
        assert await asyncio.wait_for(seen, 5) == b"b"
        assert loop.remove_reader(server)
        loop.call_later(0.01, client.send, b"c")
        assert await asyncio.wait_for(loop.sock_recv(server, 1), 5) == b"c"
    finally:
        client.close()
        server.close()


async def test_socket_like_object_without_weak_references():
    # asyncio takes any object with the socket methods it calls
    loop = asyncio.get_running_loop()

    class Duck:
        __slots__ = ("_sock",)

        def __init__(self, sock):
            self._sock = sock

        def fileno(self):
            return self._sock.fileno()

        def gettimeout(self):
            return self._sock.gettimeout()

        def recv(self, n):
            return self._sock.recv(n)

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        loop.call_later(0.01, a.send, b"quack")
        assert await asyncio.wait_for(loop.sock_recv(Duck(b), 10), 5) == b"quack"
    finally:
        a.close()
        b.close()


async def test_accept_recvfrom_sendto_keep_working_in_turn():
    # the reactor keeps a socket registered between operations: many waits in a row on one
    # socket, in both directions and of several kinds, must each see their own readiness
    loop = asyncio.get_running_loop()
    listener = nb(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    clients = []
    try:
        for _ in range(5):
            client = nb(socket.socket())
            clients.append(client)
            _, (conn, _) = await asyncio.gather(
                loop.sock_connect(client, listener.getsockname()), loop.sock_accept(listener)
            )
            assert conn.gettimeout() == 0
            conn.close()
    finally:
        listener.close()
        for c in clients:
            c.close()

    x = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    y = nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    x.bind(("127.0.0.1", 0))
    y.bind(("127.0.0.1", 0))
    try:
        for i in range(20):
            waiter = asyncio.ensure_future(loop.sock_recvfrom(x, 100))
            await asyncio.sleep(0)
            await loop.sock_sendto(y, b"d%d" % i, x.getsockname())
            data, addr = await asyncio.wait_for(waiter, 5)
            assert data == b"d%d" % i and addr == y.getsockname()
    finally:
        x.close()
        y.close()


async def test_sendall_to_a_peer_that_resets():
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        sending = asyncio.ensure_future(loop.sock_sendall(client, b"\0" * (32 * 1024 * 1024)))
        await asyncio.sleep(0.05)  # the kernel buffers fill; the send waits for room
        assert not sending.done()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        server.close()  # unread data and linger 0: the client sees RST
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            await asyncio.wait_for(sending, 5)
        # the loop and other sockets are unaffected
        a, b = await tcp_pair()
        await loop.sock_sendall(a, b"fine")
        assert await asyncio.wait_for(loop.sock_recv(b, 4), 5) == b"fine"
        a.close()
        b.close()
    finally:
        client.close()


async def test_large_reads_keep_message_boundaries():
    # after large reads a receive is sized by what the kernel holds: for datagrams that is the
    # next datagram, never a truncated or merged one
    loop = asyncio.get_running_loop()
    x = nb(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    y = nb(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    with tempfile.TemporaryDirectory() as d:
        x.bind(os.path.join(d, "x"))
        y.connect(os.path.join(d, "x"))
        try:
            sizes = [20000, 30000, 17000, 100, 40000]
            for i, size in enumerate(sizes):
                y.send(bytes([i]) * size)
            for i, size in enumerate(sizes):
                data = await asyncio.wait_for(loop.sock_recv(x, 65536), 5)
                assert data == bytes([i]) * size
        finally:
            x.close()
            y.close()


@pytest.mark.parametrize("into", [False, True])
async def test_recv_sees_the_eof_that_came_with_the_last_data(into):
    # data and the peer's FIN in one readiness edge: the read of the data is short, yet the
    # EOF is still to be read, and no further edge will announce it
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, listener.getsockname())
        server_side, _ = listener.accept()
    buf = bytearray(1000)

    async def recv():
        if into:
            n = await loop.sock_recv_into(client, buf)
            return bytes(buf[:n])
        return await loop.sock_recv(client, 1000)

    with client, server_side:
        pending = asyncio.ensure_future(recv())
        await asyncio.sleep(0.01)  # the read is waiting for the socket
        # both before the loop polls again, so they arrive as one edge
        server_side.sendall(b"x" * 100)
        server_side.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(pending, 5) == b"x" * 100
        assert await asyncio.wait_for(recv(), 5) == b""


async def test_sock_sendto_calls_the_method_the_socket_has_at_each_attempt():
    # as the stdlib: each retry looks the method up again (CPython's own tests swap it on a
    # mock), and a retry that finds the socket writable after all is not left waiting for a
    # readiness edge that already passed
    from unittest import mock

    loop = asyncio.get_running_loop()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        sender.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        wrapped = mock.Mock(sender)
        wrapped.fileno = sender.fileno
        wrapped.gettimeout = sender.gettimeout
        wrapped.sendto.configure_mock(side_effect=BlockingIOError)
        loop.call_soon(lambda: setattr(wrapped, "sendto", sender.sendto))
        sent = await asyncio.wait_for(loop.sock_sendto(wrapped, b"x", receiver.getsockname()), 5)
        assert sent == 1
        got = await asyncio.wait_for(loop.sock_recvfrom(receiver, 10), 5)
        assert got == (b"x", sender.getsockname())


# A socket closed while a sock_* operation waits on it: like uvloop, ours holds the socket's
# io reference (socket._io_refs) for the operation, so close() is deferred until it ends and
# the operation completes. The stdlib 3.11 loop closes the descriptor at once, epoll drops it
# and the awaiting coroutine hangs: these run on ours only.


@pytest.mark.loops("asyncpg_rs")
async def test_recv_on_a_socket_closed_meanwhile_completes_then_closes(into):
    loop = asyncio.get_running_loop()
    client, server = await tcp_pair()
    try:
        buf = bytearray(10)
        op = loop.sock_recv_into(server, buf) if into else loop.sock_recv(server, 10)
        task = asyncio.ensure_future(op)
        await asyncio.sleep(0.01)
        server.close()
        assert server.fileno() != -1  # deferred: the receive still holds it
        client.send(b"helo")
        got = await asyncio.wait_for(task, 5)
        assert (bytes(buf[:got]) if into else got) == b"helo"
        assert server.fileno() == -1  # really closed as the receive ended
    finally:
        client.close()
        server.close()


@pytest.fixture(params=[False, True], ids=["recv", "recv_into"])
def into(request):
    return request.param


@pytest.mark.loops("asyncpg_rs")
async def test_connect_on_a_socket_closed_meanwhile_completes():
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sock = nb(socket.socket())
    try:
        task = asyncio.ensure_future(loop.sock_connect(sock, listener.getsockname()))
        loop.call_soon(sock.close)
        assert await asyncio.wait_for(task, 5) is None
        assert sock.fileno() == -1
    finally:
        sock.close()
        listener.close()


async def waiting_operation(kind):
    """``(sock, awaitable, cleanup)``: a ``sock_*`` operation of ``kind`` that will wait on
    ``sock`` (nothing to read, no room to send, nobody connecting, a full accept queue)."""
    loop = asyncio.get_running_loop()
    if kind == "accept":
        listener = nb(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        return listener, loop.sock_accept(listener), []
    if kind == "connect":
        # backlog 0: once one connection waits in the accept queue, the kernel drops further
        # SYNs, and a connect waits for its retransmission (a second or more)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued = nb(socket.socket())
        queued.connect_ex(listener.getsockname())
        await asyncio.sleep(0.05)
        sock = nb(socket.socket())
        return sock, loop.sock_connect(sock, listener.getsockname()), [listener, queued]
    client, server = await tcp_pair()
    if kind == "recv":
        return server, loop.sock_recv(server, 10), [client]
    if kind == "recv_into":
        return server, loop.sock_recv_into(server, bytearray(10)), [client]
    assert kind == "sendall"
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return client, loop.sock_sendall(client, b"x" * (16 * 1024 * 1024)), [server]


@pytest.fixture(params=["recv", "recv_into", "sendall", "accept", "connect"])
def waiting_kind(request):
    return request.param


@pytest.mark.parametrize(
    "close_first", [False, True], ids=["cancel_then_close", "close_then_cancel"]
)
async def test_cancelled_operation_gives_the_socket_back_to_close(waiting_kind, close_first):
    # the operation lets go of its io reference when cancelled, not at the next readiness
    # (which may never come): close(), before or after, then really closes the descriptor,
    # and the number is free for the next socket
    loop = asyncio.get_running_loop()
    sock, op, others = await waiting_operation(waiting_kind)
    try:
        fd = sock.fileno()
        task = asyncio.ensure_future(op)
        await asyncio.sleep(0.01)
        assert not task.done()
        if close_first:
            sock.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        sock.close()
        assert sock.fileno() == -1
        with pytest.raises(OSError):
            os.fstat(fd)  # really closed, not just marked
        # the lowest free number: most likely `fd` again, which must work as a new socket
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            reader = asyncio.ensure_future(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            await loop.sock_sendall(b, b"again")
            assert await asyncio.wait_for(reader, 5) == b"again"
    finally:
        sock.close()
        for other in others:
            other.close()


async def settled_in_the_reactor(kind, outcome):
    """A weak reference to the socket of a ``kind`` operation that waited and was then
    cancelled or failed, everything else about it dropped."""
    sock, op, others = await waiting_operation(kind)
    task = asyncio.ensure_future(op)
    del op
    await asyncio.sleep(0.01)
    if outcome == "cancelled":
        task.cancel()
    else:
        # the peer resets the connection while the operation waits: the error settles it
        peer = others[0]
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
    # not `await task`, nor wait_for: the error raised here would hold this frame, which
    # holds the task, which holds the error
    await asyncio.wait([task], timeout=5)
    if outcome == "cancelled":
        assert task.cancelled()
    else:
        assert isinstance(task.exception(), (ConnectionError, BrokenPipeError))
    del task
    for _ in range(3):
        await asyncio.sleep(0)  # done callbacks
    sock.close()
    for other in others:
        other.close()
    return weakref.ref(sock)


@pytest.mark.loops("asyncpg_rs")
@pytest.mark.parametrize(
    "kind, outcome",
    [
        ("recv", "cancelled"),
        ("recv_into", "cancelled"),
        ("sendall", "cancelled"),
        ("accept", "cancelled"),
        ("connect", "cancelled"),
        ("recv", "failed"),
        ("recv_into", "failed"),
        ("sendall", "failed"),
    ],
)
async def test_operation_settled_in_the_reactor_leaves_no_cycle(kind, outcome):
    # a failed or cancelled future holds its exception, whose traceback holds the frame that
    # awaited it: were the future in one of that frame's locals, the socket and the error
    # would live in a cycle until the GC ran; nor may the reactor's done callback on the
    # future hold the socket. (The stdlib 3.11 loop keeps its future in a local: ours only.)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        sock = await settled_in_the_reactor(kind, outcome)
        for _ in range(3):
            await asyncio.sleep(0)
        assert sock() is None, f"socket kept alive by: {gc.get_referrers(sock())}"
        garbage = gc.collect()
        assert garbage == 0, f"{garbage} objects were left in reference cycles"
    finally:
        if gc_was_enabled:
            gc.enable()


def test_loop_close_releases_sockets_held_by_waiting_operations(loop, loop_kind):
    async def park():
        client, server = await tcp_pair()
        asyncio.ensure_future(loop.sock_recv(server, 10))
        await asyncio.sleep(0.01)
        return client, server

    client, server = loop.run_until_complete(park())
    try:
        server.close()
        if loop_kind == "asyncpg_rs":
            assert server.fileno() != -1  # the pending receive holds it (uvloop: the same)
        loop.close()
        assert server.fileno() == -1
    finally:
        client.close()
        server.close()
