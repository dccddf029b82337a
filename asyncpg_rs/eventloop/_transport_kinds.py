"""The asyncio transport classes our native transports present themselves as.

asyncio's transport classes are plain classes, not ABCs, so a native type cannot be
registered as their virtual subclass, and it cannot inherit from them either (their
``__slots__`` give them an instance layout of their own). ``isinstance`` has one more door:
when the type check fails it consults the object's ``__class__``. Our transports answer
``__class__`` with one of these classes, so ``isinstance(transport, asyncio.Transport)`` holds
as it does on the stdlib loop, while ``type(transport)`` stays the native type.
"""

from __future__ import annotations

import asyncio

__all__ = [
    "SocketTransport",
    "SSLTransport",
    "ReadPipeTransport",
    "WritePipeTransport",
    "DatagramTransport",
]


class SocketTransport(asyncio.Transport):
    """A connected TCP or Unix stream socket (``asyncpg_rs._native.StreamTransport``)."""

    __slots__ = ()


class SSLTransport(asyncio.Transport):
    """TLS over a stream socket (``asyncpg_rs._native.TlsTransport``); named as asyncio's
    ``_SSLProtocolTransport`` is, since code tells TLS transports by "ssl" in the name."""

    __slots__ = ()


class ReadPipeTransport(asyncio.ReadTransport):
    """The read end of a pipe (``asyncpg_rs._native.StreamTransport``)."""

    __slots__ = ()


class WritePipeTransport(asyncio.Transport):
    """The write end of a pipe (``asyncpg_rs._native.StreamTransport``).

    A full ``Transport``, not only a ``WriteTransport``: the stdlib's write pipe transport
    inherits ``_FlowControlMixin(Transport)``, and code written against it may rely on that.
    """

    __slots__ = ()


class DatagramTransport(asyncio.DatagramTransport, asyncio.Transport):
    """A UDP or Unix datagram socket (``asyncpg_rs._native.DatagramTransport``).

    Also a ``Transport``, as the stdlib's datagram transport is (it shares the selector
    transports' base class), and CPython's own tests check that.
    """

    __slots__ = ()
