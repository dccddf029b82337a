"""loop.sock_* on non-blocking sockets, name resolution, executors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import tempfile
import threading

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
