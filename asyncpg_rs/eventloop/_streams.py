"""Stream connections and servers: TCP and Unix sockets, TLS on top.

The transport itself is native (``_native.StreamTransport``): readiness goes from the
reactor straight to it, and to the driver's protocol core without Python in between. This
layer resolves addresses, connects (with Happy Eyeballs when asked), accepts, and layers TLS
on top with ``_native.TlsTransport``: compiled, it drives the ``ssl`` module's ``SSLObject``
over memory BIOs as asyncio's ``SSLProtocol`` does, so user ``ssl.SSLContext`` objects work
as with any asyncio loop, and the driver's protocol still receives natively.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import os
import socket
import stat
import sys
from asyncio import trsock

from .._native import DatagramTransport, StreamTransport, TlsTransport
from ._sockets import check_sendfile_arguments

# asyncio added create_unix_server's cleanup_socket in 3.13, on by default; before, the
# socket file stays after the server closes. Same default here, as uvloop does.
_CLEANUP_SOCKET_DEFAULT = sys.version_info >= (3, 13)

_ACCEPT_RETRY_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


def _ssl_kwargs(ssl_handshake_timeout, ssl_shutdown_timeout):
    kwargs = {}
    if ssl_handshake_timeout is not None:
        kwargs["ssl_handshake_timeout"] = ssl_handshake_timeout
    if ssl_shutdown_timeout is not None:
        kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
    return kwargs


def _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout):
    if not ssl:
        if ssl_handshake_timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _check_server_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout):
    if isinstance(ssl, bool):
        raise TypeError("ssl argument must be an SSLContext or None")
    _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)


def _socket_extra(sock, peername=None):
    extra = {"socket": trsock.TransportSocket(sock)}
    try:
        extra["sockname"] = sock.getsockname()
    except OSError:
        extra["sockname"] = None
    if peername is None:
        try:
            peername = sock.getpeername()
        except OSError:
            peername = None
    extra["peername"] = peername
    return extra


def _set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _transport_context(transport):
    """The context a transport of ours runs its protocol in (None for anyone else's)."""
    context = getattr(transport, "_context", None)
    return context if isinstance(context, contextvars.Context) else None


class StreamMethods:
    """Connections, servers, TLS and sendfile of :class:`Loop`."""

    # ---------------------------------------------------------------- transports

    def _make_stream_transport(
        self, sock, protocol, waiter=None, *, peername=None, server=None, context=None
    ):
        sock.setblocking(False)
        _set_nodelay(sock)
        # every protocol callback runs in the context the connection is made in (uvloop's
        # behaviour; see ProtocolContext in src/runtime/transports/common.rs)
        if context is None:
            context = contextvars.copy_context()
        transport = StreamTransport(
            self, sock, protocol, _socket_extra(sock, peername), server, context=context
        )
        if server is not None:
            server._attach(transport)
        self.call_soon(protocol.connection_made, transport, context=context)
        self.call_soon(transport._start)
        if waiter is not None:
            self.call_soon(_set_result_unless_cancelled, waiter, None)
        return transport

    async def _create_connection_transport(
        self,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        server_side=False,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        context = contextvars.copy_context()
        if ssl:
            sslcontext = None if isinstance(ssl, bool) else ssl
            ssl_protocol = TlsTransport(
                self,
                protocol,
                sslcontext,
                waiter,
                server_side,
                server_hostname,
                context=context,
                **_ssl_kwargs(ssl_handshake_timeout, ssl_shutdown_timeout),
            )
            transport = self._make_stream_transport(sock, ssl_protocol, context=context)
            app_transport = ssl_protocol._app_transport
        else:
            transport = app_transport = self._make_stream_transport(
                sock, protocol, waiter, context=context
            )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        finally:
            # a failed waiter holds the error, whose traceback holds this frame
            del waiter
        return app_transport, protocol

    # ---------------------------------------------------------------- client side

    async def _connect_one(self, info, local_infos):
        family, type_, proto, _, address = info
        sock = socket.socket(family=family, type=type_, proto=proto)
        try:
            sock.setblocking(False)
            if local_infos is not None:
                self._bind_local(sock, local_infos)
            await self.sock_connect(sock, address)
            return sock
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _bind_local(sock, local_infos):
        last = None
        for lfamily, _, _, _, laddr in local_infos:
            if lfamily != sock.family:
                continue  # an IPv6 local address cannot serve an IPv4 connect, nor the reverse
            try:
                sock.bind(laddr)
                return
            except OSError as exc:
                msg = f"error while attempting to bind on address {laddr!r}: {exc.strerror.lower()}"
                last = (exc.errno, msg)
        # made here, not kept from the loop: a kept exception raised from this frame would
        # hold the frame through its traceback, a cycle only the GC frees
        if last is None:
            raise OSError(f"no matching local address with family={sock.family!r} found")
        raise OSError(*last)

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        all_errors=False,
    ):
        """Open a TCP connection (optionally TLS) and return ``(transport, protocol)``."""
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None and sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self.getaddrinfo(
                host, port, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            local_infos = None
            if local_addr is not None:
                local_infos = await self.getaddrinfo(
                    *local_addr, family=family, type=socket.SOCK_STREAM, proto=proto, flags=flags
                )
                if not local_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = _interleave_families(infos, interleave)
            sock = await self._connect_first(infos, local_infos, happy_eyeballs_delay, all_errors)
        elif sock is None:
            raise ValueError("host and port was not specified and no sock specified")
        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def _connect_first(self, infos, local_infos, happy_eyeballs_delay, all_errors):
        """A socket connected to the first of ``infos`` that answers (one after another, or
        raced with ``happy_eyeballs_delay``), or the error(s) as asyncio reports them."""
        sock = None
        exceptions = []
        try:
            if happy_eyeballs_delay is None:
                for info in infos:
                    try:
                        sock = await self._connect_one(info, local_infos)
                        break
                    except OSError as exc:
                        exceptions.append(exc)
            else:
                from asyncio import staggered

                sock, _, _ = await staggered.staggered_race(
                    [
                        (lambda info=info: self._connect_and_record(info, local_infos, exceptions))
                        for info in infos
                    ],
                    happy_eyeballs_delay,
                    loop=self,
                )
            if sock is not None:
                return sock
            if all_errors:
                raise ExceptionGroup("create_connection failed", exceptions)  # noqa: F821
            if len(exceptions) == 1:
                raise exceptions[0]
            model = str(exceptions[0])
            if all(str(exc) == model for exc in exceptions):
                raise exceptions[0]
            raise OSError("Multiple exceptions: {}".format(", ".join(map(str, exceptions))))
        finally:
            # the errors' tracebacks hold the frames that hold this list: empty it, or
            # each failed connect leaves a cycle only the GC frees
            exceptions.clear()

    async def _connect_and_record(self, info, local_infos, exceptions):
        try:
            return await self._connect_one(info, local_infos)
        except OSError as exc:
            exceptions.append(exc)
            raise

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Open a Unix-socket connection and return ``(transport, protocol)``."""
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        elif server_hostname is not None:
            raise ValueError("server_hostname is only meaningful with ssl")
        _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wrap an already accepted socket in a transport (server side for TLS)."""
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        _check_ssl_arguments(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            "",
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Upgrade ``transport`` to TLS in place; returns the new (TLS) transport."""
        import ssl as ssl_module

        if not isinstance(sslcontext, ssl_module.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", isinstance(transport, StreamTransport)):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        # the upgraded connection keeps the context it was made in
        context = _transport_context(transport) or contextvars.copy_context()
        ssl_protocol = TlsTransport(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made=False,
            context=context,
            **_ssl_kwargs(ssl_handshake_timeout, ssl_shutdown_timeout),
        )
        # Read nothing into the old protocol between now and the handshake.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        finally:
            # a failed waiter holds the error, whose traceback holds this frame
            del waiter
        return ssl_protocol._app_transport

    # ---------------------------------------------------------------- sendfile

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send ``file`` over ``transport``: ``os.sendfile`` on our socket transports,
        else (with ``fallback``) by reading the file and writing it to the transport."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        if isinstance(transport, DatagramTransport) or not callable(
            getattr(transport, "write", None)
        ):
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        check_sendfile_arguments(file, offset, count)
        if isinstance(transport, StreamTransport) and transport._is_socket:
            try:
                return await self._sendfile_on_transport(transport, file, offset, count)
            except asyncio.SendfileNotAvailableError:
                if not fallback:
                    raise
        elif not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not supported for transport "
                f"{transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_on_transport(self, transport, file, offset, count):
        transport.pause_reading()
        # from now on a write would go in among the file's bytes: it raises, as asyncio's
        transport._set_sendfile_busy(True)
        try:
            await transport._make_empty_waiter()
            sock = transport.get_extra_info("socket")
            fd = sock.fileno()
            # the socket is ours for the duration: the transport is paused and drained
            self._detach_transport(fd)
            try:
                return await self._sock_sendfile_native(sock, file, offset, count)
            finally:
                self._attach_transport(fd, transport)
        finally:
            transport._set_sendfile_busy(False)
            transport.resume_reading()

    async def _sendfile_fallback(self, transport, file, offset, count):
        if offset:
            file.seek(offset)
        blocksize = min(count, 65536) if count else 65536
        buf = bytearray(blocksize)
        total = 0
        try:
            while True:
                want = min(count - total, blocksize) if count else blocksize
                if want <= 0:
                    return total
                view = memoryview(buf)[:want]
                n = await self.run_in_executor(None, file.readinto, view)
                if not n:
                    return total
                await _drained(transport)
                transport.write(bytes(view[:n]))
                total += n
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    # ---------------------------------------------------------------- servers

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        keep_alive=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        """Listen on TCP ``host``/``port`` (or ``sock``); returns a :class:`Server`."""
        _check_server_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = True
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not hasattr(host, "__iter__"):
                hosts = [host]
            else:
                hosts = list(host)
            infos = []
            for h in hosts:
                found = await self.getaddrinfo(
                    h, port, family=family, type=socket.SOCK_STREAM, flags=flags
                )
                if not found:
                    raise OSError(f"getaddrinfo({h!r}) returned empty list")
                infos.extend(found)
            sockets = []
            seen = set()
            try:
                for af, socktype, proto, _, sa in infos:
                    if (af, sa) in seen:
                        continue
                    seen.add((af, sa))
                    try:
                        s = socket.socket(af, socktype, proto)
                    except OSError:
                        continue  # e.g. IPv6 unsupported here
                    sockets.append(s)
                    if reuse_address:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        if not hasattr(socket, "SO_REUSEPORT"):
                            raise ValueError("reuse_port not supported by socket module")
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, True)
                    if keep_alive:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                    if af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                    try:
                        s.bind(sa)
                    except OSError as err:
                        msg = (
                            f"error while attempting to bind on address {sa!r}: "
                            f"{(err.strerror or str(err)).lower()}"
                        )
                        raise OSError(err.errno, msg) from None
            except BaseException:
                for s in sockets:
                    s.close()
                raise
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]
        return await self._serve(
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            start_serving,
        )

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
        cleanup_socket=_CLEANUP_SOCKET_DEFAULT,
    ):
        """Listen on Unix socket ``path`` (or ``sock``); returns a :class:`Server`."""
        _check_server_ssl(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        unlink_path = None
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            abstract = path[0] in (0, "\x00") if path else False
            if not abstract:
                # a stale socket file from an earlier run is replaced, as asyncio does
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)
                except FileNotFoundError:
                    pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
            if not abstract and cleanup_socket:
                st = os.stat(path)
                unlink_path = (path, st.st_ino, st.st_dev)
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            if cleanup_socket:
                name = sock.getsockname()
                if isinstance(name, str) and name and name[0] != "\x00":
                    try:
                        st = os.stat(name)
                        unlink_path = (name, st.st_ino, st.st_dev)
                    except OSError:
                        pass
        return await self._serve(
            [sock],
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            start_serving,
            unlink_path,
        )

    async def _serve(
        self,
        sockets,
        protocol_factory,
        ssl,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
        start_serving,
        unlink_path=None,
    ):
        for sock in sockets:
            sock.setblocking(False)
        server = Server(
            self,
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            unlink_path=unlink_path,
        )
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)
        return server


async def _drained(transport):
    """Wait until ``transport``'s buffer is below its high-water mark."""
    if transport.is_closing():
        raise ConnectionError("Connection closed by peer")
    high = transport.get_write_buffer_limits()[1]
    if transport.get_write_buffer_size() <= high:
        return
    waiter = getattr(transport, "_make_empty_waiter", None)
    if waiter is not None:
        await waiter()
        return
    while transport.get_write_buffer_size() > high:
        if transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        await asyncio.sleep(0.001)


def _interleave_families(infos, first_family_count):
    by_family = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    families = list(by_family.values())
    out = []
    first = families[0]
    out.extend(first[: first_family_count - 1])
    del first[: first_family_count - 1]
    while any(families):
        for fam in families:
            if fam:
                out.append(fam.pop(0))
    return out


class Server(asyncio.AbstractServer):
    """A listening server (what ``create_server`` returns), as ``asyncio.Server``."""

    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        ssl_context,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout,
        unlink_path=None,
    ):
        self._loop = loop
        self._sockets = sockets
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._ssl_kwargs = _ssl_kwargs(ssl_handshake_timeout, ssl_shutdown_timeout)
        self._active_count = 0
        self._clients = set()
        self._waiters = []
        self._serving = False
        self._serving_forever_fut = None
        self._unlink_path = unlink_path
        # accepted connections run their protocols in (a copy of) the context the server
        # was created in, whoever starts serving it
        self._context = contextvars.copy_context()

    def __repr__(self):
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    def _attach(self, transport):
        self._active_count += 1
        self._clients.add(transport)

    def _detach(self, transport=None):
        self._active_count -= 1
        self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock):
        for _ in range(self._backlog):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY_ERRNOS:
                    self._loop.call_exception_handler(
                        {
                            "message": "socket.accept() out of system resource",
                            "exception": exc,
                            "socket": trsock.TransportSocket(sock),
                        }
                    )
                    self._loop.remove_reader(sock.fileno())
                    self._loop.call_later(1.0, self._resume_accepting, sock)
                    return
                raise
            conn.setblocking(False)
            context = self._context.copy()
            if self._ssl_context is None:
                try:
                    protocol = context.run(self._protocol_factory)
                except Exception as exc:
                    conn.close()
                    self._loop.call_exception_handler(
                        {
                            "message": "Error on transport creation for incoming connection",
                            "exception": exc,
                        }
                    )
                    continue
                self._loop._make_stream_transport(
                    conn, protocol, peername=addr, server=self, context=context
                )
            else:
                # the task runs in `context` itself, so the transport it makes copies that
                self._loop.create_task(self._accept_tls(conn, addr), context=context)

    def _resume_accepting(self, sock):
        if self._sockets is not None and self._serving:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def _accept_tls(self, conn, addr):
        loop = self._loop
        protocol = None
        transport = None
        try:
            protocol = self._protocol_factory()
            waiter = loop.create_future()
            # this task runs in the connection's own copy of the server's context
            context = contextvars.copy_context()
            ssl_protocol = TlsTransport(
                loop,
                protocol,
                self._ssl_context,
                waiter,
                True,
                None,
                context=context,
                **self._ssl_kwargs,
            )
            transport = loop._make_stream_transport(
                conn, ssl_protocol, peername=addr, server=self, context=context
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
            finally:
                # a failed waiter holds the error, whose traceback holds this frame
                del waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if loop.get_debug() or not isinstance(exc, (OSError, asyncio.CancelledError)):
                context = {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                }
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                loop.call_exception_handler(context)
            if transport is None:
                conn.close()

    def close(self):
        """Stop listening; accepted connections carry on (see :meth:`close_clients`)."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            try:
                self._loop.remove_reader(sock.fileno())
            except (ValueError, RuntimeError):
                pass
            sock.close()
        if self._unlink_path is not None:
            path, ino, dev = self._unlink_path
            self._unlink_path = None
            try:
                st = os.stat(path)
                if st.st_ino == ino and st.st_dev == dev:
                    os.unlink(path)
            except OSError:
                pass
        self._serving = False
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def close_clients(self):
        """Close every connection this server accepted."""
        for transport in self._clients.copy():
            transport.close()

    def abort_clients(self):
        """Abort every connection this server accepted, dropping unsent data."""
        for transport in self._clients.copy():
            transport.abort()

    def get_loop(self):
        """The loop this server runs on."""
        return self._loop

    def is_serving(self):
        """Whether the server accepts connections."""
        return self._serving

    @property
    def sockets(self):
        """The listening sockets (``asyncio.trsock.TransportSocket`` views)."""
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    async def start_serving(self):
        """Start accepting connections."""
        self._start_serving()
        await asyncio.sleep(0)

    async def serve_forever(self):
        """Accept connections until cancelled; then close the server."""
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        """Wait until the server is closed (and, from Python 3.12 as asyncio, until every
        connection it accepted is gone)."""
        if self._waiters is None:
            return
        if sys.version_info < (3, 12) and self._sockets is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter
