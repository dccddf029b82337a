"""Names the public annotations share: the record type variable and argument type aliases.

Only ``RecordT`` exists at run time (the generic classes name it in their bases); everything
else is for type checkers, so importing this module costs nothing beyond ``typing``.
"""

from __future__ import annotations

import typing

from ._native import Record

if typing.TYPE_CHECKING:
    import asyncio
    import os
    import ssl as _ssl
    from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Sequence

    from typing_extensions import TypeAlias, TypeVar

    from . import connect_utils, connection, exceptions, pool

    # The row class of a statement or cursor: Record unless ``record_class=`` names a
    # subclass. The default makes a bare ``PreparedStatement`` mean
    # ``PreparedStatement[Record]``, not ``PreparedStatement[Any]``.
    RecordT = TypeVar("RecordT", bound=Record, default=Record, covariant=True)
    OtherRecordT = TypeVar("OtherRecordT", bound=Record)
    ConnectionT = TypeVar("ConnectionT", bound=connection.Connection, default=connection.Connection)

    # a listener's first argument: the connection, or the pool's proxy of it while lent out
    ConnectionLike: TypeAlias = "connection.Connection | pool.PoolConnectionProxy"
    # what a callback returns is ignored (a coroutine function's coroutine is awaited first)
    CallbackResult: TypeAlias = object
    Listener: TypeAlias = Callable[[ConnectionLike, int, str, str], CallbackResult]
    LogListener: TypeAlias = Callable[
        [ConnectionLike, exceptions.PostgresLogMessage], CallbackResult
    ]
    TerminationListener: TypeAlias = Callable[[ConnectionLike], CallbackResult]
    QueryLogger: TypeAlias = Callable[[connection.LoggedQuery], CallbackResult]

    # COPY OUT writes to a path, a binary file object or a coroutine function given each chunk
    CopyWriter: TypeAlias = Callable[[bytes], Coroutine[typing.Any, typing.Any, object]]
    CopyOutput: TypeAlias = (
        str | bytes | os.PathLike[str] | os.PathLike[bytes] | typing.BinaryIO | CopyWriter
    )
    # COPY IN reads a path, a binary file object, an async iterable of bytes or bytes
    CopySource: TypeAlias = (
        str
        | os.PathLike[str]
        | typing.BinaryIO
        | AsyncIterable[bytes]
        | bytes
        | bytearray
        | memoryview
    )
    CopyFormat: TypeAlias = typing.Literal["text", "csv", "binary"]
    CopyRecords: TypeAlias = Iterable[Sequence[object]] | AsyncIterable[Sequence[object]]

    IsolationLevel: TypeAlias = typing.Literal[
        "serializable", "repeatable_read", "read_committed", "read_uncommitted"
    ]
    SSLMode: TypeAlias = typing.Literal[
        "disable", "prefer", "allow", "require", "verify-ca", "verify-full"
    ]
    SSLArg: TypeAlias = _ssl.SSLContext | SSLMode | bool
    HostArg: TypeAlias = str | list[str] | tuple[str, ...]
    PortArg: TypeAlias = int | str | list[int] | list[str] | list[int | str]
    PasswordArg: TypeAlias = (
        str | Callable[[], str] | Callable[[], Coroutine[typing.Any, typing.Any, str]]
    )
    SessionAttrs: TypeAlias = (
        connect_utils.SessionAttribute
        | typing.Literal["any", "primary", "standby", "prefer-standby", "read-write", "read-only"]
    )
    GSSLib: TypeAlias = typing.Literal["gssapi", "sspi"]
    # pool callbacks: setup/reset get the lent-out proxy, init the new connection
    PoolSetup: TypeAlias = Callable[[pool.PoolConnectionProxy], Awaitable[object]]
    PoolInit: TypeAlias = Callable[[connection.Connection], Awaitable[object]]
    PoolConnect: TypeAlias = Callable[..., Awaitable[connection.Connection]]
    EventLoop: TypeAlias = asyncio.AbstractEventLoop
else:
    # at run time only the generic classes' bases need the type variable
    RecordT = typing.TypeVar("RecordT", bound=Record, covariant=True)
