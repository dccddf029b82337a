"""``loop.sock_*``: awaitable operations on non-blocking sockets.

``sock_recv``, ``sock_recv_into`` and ``sock_sendall`` on a plain ``socket.socket`` run in
Rust (``src/runtime/sockets.rs``): the socket stays registered between operations and the
receive runs when the reactor reports it, with no Python callback. The others (and those
three for socket subclasses or odd buffers) try the operation at once and, only when the
socket would block, hand the reactor an attempt to retry at each readiness of the same
persistent registration (``_sock_wait``).
"""

from __future__ import annotations

import errno
import os
import socket
from operator import methodcaller
from typing import Any

try:
    import ssl
except ImportError:  # pragma: no cover
    ssl = None

_SENDFILE_CHUNK = 256 * 1024


def _check_socket(sock: Any) -> None:
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")
    if sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


def check_sendfile_arguments(file: Any, offset: Any, count: Any) -> None:
    """The argument checks of ``sock_sendfile``/``sendfile``, with asyncio's messages."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


def _is_numeric_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("idna")
        except UnicodeError:
            return False
    if not isinstance(host, str):
        return False
    bare = host.partition("%")[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, bare)
            return True
        except (OSError, ValueError):
            continue
    return False


def _is_numeric_port(port: Any) -> bool:
    if port is None or isinstance(port, int):
        return True
    if isinstance(port, (str, bytes)):
        return port.isdigit()
    return False


class SocketMethods:
    """``sock_*``, ``getaddrinfo`` and ``getnameinfo`` of :class:`Loop`."""

    # ---------------------------------------------------------------- name resolution

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """``socket.getaddrinfo`` off the loop; numeric hosts are answered inline."""
        if _is_numeric_host(host) and _is_numeric_port(port):
            # no DNS involved: the C library answers from the literal without blocking
            return socket.getaddrinfo(host, port, family, type, proto, flags)
        return await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr, flags=0):
        """``socket.getnameinfo`` in the default executor."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    async def _resolve_for(self, sock, address):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return address
        host, port = address[:2]
        infos = await self.getaddrinfo(
            host, port, family=sock.family, type=sock.type, proto=sock.proto
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos[0][4]

    # ---------------------------------------------------------------- waiting helpers

    def _wait_readable(self, sock, attempt, *args):
        """Awaitable for ``attempt(*args)``, retried each time ``sock`` is readable."""
        return self._wait_ready(sock, False, attempt, *args)

    def _wait_writable(self, sock, attempt, *args):
        return self._wait_ready(sock, True, attempt, *args)

    async def _sock_settled(self, sock, fut):
        """The result of the reactor's future ``fut`` for an operation on ``sock``."""
        try:
            return await fut
        except BaseException:
            # cancelled: the reactor would keep the operation, and the socket's io reference
            # (a close() meanwhile deferred), until the socket's next readiness
            self._sock_abandon(sock, fut)
            raise
        finally:
            # a failed future holds its exception, whose traceback holds this frame: without
            # this, a cycle that keeps the socket and the error alive until the GC runs
            del fut

    def _wait_ready(self, sock, write, attempt, *args):
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        # the reactor keeps the socket registered between operations and retries `attempt`
        # itself; the add_reader recipe below is for objects it cannot track
        fut = self._sock_wait(sock, write, attempt, *args)
        if fut is not NotImplemented:
            return self._sock_settled(sock, fut)
        fut = self.create_future()

        def on_ready():
            if fut.done():
                return
            try:
                result = attempt(*args)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                release()
                fut.set_exception(exc)
            else:
                if result is not _AGAIN:
                    # stop watching now, not when the future's callbacks run: the loop would
                    # re-arm the descriptor in between, one system call for nothing
                    release()
                    fut.set_result(result)

        handle = (self._add_writer if write else self._add_reader)(fd, on_ready)
        remove = self.remove_writer if write else self.remove_reader

        def release():
            # another operation on the same socket may have replaced our watch since
            if not handle.cancelled():
                remove(fd)

        def done(_fut):
            release()

        fut.add_done_callback(done)
        return fut

    def _ensure_fd_no_transport(self, fd):
        """Transports own their descriptors; a bare socket operation must not steal one."""
        transport = self._transport_of(fd)
        if transport is not None:
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    # ---------------------------------------------------------------- receiving

    async def sock_recv(self, sock, n):
        """Receive up to ``n`` bytes from ``sock``."""
        result = self._sock_recv(sock, n)
        if type(result) is bytes:
            return result
        if result is not NotImplemented:
            try:
                return await result
            except BaseException:
                self._sock_abandon(sock, result)  # as in _sock_settled, inlined: a hot path
                raise
            finally:
                del result  # no frame -> future -> exception -> traceback -> frame cycle
        _check_socket(sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, methodcaller("recv", n), sock)

    async def sock_recv_into(self, sock, buf):
        """Receive into ``buf``; returns the number of bytes received."""
        result = self._sock_recv_into(sock, buf)
        if type(result) is int:
            return result
        if result is not NotImplemented:
            try:
                return await result
            except BaseException:
                self._sock_abandon(sock, result)  # as in _sock_settled, inlined: a hot path
                raise
            finally:
                del result  # no frame -> future -> exception -> traceback -> frame cycle
        _check_socket(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, methodcaller("recv_into", buf), sock)

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to ``bufsize`` bytes; returns ``(data, address)``."""
        _check_socket(sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, methodcaller("recvfrom", bufsize), sock)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into ``buf``; returns ``(nbytes, address)``."""
        _check_socket(sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, methodcaller("recvfrom_into", buf, nbytes), sock)

    # ---------------------------------------------------------------- sending

    async def sock_sendall(self, sock, data):
        """Send all of ``data``; returns None once the kernel has taken every byte."""
        result = self._sock_sendall(sock, data)
        if result is None:
            return None
        if result is not NotImplemented:
            try:
                return await result
            except BaseException:
                self._sock_abandon(sock, result)  # as in _sock_settled, inlined: a hot path
                raise
            finally:
                del result  # no frame -> future -> exception -> traceback -> frame cycle
        _check_socket(sock)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data).cast("B")
        state = [sent]

        def attempt():
            n = sock.send(view[state[0] :])
            state[0] += n
            return None if state[0] == len(view) else _AGAIN

        await self._wait_writable(sock, attempt)

    async def sock_sendto(self, sock, data, address):
        """Send a datagram to ``address``; returns the number of bytes sent."""
        _check_socket(sock)
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        # the method is looked up at each attempt, as the stdlib does (a test may swap it)
        return await self._wait_writable(sock, methodcaller("sendto", data, address), sock)

    # ---------------------------------------------------------------- connections

    async def sock_connect(self, sock, address):
        """Connect ``sock`` to ``address`` (resolving a host name first, as asyncio does)."""
        _check_socket(sock)
        if sock.family != getattr(socket, "AF_UNIX", None):
            address = await self._resolve_for(sock, address)
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass

        def finished():
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
                return _AGAIN
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")
            return None

        await self._wait_writable(sock, finished)

    async def sock_accept(self, sock):
        """Accept a connection; returns ``(conn, address)`` with ``conn`` non-blocking."""
        _check_socket(sock)

        def attempt():
            conn, address = sock.accept()
            conn.setblocking(False)
            return conn, address

        try:
            return attempt()
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, attempt)

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send ``file`` over ``sock`` with ``os.sendfile``, or by reading and sending."""
        import asyncio

        _check_socket(sock)
        if sock.type != socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        check_sendfile_arguments(file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except asyncio.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        import asyncio

        if not hasattr(os, "sendfile"):
            raise asyncio.SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, OSError) as exc:
            raise asyncio.SendfileNotAvailableError("not a regular file") from exc
        try:
            size = os.fstat(fileno).st_size
        except OSError as exc:
            raise asyncio.SendfileNotAvailableError("not a regular file") from exc
        total = min(count, size - offset) if count else size - offset
        if total <= 0:
            return 0
        state = [offset, 0]

        def attempt():
            remaining = total - state[1]
            try:
                n = os.sendfile(sock.fileno(), fileno, state[0], min(remaining, 1 << 30))
            except OSError as exc:
                if exc.errno in (errno.ENOTSOCK, errno.EINVAL) and state[1] == 0:
                    raise asyncio.SendfileNotAvailableError(
                        "os.sendfile() does not support this file"
                    ) from exc
                raise
            if n == 0:
                return None
            state[0] += n
            state[1] += n
            return None if state[1] >= total else _AGAIN

        try:
            try:
                if attempt() is _AGAIN:
                    await self._wait_writable(sock, attempt)
            except (BlockingIOError, InterruptedError):
                await self._wait_writable(sock, attempt)
        finally:
            if state[1] > 0:
                file.seek(offset + state[1])
        return state[1]

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset:
            file.seek(offset)
        chunk = min(count, _SENDFILE_CHUNK) if count else _SENDFILE_CHUNK
        buf = bytearray(chunk)
        total = 0
        try:
            while True:
                want = min(count - total, chunk) if count else chunk
                if want <= 0:
                    break
                view = memoryview(buf)[:want]
                n = await self.run_in_executor(None, file.readinto, view)
                if not n:
                    break
                await self.sock_sendall(sock, view[:n])
                total += n
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)


class _Again:
    """An attempt that made progress but is not finished: keep waiting."""

    __slots__ = ()


_AGAIN = _Again()
