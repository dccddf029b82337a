"""TLS transports: the same behaviour on the stdlib loop (asyncio's ``SSLProtocol``) and on
ours (the native ``TlsTransport``): handshake, ALPN, verification, timeouts, close_notify,
half-close, flow control both ways, start_tls, many clients, extra info."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import ssl

import pytest
from looptools import LOOP_TEST_MARKS

import asyncpg_rs

pytestmark = LOOP_TEST_MARKS


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Record(asyncio.Protocol):
    """Everything that happened to the protocol, in order."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events = []
        self.data = bytearray()
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self.arrived = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data
        self.arrived.set()
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")
        if not self.eof.done():
            self.eof.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_for_bytes(self, n, timeout=10):
        async with asyncio.timeout(timeout):
            while len(self.data) < n:
                self.arrived.clear()
                await self.arrived.wait()


async def serve(protocol_factory, server_ctx, **kwargs):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol_factory, "127.0.0.1", 0, ssl=server_ctx, **kwargs)
    return server, server.sockets[0].getsockname()[1]


async def connect(port, client_ctx, factory=Record, **kwargs):
    loop = asyncio.get_running_loop()
    return await loop.create_connection(
        factory, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost", **kwargs
    )


async def test_handshake_echo_and_extra_info(certs):
    server_ctx, client_ctx = certs
    server, port = await serve(Echo, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx)
        assert proto.events == ["made"]
        assert isinstance(transport, asyncio.Transport)
        ssl_object = transport.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        assert ssl_object.server_hostname == "localhost"
        assert transport.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
        name, version, bits = transport.get_extra_info("cipher")
        assert version.startswith("TLS") and bits > 0
        assert transport.get_extra_info("compression") is None
        assert transport.get_extra_info("sslcontext") is client_ctx
        sock = transport.get_extra_info("socket")
        assert sock.getpeername() == ("127.0.0.1", port)
        assert transport.get_extra_info("peername") == ("127.0.0.1", port)
        assert transport.get_extra_info("no such thing", "dflt") == "dflt"
        # the DER certificate, which channel binding hashes
        assert ssl_object.getpeercert(True)[:1] == b"\x30"
        assert transport.get_protocol() is proto
        transport.write(b"hello")
        transport.writelines([b" ", bytearray(b"tls"), memoryview(b" world")])
        await proto.wait_for_bytes(15)
        assert bytes(proto.data) == b"hello tls world"
        with pytest.raises(TypeError):
            transport.write("text")
        transport.close()
        assert transport.is_closing()
        assert await asyncio.wait_for(proto.lost, 10) is None
        assert proto.events == ["made", "data", "eof", "lost"]


async def test_alpn_negotiated(certs_dir):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs_dir / "server.pem", certs_dir / "server.key")
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))
    client.set_alpn_protocols(["http/1.1"])
    server, port = await serve(Echo, server_ctx)
    async with server:
        transport, proto = await connect(port, client)
        assert transport.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        transport.close()
        await asyncio.wait_for(proto.lost, 10)


async def test_verification_failure_error_class(certs):
    server_ctx, _ = certs
    server, port = await serve(Echo, server_ctx)
    async with server:
        strict = ssl.create_default_context()  # does not trust our CA
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await connect(port, strict)
        assert "certificate verify failed" in str(info.value)
        # a wrong host name is a verification failure too
        _, client_ctx = certs
        loop = asyncio.get_running_loop()
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                Record, "127.0.0.1", port, ssl=client_ctx, server_hostname="other.invalid"
            )


async def test_handshake_timeout():
    _, client_ctx = _contexts_without_server()
    loop = asyncio.get_running_loop()
    # a listener that accepts and never answers the ClientHello
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer"):
            await loop.create_connection(
                Record,
                "127.0.0.1",
                port,
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_handshake_timeout=0.2,
            )
        with pytest.raises(ValueError, match="ssl_handshake_timeout should be a positive"):
            await loop.create_connection(
                Record,
                "127.0.0.1",
                port,
                ssl=client_ctx,
                ssl_handshake_timeout=-1,
                server_hostname="localhost",
            )
    finally:
        listener.close()


async def test_eof_during_handshake_is_connection_reset(certs):
    _, client_ctx = certs
    loop = asyncio.get_running_loop()

    async def hang_up(reader, writer):
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ConnectionResetError):
            await loop.create_connection(
                Record, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )


async def test_close_notify_reaches_the_peer_as_eof(certs):
    server_ctx, client_ctx = certs
    server_side = []

    def factory():
        proto = Record()
        server_side.append(proto)
        return proto

    server, port = await serve(factory, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx)
        transport.write(b"last words")
        transport.close()
        assert await asyncio.wait_for(proto.lost, 10) is None
        peer = server_side[0]
        await asyncio.wait_for(peer.lost, 10)
        # the peer read the data, then close_notify (eof_received), then the connection end
        assert bytes(peer.data) == b"last words"
        assert peer.events == ["made", "data", "eof", "lost"]
        # writes after close are dropped, not raised
        transport.write(b"ignored")


async def test_peer_close_notify_while_open(certs):
    server_ctx, client_ctx = certs

    class CloseAfterGreeting(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"bye")
            transport.close()

    server, port = await serve(CloseAfterGreeting, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx)
        assert await asyncio.wait_for(proto.lost, 10) is None
        assert bytes(proto.data) == b"bye"
        assert proto.events == ["made", "data", "eof", "lost"]


async def test_shutdown_timeout_when_peer_never_answers(certs):
    server_ctx, client_ctx = certs
    loop = asyncio.get_running_loop()
    raw_done = loop.create_future()

    # a TLS peer built on memory BIOs that completes the handshake, then goes silent
    def peer_thread(conn):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
        conn.settimeout(10)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    conn.sendall(outgoing.read())
                incoming.write(conn.recv(65536))
        if outgoing.pending:
            conn.sendall(outgoing.read())
        try:
            conn.recv(65536)  # the client's close_notify, left unanswered
            conn.recv(65536)  # until the client gives up and hangs up
        except OSError:
            pass
        loop.call_soon_threadsafe(raw_done.set_result, None)
        conn.close()

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = loop.run_in_executor(None, listener.accept)
    connecting = asyncio.ensure_future(
        loop.create_connection(
            Record,
            "127.0.0.1",
            port,
            ssl=client_ctx,
            server_hostname="localhost",
            ssl_shutdown_timeout=0.3,
        )
    )
    conn, _ = await accepted
    listener.close()
    serving = loop.run_in_executor(None, peer_thread, conn)
    transport, proto = await asyncio.wait_for(connecting, 10)
    transport.close()
    exc = await asyncio.wait_for(proto.lost, 10)
    assert isinstance(exc, TimeoutError)
    assert "SSL shutdown timed out" in str(exc)
    await asyncio.wait_for(raw_done, 10)
    await serving


async def test_half_close_is_not_supported_over_tls(certs):
    server_ctx, client_ctx = certs
    server, port = await serve(Echo, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx)
        assert transport.can_write_eof() is False
        with pytest.raises(NotImplementedError):
            transport.write_eof()
        # the transport is still usable
        transport.write(b"still here")
        await proto.wait_for_bytes(10)
        transport.close()
        await asyncio.wait_for(proto.lost, 10)


async def test_large_writes_and_write_flow_control(certs):
    server_ctx, client_ctx = certs
    server_side = []

    class Sink(Record):
        def connection_made(self, transport):
            super().connection_made(transport)
            server_side.append(self)
            transport.pause_reading()  # let the client's buffers fill

    class Writer(Record):
        def __init__(self):
            super().__init__()
            self.flow = []
            self.resumed = asyncio.Event()

        def pause_writing(self):
            self.flow.append("pause")

        def resume_writing(self):
            self.flow.append("resume")
            self.resumed.set()

    server, port = await serve(Sink, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx, factory=Writer)
        transport.set_write_buffer_limits(high=64 * 1024)
        assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        payload = os.urandom(8 * 1024 * 1024)
        # The first large write goes through to the socket transport's buffer (that pauses
        # the TLS layer); the records of the next ones wait in the TLS layer and pause the
        # application once they pass its high-water mark.
        sent = 0
        while sent < len(payload) and not proto.flow:
            transport.write(payload[sent : sent + 65536])
            sent += 65536
        assert proto.flow == ["pause"]
        assert transport.get_write_buffer_size() >= 64 * 1024
        transport.write(payload[sent:])
        async with asyncio.timeout(10):
            while not server_side:  # TLS 1.3: the server finishes its handshake last
                await asyncio.sleep(0.01)
        sink = server_side[0]
        sink.transport.resume_reading()
        await asyncio.wait_for(proto.resumed.wait(), 20)
        assert proto.flow == ["pause", "resume"]
        await sink.wait_for_bytes(len(payload), timeout=30)
        assert bytes(sink.data) == payload
        transport.close()
        await asyncio.wait_for(proto.lost, 10)


async def test_pause_reading_holds_data_back(certs):
    server_ctx, client_ctx = certs

    class Talker(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            # one request, a burst of answers
            for _ in range(int(data)):
                self.transport.write(b"x" * 1000)

    server, port = await serve(Talker, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx)
        assert transport.is_reading()
        transport.pause_reading()
        assert not transport.is_reading()
        transport.write(b"50")
        await asyncio.sleep(0.3)
        assert bytes(proto.data) == b""
        transport.resume_reading()
        assert transport.is_reading()
        await proto.wait_for_bytes(50_000)
        assert bytes(proto.data) == b"x" * 50_000
        transport.close()
        await asyncio.wait_for(proto.lost, 10)


async def test_buffered_protocol_over_tls(certs):
    server_ctx, client_ctx = certs

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.got = bytearray()
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            # a memoryview: asyncio's SSLProtocol reads into slices of what it gets, and a
            # slice of a bytearray is a copy
            return memoryview(self.buf)

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]
            if len(self.got) >= 300_000 and not self.done.done():
                self.done.set_result(None)

        def connection_lost(self, exc):
            pass

    server, port = await serve(Echo, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx, factory=Buffered)
        payload = os.urandom(300_000)
        transport.write(payload)
        await asyncio.wait_for(proto.done, 20)
        assert bytes(proto.got) == payload
        transport.close()


async def test_start_tls_upgrades_in_place(certs):
    server_ctx, client_ctx = certs
    loop = asyncio.get_running_loop()

    async def handle(reader, writer):
        assert await reader.readexactly(8) == b"STARTTLS"
        writer.write(b"GO")
        await writer.drain()
        await writer.start_tls(server_ctx)
        assert writer.get_extra_info("ssl_object") is not None
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        plain, proto = await loop.create_connection(Record, "127.0.0.1", port)
        plain.write(b"STARTTLS")
        await proto.wait_for_bytes(2)
        assert bytes(proto.data) == b"GO"
        tls_proto = Record()
        tls = await loop.start_tls(plain, tls_proto, client_ctx, server_hostname="localhost")
        # the application protocol is told by the caller (asyncio's start_tls does not call
        # connection_made on it)
        assert tls_proto.events == []
        tls_proto.connection_made(tls)
        assert tls.get_extra_info("ssl_object") is not None
        assert tls.get_extra_info("peername") == ("127.0.0.1", port)
        assert tls.get_protocol() is tls_proto
        tls.write(b"secret")
        await tls_proto.wait_for_bytes(6)
        assert bytes(tls_proto.data) == b"SECRET"
        # a protocol swap on the TLS transport
        second = Record()
        tls.set_protocol(second)
        second.connection_made(tls)
        tls.write(b"again")
        await second.wait_for_bytes(5)
        assert bytes(second.data) == b"AGAIN"
        tls.close()
        await asyncio.wait_for(second.lost, 10)
        with pytest.raises(TypeError):
            await loop.start_tls(plain, Record(), "not a context")


async def test_server_with_many_clients(certs):
    server_ctx, client_ctx = certs
    server, port = await serve(Echo, server_ctx)
    async with server:

        async def one(i):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            message = os.urandom(1000 + i * 97)
            writer.write(message)
            assert await reader.readexactly(len(message)) == message
            writer.close()
            await writer.wait_closed()

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(60))), 60)


async def test_callbacks_run_in_the_connections_context(certs):
    server_ctx, client_ctx = certs
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    class Look(Record):
        def connection_made(self, transport):
            seen.append(("made", var.get()))
            super().connection_made(transport)

        def data_received(self, data):
            seen.append(("data", var.get()))
            super().data_received(data)

    server, port = await serve(Echo, server_ctx)
    async with server:

        async def opener():
            var.set("opener")
            return await connect(port, client_ctx, factory=Look)

        transport, proto = await asyncio.create_task(opener())
        transport.write(b"ping")
        await proto.wait_for_bytes(4)
        transport.close()
        await asyncio.wait_for(proto.lost, 10)
    assert seen[0] == ("made", "opener")
    assert ("data", "opener") in seen


async def test_native_transport_on_our_loop(certs):
    """On our loop the TLS transport is the native one (nothing falls back to Python)."""
    server_ctx, client_ctx = certs
    server, port = await serve(Echo, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx)
        if isinstance(asyncio.get_running_loop(), asyncpg_rs.Loop):
            assert type(transport) is asyncpg_rs._native.TlsTransport
        transport.close()
        await asyncio.wait_for(proto.lost, 10)


# ---------------------------------------------------------------- helpers


def _contexts_without_server():
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return None, client


class CloseOnFirstData(Record):
    """Closes the transport in its first data_received; records whatever comes after."""

    def __init__(self):
        super().__init__()
        self.after_close = bytearray()

    def data_received(self, data):
        if self.transport.is_closing():
            self.after_close += data
            return
        super().data_received(data)
        self.transport.close()


# asyncio's contract: after close() the protocol receives no more data. The stdlib 3.11
# SSLProtocol delivers the plaintext still buffered while it flushes (its _do_flush reads
# into the protocol); ours, like uvloop, drops it: ours only.
@pytest.mark.loops("asyncpg_rs")
async def test_no_data_received_after_close(certs):
    server_ctx, client_ctx = certs
    payload = os.urandom(1 << 20)  # many records: far more than one delivery takes

    class Send(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(payload)

    server, port = await serve(Send, server_ctx)
    async with server:
        transport, proto = await connect(port, client_ctx, factory=CloseOnFirstData)
        assert await asyncio.wait_for(proto.lost, 10) is None
        assert 0 < len(proto.data) < len(payload)
        assert proto.after_close == b""


@contextlib.asynccontextmanager
async def _hello_then_raw_eof(certs_dir, factory, **kwargs):
    """A TLS server thread that sends b"hello", waits for b"world", sends b"extra bytes" and
    then a TCP FIN only (the TLS layer dropped first: no close_notify), holding its end open
    until the client closes; and a client of ``factory`` connected to it. Yields
    (transport, protocol, fin_sent), the last a ``threading.Event`` set once the FIN is
    out; at exit the server thread must have ended."""
    import threading

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs_dir / "server.pem", certs_dir / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))
    listener = socket.create_server(("127.0.0.1", 0))
    fin_sent = threading.Event()

    def serve_one():
        conn, _ = listener.accept()
        conn.settimeout(10)
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")
            assert tls.recv(1024) == b"world"
            tls.sendall(b"extra bytes")
            tls.shutdown(socket.SHUT_WR)
            fin_sent.set()
            assert tls.recv(1024) == b""

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        transport, proto = await connect(port, client_ctx, factory=factory, **kwargs)
        yield transport, proto, fin_sent
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
    finally:
        listener.close()


async def _paused_past_the_fin(proto, fin_sent):
    """Once the FIN is out and the loop has had time to read it, reading still paused: the
    connection is open and only b"hello" has arrived."""
    assert await asyncio.to_thread(fin_sent.wait, 10)
    await asyncio.sleep(0.2)
    assert not proto.lost.done()
    assert bytes(proto.data) == b"hello"


class PauseAfterHello(Record):
    """Answers b"hello" with b"world" and pauses reading."""

    def data_received(self, data):
        super().data_received(data)
        if bytes(self.data) == b"hello":
            self.transport.write(b"world")
            self.transport.pause_reading()


# A raw TCP FIN (no close_notify) while the protocol has reading paused: the connection
# stays open, and resuming delivers the plaintext that came before the FIN, then
# eof_received and connection_lost(None), as when reading was never paused (CPython's
# test_shutdown_timeout_handler_not_set). Both loops.
async def test_raw_eof_while_paused_delivers_the_rest_on_resume(certs_dir):
    async with _hello_then_raw_eof(certs_dir, PauseAfterHello) as (transport, proto, fin_sent):
        await _paused_past_the_fin(proto, fin_sent)
        transport.resume_reading()
        assert await asyncio.wait_for(proto.lost, 10) is None
        assert bytes(proto.data) == b"helloextra bytes"
        assert proto.events == ["made", "data", "eof", "lost"]


# The same FIN to a protocol that never resumes (this one waits for eof_received, which
# comes only once it reads on): the stdlib 3.11 keeps the connection open for ever; ours
# gives up after ssl_shutdown_timeout with connection_lost(TimeoutError). Ours only.
@pytest.mark.loops("asyncpg_rs")
async def test_raw_eof_while_paused_is_bounded_by_the_shutdown_timeout(certs_dir):
    class ResumeOnEof(PauseAfterHello):
        def eof_received(self):
            super().eof_received()
            self.transport.resume_reading()

    async with _hello_then_raw_eof(certs_dir, ResumeOnEof, ssl_shutdown_timeout=0.5) as (
        _,
        proto,
        _,
    ):
        lost = await asyncio.wait_for(proto.lost, 10)
        assert isinstance(lost, TimeoutError), lost
        assert "SSL shutdown timed out" in str(lost)
        assert bytes(proto.data) == b"hello"
        assert proto.events == ["made", "data", "lost"]


# The same FIN, then the protocol closes without resuming: the session ends at once with
# connection_lost(None) and nothing more delivered (the stdlib 3.11 waits for a resume that
# a closed protocol never makes). Ours only.
@pytest.mark.loops("asyncpg_rs")
async def test_close_after_raw_eof_while_paused_ends_at_once(certs_dir):
    async with _hello_then_raw_eof(certs_dir, PauseAfterHello) as (transport, proto, fin_sent):
        await _paused_past_the_fin(proto, fin_sent)
        transport.close()
        assert transport.is_closing()
        # well inside the default ssl_shutdown_timeout (30 s)
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert bytes(proto.data) == b"hello"
