"""UDP (and Unix datagram) endpoints: ``create_datagram_endpoint``.

The transport is native (``_native.DatagramTransport``): the reactor hands it readiness
directly; it sends eagerly and queues only what the socket refuses.
"""

from __future__ import annotations

import contextvars
import os
import socket
import stat
from asyncio import trsock

from .._native import DatagramTransport


def _socket_extra(sock):
    extra = {"socket": trsock.TransportSocket(sock)}
    for key, getter in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
        try:
            extra[key] = getter()
        except OSError:
            extra[key] = None
    return extra


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


class DatagramMethods:
    """``create_datagram_endpoint`` of :class:`Loop`."""

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        """Open a datagram endpoint; returns ``(DatagramTransport, protocol)``."""
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            opts = dict(
                local_addr=local_addr,
                remote_addr=remote_addr,
                family=family,
                proto=proto,
                flags=flags,
                reuse_port=reuse_port,
                allow_broadcast=allow_broadcast,
            )
            problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
            if problems:
                raise ValueError(
                    "socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
            r_addr = None
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError("unexpected address family")
                pairs = [((family, proto), (None, None))]
            elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
                for addr in (local_addr, remote_addr):
                    if addr is not None and not isinstance(addr, (str, bytes)):
                        raise TypeError("string is expected")
                if local_addr and local_addr[0] not in (0, "\x00"):
                    try:
                        if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                            os.remove(local_addr)
                    except FileNotFoundError:
                        pass
                pairs = [((family, proto), (local_addr, remote_addr))]
            else:
                infos = {}
                for index, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is None:
                        continue
                    if not (isinstance(addr, tuple) and len(addr) == 2):
                        raise TypeError("2-tuple is expected")
                    found = await self.getaddrinfo(
                        *addr, family=family, type=socket.SOCK_DGRAM, proto=proto, flags=flags
                    )
                    if not found:
                        raise OSError("getaddrinfo() returned empty list")
                    for fam, _, pro, _, address in found:
                        key = (fam, pro)
                        infos.setdefault(key, [None, None])
                        if infos[key][index] is None:
                            infos[key][index] = address
                pairs = [
                    (key, tuple(pair))
                    for key, pair in infos.items()
                    if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
                ]
                if not pairs:
                    raise ValueError("can not get address information")
            exceptions = []
            for (fam, pro), (local_address, remote_address) in pairs:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                    if reuse_port:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if allow_broadcast:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    exceptions.append(exc)
                except BaseException:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                raise exceptions[0]
        protocol = protocol_factory()
        waiter = self.create_future()
        # protocol callbacks run in the context the endpoint is made in (as uvloop's)
        context = contextvars.copy_context()
        transport = DatagramTransport(
            self, sock, protocol, _socket_extra(sock), r_addr, context=context
        )
        self.call_soon(protocol.connection_made, transport, context=context)
        self.call_soon(transport._start)
        self.call_soon(_set_result_unless_cancelled, waiter, None)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        finally:
            # a failed waiter holds the error, whose traceback holds this frame
            del waiter
        return transport, protocol
