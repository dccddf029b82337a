"""A TCP relay on 127.0.0.1 in front of a PostgreSQL server, for fault tests.

The relay runs its own stdlib event loop in a thread, so it keeps working whatever the loop
under test does (blocks, hangs, crashes). Per connection it passes the startup through
unchanged (up to the server's ``after_readies``-th ReadyForQuery: asyncpg_rs's connect takes
three, the startup's and two of its pooler check, see asyncpg_rs/_pooler.py) and then can:

- rewrite the server's answers message by message (``rewrite(kind, raw) -> bytes``; return
  ``Close(prefix)`` to send ``prefix`` and then close both sides: a connection lost
  mid-message);
- deliver everything in tiny writes (``chunk=1``: one byte per TCP segment);
- blackhole (read and drop in both directions), pause (stop forwarding, resume later with
  everything delivered) and reset (RST every connection) on command from the test's thread.

Clients must connect with ``ssl=False``: the relay reads the protocol in clear.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import struct
import threading

READY_FOR_QUERY = b"Z"
# ReadyForQuery messages of an asyncpg_rs connect: the startup, then the pooler check's
# Parse/Describe/Sync and Bind/Execute/Sync (asyncpg_rs/_pooler.py)
CONNECT_READIES = 3


class Close:
    """A rewrite's verdict: send ``prefix``, then close the connection."""

    def __init__(self, prefix: bytes = b""):
        self.prefix = prefix


def message(kind: bytes, body: bytes) -> bytes:
    """A backend message: type byte, length (itself included), body."""
    return kind + struct.pack("!i", len(body) + 4) + body


def data_row(values) -> bytes:
    """A DataRow of raw column values (``None`` is SQL NULL)."""
    out = [struct.pack("!h", len(values))]
    for v in values:
        out.append(struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v)
    return message(b"D", b"".join(out))


class _Link:
    def __init__(self, client_writer, server_writer):
        self.client_writer = client_writer
        self.server_writer = server_writer


class Relay:
    """See the module docstring. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        upstream_host,
        upstream_port,
        rewrite=None,
        chunk=None,
        chunk_delay=0.0,
        after_readies=CONNECT_READIES,
    ):
        self.upstream = (upstream_host, upstream_port)
        self.rewrite = rewrite
        self.after_readies = after_readies
        self.chunk = chunk
        self.chunk_delay = chunk_delay
        self.host = "127.0.0.1"
        self.port = None
        self.connections = 0
        self._links = set()
        self._blackhole = False
        self._loop = None
        self._thread = None
        self._server = None
        self._flowing = None

    # ------------------------------------------------------------ lifecycle

    def start(self):
        started = concurrent.futures.Future()

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(started))
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="wire-relay", daemon=True)
        self._thread.start()
        started.result(10)
        return self

    def stop(self):
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _call(self, func):
        """Run ``func`` on the relay's loop and wait for it."""
        done = concurrent.futures.Future()

        def run():
            try:
                done.set_result(func())
            except BaseException as e:  # handed back to the caller's thread
                done.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return done.result(10)

    # ------------------------------------------------------------ faults on command

    def blackhole(self, on=True):
        """Read and drop everything, both ways, on every connection (old and new)."""

        def apply():
            self._blackhole = on

        self._call(apply)

    def pause(self):
        """Stop forwarding (bytes wait in the relay) until ``resume()``."""
        self._call(self._flowing.clear)

    def resume(self):
        self._call(self._flowing.set)

    def reset_all(self):
        """Reset (RST) every open connection, client and server side."""

        def apply():
            links = list(self._links)
            for link in links:
                for writer in (link.client_writer, link.server_writer):
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        try:
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                        except OSError:
                            pass
                    writer.transport.abort()
            self._links.clear()
            return len(links)

        return self._call(apply)

    # ------------------------------------------------------------ relaying

    async def _serve(self, started):
        self._flowing = asyncio.Event()
        self._flowing.set()
        try:
            self._server = await asyncio.start_server(self._handle, self.host, 0)
        except BaseException as e:
            started.set_exception(e)
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        started.set_result(None)

    async def _shutdown(self):
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.client_writer.transport.abort()
            link.server_writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, client_reader, client_writer):
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        client_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client_writer, server_writer)
        self._links.add(link)
        pumps = [
            asyncio.ensure_future(self._pump_up(client_reader, server_writer)),
            asyncio.ensure_future(self._pump_down(server_reader, client_writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the relay is stopping: the streams' callback would log a cancelled task
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._links.discard(link)
            for writer in (client_writer, server_writer):
                writer.close()

    async def _pump_up(self, reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await self._flowing.wait()
            if self._blackhole:
                continue
            writer.write(data)
            await writer.drain()

    async def _pump_down(self, reader, writer):
        pending = b""
        readies = 0
        started = False
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await self._flowing.wait()
            if self._blackhole:
                continue
            if self.rewrite is None:
                await self._send(writer, data)
                continue
            pending += data
            out = []
            while len(pending) >= 5:
                length = struct.unpack_from("!i", pending, 1)[0]
                if len(pending) < 1 + length:
                    break
                raw, pending = pending[: 1 + length], pending[1 + length :]
                kind = raw[:1]
                if not started:
                    out.append(raw)
                    readies += kind == READY_FOR_QUERY
                    started = readies >= self.after_readies
                    continue
                verdict = self.rewrite(kind, raw)
                if isinstance(verdict, Close):
                    out.append(verdict.prefix)
                    await self._send(writer, b"".join(out))
                    return
                out.append(verdict)
            await self._send(writer, b"".join(out))

    async def _send(self, writer, data):
        if not self.chunk:
            writer.write(data)
            await writer.drain()
            return
        for at in range(0, len(data), self.chunk):
            writer.write(data[at : at + self.chunk])
            await writer.drain()
            await asyncio.sleep(self.chunk_delay)
