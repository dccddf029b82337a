"""The connection: asyncpg's ``Connection`` API over the Rust protocol core.

Kept in Python on purpose: OpenTelemetry, Sentry and friends patch ``Connection.fetch`` and
its siblings on the class, and users subclass it (``connection_class=``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
import traceback
import typing
import warnings
import weakref

from . import _copy, _introspection, _native, _pooler, _session, connect_utils, exceptions
from . import pipeline as _pipeline
from . import prepared_stmt as _prepared_stmt
from . import transaction as _transaction
from ._callbacks import Callback as _Callback
from ._callbacks import QueryLoggerContext as _QueryLoggerContext
from ._quoting import quote_ident
from ._timeouts import checked_timeout
from .protocol import Record
from .serverversion import split_server_version_string

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable, Sequence

    from . import _typing as _t
    from .cursor import CursorFactory
    from .prepared_stmt import PreparedStatement
    from .transaction import Transaction
    from .types import ServerVersion

__all__ = ("Connection", "connect")

_STMT_NAMES = itertools.count(1)

_INTROSPECTION_ATTEMPTS = 3


class LoggedQuery(typing.NamedTuple):
    """What a query logger (``add_query_logger``) receives after each query."""

    query: str
    args: typing.Any
    timeout: typing.Optional[float]
    elapsed: float
    exception: typing.Optional[BaseException]
    conn_addr: typing.Any
    conn_params: typing.Any


class ConnectionMeta(type):
    """Makes ``isinstance(pool_proxy, Connection)`` true, as in asyncpg."""

    def __instancecheck__(cls, instance):
        mro = type(instance).__mro__
        return Connection in mro or _ConnectionProxy in mro


class _ConnectionProxy:
    """Base of pool connection proxies (see :mod:`asyncpg_rs.pool`)."""

    __slots__ = ()


class Connection(metaclass=ConnectionMeta):
    """A connection to a PostgreSQL server.

    Create one with :func:`asyncpg_rs.connect`. Operations on one connection run one at a
    time; a second concurrent one raises :class:`~asyncpg_rs.exceptions.InterfaceError`.
    """

    __slots__ = (
        "_protocol",
        "_transport",
        "_loop",
        "_addr",
        "_config",
        "_params",
        "_stmt_cache",
        "_session",
        "_stmts_to_close",
        "_listeners",
        "_log_listeners",
        "_query_loggers",
        "_termination_listeners",
        "_server_version",
        "_server_caps",
        "_intro_query",
        "_reset_query",
        "_closed_fired",
        "_source_traceback",
        "_cache_inline",
        "__weakref__",
    )

    def __init__(
        self,
        protocol: _native.PGProtocol,
        transport: asyncio.BaseTransport,
        loop: asyncio.AbstractEventLoop,
        addr: str | tuple[str, int],
        config: connect_utils.ClientConfiguration,
        params: connect_utils.ConnectionParameters,
    ) -> None:
        self._protocol = protocol
        self._transport = transport
        self._loop = loop
        self._addr = addr
        self._config = config
        self._params = params
        # what cursors, statements, transactions, COPY and the pool use (see _session.py)
        record_class = getattr(config, "record_class", None) or Record
        self._session = _session.Session(self, protocol, loop, addr, config, params, record_class)
        # asyncpg's names for the session's containers (the same objects), which code
        # written against asyncpg reads
        self._stmt_cache = self._session.stmt_cache
        self._stmts_to_close = self._session.stmts_to_close
        self._listeners = self._session.listeners
        self._log_listeners = self._session.log_listeners
        self._query_loggers = self._session.query_loggers
        self._termination_listeners = set()
        self._server_version = None
        self._server_caps = None
        self._intro_query = None
        self._reset_query = None
        self._closed_fired = False
        # where a connection was made, for the unclosed-connection warning (debug mode only:
        # extracting the stack costs more than the rest of __init__)
        self._source_traceback = _origin() if loop.get_debug() else None
        # the hot path reads the statement cache itself unless a subclass wraps
        # _get_statement (instrumentation, tests), which must then see every query
        self._cache_inline = type(self)._get_statement is Connection._get_statement
        self_ref = weakref.ref(self)
        protocol.set_callbacks(
            on_notice=functools.partial(_dispatch, self_ref, "_on_notice"),
            on_notification=functools.partial(_dispatch, self_ref, "_on_notification"),
            on_lost=functools.partial(_dispatch, self_ref, "_on_connection_lost"),
        )

    # asyncpg's names for the session's state, which code written against asyncpg reads
    @property
    def _top_xact(self) -> typing.Any:
        return self._session.top_xact

    @_top_xact.setter
    def _top_xact(self, xact: typing.Any) -> None:
        self._session.top_xact = xact

    @property
    def _aborted(self) -> bool:
        return self._session.aborted

    @property
    def _pool_release_ctr(self) -> int:
        return self._session.release_ctr

    @property
    def _proxy(self) -> typing.Any:
        return self._session.proxy

    def __del__(self):
        if not self.is_closed() and self._protocol is not None:
            if self._source_traceback is not None:
                msg = f"unclosed connection {self!r}; created at:\n {self._source_traceback}"
            else:
                msg = (
                    f"unclosed connection {self!r}; run in asyncio debug mode to show "
                    "the traceback of connection origin"
                )
            warnings.warn(msg, ResourceWarning, stacklevel=2)
            try:
                if not self._loop.is_closed():
                    self._protocol.abort()
            except Exception:  # noqa: BLE001 - interpreter shutdown: best effort only
                pass

    # ------------------------------------------------------------------ info

    def get_server_pid(self) -> int:
        """The process id of the server backend serving this connection."""
        return self._protocol.get_server_pid()

    def get_server_version(self) -> ServerVersion:
        """The server version as a :class:`~asyncpg_rs.types.ServerVersion` named tuple."""
        if self._server_version is None:
            self._server_version = split_server_version_string(
                self._protocol.get_settings().get("server_version", "0")
            )
        return self._server_version

    def get_settings(self) -> _ConnectionSettings:
        """The server's current run-time parameters (ParameterStatus), as a settings object."""
        return _ConnectionSettings(self._protocol.get_settings())

    def get_reset_query(self) -> str:
        """The SQL that :meth:`reset` runs to return the session to a clean state."""
        if self._reset_query is None:
            self._reset_query = (
                "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"
            )
        return self._reset_query

    def is_closed(self) -> bool:
        """Whether the connection is closed."""
        return self._session.aborted or self._protocol.is_closed()

    def is_in_transaction(self) -> bool:
        """Whether the connection is inside a transaction block."""
        return self._protocol.is_in_transaction()

    # ------------------------------------------------------------------ listeners

    async def add_listener(self, channel: str, callback: _t.Listener) -> None:
        """Listen for notifications on ``channel``.

        ``callback(connection, pid, channel, payload)`` may be a plain function or a coroutine
        function; it runs for every NOTIFY on the channel.
        """
        self._check_open()
        listeners = self._session.listeners
        if channel not in listeners:
            if self._session.pooled:
                warnings.warn(_pooler.POOLED_LISTEN_WARNING, RuntimeWarning, stacklevel=2)
            await self.fetch(f"LISTEN {quote_ident(channel)}")
            listeners[channel] = set()
        listeners[channel].add(_Callback.from_callable(callback))

    async def remove_listener(self, channel: str, callback: _t.Listener) -> None:
        """Remove a listener added with :meth:`add_listener` (matched by equality)."""
        if self.is_closed():
            return
        listeners = self._session.listeners
        if channel not in listeners:
            return
        cb = _Callback.from_callable(callback)
        if cb not in listeners[channel]:
            return
        listeners[channel].remove(cb)
        if not listeners[channel]:
            del listeners[channel]
            await self.fetch(f"UNLISTEN {quote_ident(channel)}")

    def add_log_listener(self, callback: _t.LogListener) -> None:
        """Receive server NOTICE/WARNING messages: ``callback(connection, message)``."""
        if self.is_closed():
            raise exceptions.InterfaceError("connection is closed")
        self._session.log_listeners.add(_Callback.from_callable(callback))

    def remove_log_listener(self, callback: _t.LogListener) -> None:
        """Remove a listener added with :meth:`add_log_listener`."""
        self._session.log_listeners.discard(_Callback.from_callable(callback))

    def add_termination_listener(self, callback: _t.TerminationListener) -> None:
        """Call ``callback(connection)`` once when the connection is closed or lost."""
        self._termination_listeners.add(_Callback.from_callable(callback))

    def remove_termination_listener(self, callback: _t.TerminationListener) -> None:
        """Remove a listener added with :meth:`add_termination_listener`."""
        self._termination_listeners.discard(_Callback.from_callable(callback))

    def add_query_logger(self, callback: _t.QueryLogger) -> None:
        """Call ``callback(LoggedQuery)`` after every query this connection runs."""
        self._session.query_loggers.add(_Callback.from_callable(callback))

    def remove_query_logger(self, callback: _t.QueryLogger) -> None:
        """Remove a logger added with :meth:`add_query_logger`."""
        self._session.query_loggers.discard(_Callback.from_callable(callback))

    def query_logger(self, callback: _t.QueryLogger) -> _QueryLoggerContext:
        """Context manager that adds ``callback`` as a query logger for its duration."""
        return _QueryLoggerContext(self, callback)

    # ------------------------------------------------------------------ transactions

    def transaction(
        self,
        *,
        isolation: _t.IsolationLevel | None = None,
        readonly: bool = False,
        deferrable: bool = False,
    ) -> Transaction:
        """A :class:`~asyncpg_rs.transaction.Transaction`; use it with ``async with``.

        Nested transactions become savepoints.
        """
        self._check_open()
        return _transaction.Transaction(self, isolation, readonly, deferrable)

    # ------------------------------------------------------------------ queries

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        """Execute an SQL command (or commands); returns the status of the last one
        (e.g. ``'INSERT 0 1'``).

        Without arguments the simple-query protocol is used, so several statements separated
        by semicolons are allowed.
        """
        if not args:
            self._check_open()
            if self._session.query_loggers:
                return await self._logged(query, args, timeout, self._simple_query, query, timeout)
            return await self._simple_query(query, timeout)
        _, status, _ = await self._execute(query, args, 0, timeout, return_status=True)
        return status

    async def executemany(
        self, command: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None:
        """Run ``command`` for each sequence of arguments in ``args``, atomically.

        All executions are pipelined with a single Sync: if one fails, none takes effect.
        """
        self._check_open()
        return await self._executemany(command, args, timeout)

    def pipeline(self, *, atomic: bool = False, timeout: float | None = None) -> _pipeline.Pipeline:
        """Statements sent together, without waiting for each other's replies: see
        :class:`~asyncpg_rs.pipeline.Pipeline` and docs/guide.md, "Pipelines"."""
        self._check_open()
        return _pipeline.Pipeline(self, atomic=atomic, timeout=timeout)

    async def fetch_many_queries(
        self,
        queries: Iterable[_pipeline.QueryItem] | AsyncIterable[_pipeline.QueryItem],
        *,
        timeout: float | None = None,
        atomic: bool = False,
        record_class: type[Record] | None = None,
        return_exceptions: bool = False,
    ) -> list[typing.Any]:
        """Run every ``(query, args)`` (or bare query) of ``queries``, an iterable or async
        iterable consumed as it goes, in one pipeline; returns each one's rows (as ``fetch``)
        in order. The first failure is raised once all are done, unless
        ``return_exceptions`` (errors in their statements' places). See :meth:`pipeline`."""
        self._check_open()
        return await _pipeline.fetch_many_queries(
            self,
            queries,
            timeout=timeout,
            atomic=atomic,
            record_class=record_class,
            return_exceptions=return_exceptions,
        )

    @typing.overload
    async def fetch(
        self, query: str, *args: object, timeout: float | None = ..., record_class: None = ...
    ) -> list[Record]: ...
    @typing.overload
    async def fetch(
        self,
        query: str,
        *args: object,
        timeout: float | None = ...,
        record_class: type[_t.OtherRecordT],
    ) -> list[_t.OtherRecordT]: ...
    @typing.overload
    async def fetch(
        self,
        query: str,
        *args: object,
        timeout: float | None = ...,
        record_class: type[Record] | None = ...,
    ) -> list[Record]: ...
    async def fetch(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,
        record_class: type[Record] | None = None,
    ) -> list[typing.Any]:
        """Run a query and return all result rows as a list of Records."""
        return await self._execute(query, args, 0, timeout, record_class=record_class)

    async def fetchval(
        self, query: str, *args: object, column: int = 0, timeout: float | None = None
    ) -> typing.Any:
        """Run a query and return one value from the first row (``None`` if no rows)."""
        rows = await self._execute(query, args, 1, timeout)
        if not rows:
            return None
        return rows[0][column]

    @typing.overload
    async def fetchrow(
        self, query: str, *args: object, timeout: float | None = ..., record_class: None = ...
    ) -> Record | None: ...
    @typing.overload
    async def fetchrow(
        self,
        query: str,
        *args: object,
        timeout: float | None = ...,
        record_class: type[_t.OtherRecordT],
    ) -> _t.OtherRecordT | None: ...
    @typing.overload
    async def fetchrow(
        self,
        query: str,
        *args: object,
        timeout: float | None = ...,
        record_class: type[Record] | None = ...,
    ) -> Record | None: ...
    async def fetchrow(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,
        record_class: type[Record] | None = None,
    ) -> typing.Any:
        """Run a query and return the first row, or ``None``."""
        rows = await self._execute(query, args, 1, timeout, record_class=record_class)
        if not rows:
            return None
        return rows[0]

    @typing.overload
    async def fetchmany(
        self,
        query: str,
        args: Iterable[Sequence[object]],
        *,
        timeout: float | None = ...,
        record_class: None = ...,
    ) -> list[Record]: ...
    @typing.overload
    async def fetchmany(
        self,
        query: str,
        args: Iterable[Sequence[object]],
        *,
        timeout: float | None = ...,
        record_class: type[_t.OtherRecordT],
    ) -> list[_t.OtherRecordT]: ...
    @typing.overload
    async def fetchmany(
        self,
        query: str,
        args: Iterable[Sequence[object]],
        *,
        timeout: float | None = ...,
        record_class: type[Record] | None = ...,
    ) -> list[Record]: ...
    async def fetchmany(
        self,
        query: str,
        args: Iterable[Sequence[object]],
        *,
        timeout: float | None = None,
        record_class: type[Record] | None = None,
    ) -> list[typing.Any]:
        """Run ``query`` for each argument sequence in ``args`` and return all rows.

        The executions are pipelined and atomic, as with :meth:`executemany`.
        """
        self._check_open()
        if record_class is not None:
            _check_record_class(record_class)
        record_class = record_class or self._session.record_class
        return await self._executemany(
            query, args, timeout, record_class=record_class, want_rows=True
        )

    @typing.overload
    async def prepare(
        self,
        query: str,
        *,
        name: str | None = ...,
        timeout: float | None = ...,
        record_class: None = ...,
    ) -> PreparedStatement[Record]: ...
    @typing.overload
    async def prepare(
        self,
        query: str,
        *,
        name: str | None = ...,
        timeout: float | None = ...,
        record_class: type[_t.OtherRecordT],
    ) -> PreparedStatement[_t.OtherRecordT]: ...
    @typing.overload
    async def prepare(
        self,
        query: str,
        *,
        name: str | None = ...,
        timeout: float | None = ...,
        record_class: type[Record] | None = ...,
    ) -> PreparedStatement[Record]: ...
    async def prepare(
        self,
        query: str,
        *,
        name: str | None = None,
        timeout: float | None = None,
        record_class: type[Record] | None = None,
    ) -> PreparedStatement[typing.Any]:
        """Create a :class:`~asyncpg_rs.prepared_stmt.PreparedStatement` for ``query``."""
        self._check_open()
        return await self._prepare(
            query, name=name, timeout=timeout, use_cache=False, record_class=record_class
        )

    async def _prepare(self, query, *, name=None, timeout=None, use_cache=False, record_class=None):
        timeout = checked_timeout(timeout)
        if record_class is not None:
            _check_record_class(record_class)
        if name is not None:
            named = name
        else:
            # without a statement cache the connection may sit behind a transaction-mode
            # pooler: use the unnamed statement, which is re-parsed with each Bind
            named = self._config.statement_cache_size > 0 and not self._session.pooled
        stmt = await self._get_statement(query, timeout, named=named, use_cache=use_cache)
        return _prepared_stmt.PreparedStatement(self, query, stmt, record_class)

    @typing.overload
    def cursor(
        self,
        query: str,
        *args: object,
        prefetch: int | None = ...,
        timeout: float | None = ...,
        record_class: None = ...,
    ) -> CursorFactory[Record]: ...
    @typing.overload
    def cursor(
        self,
        query: str,
        *args: object,
        prefetch: int | None = ...,
        timeout: float | None = ...,
        record_class: type[_t.OtherRecordT],
    ) -> CursorFactory[_t.OtherRecordT]: ...
    @typing.overload
    def cursor(
        self,
        query: str,
        *args: object,
        prefetch: int | None = ...,
        timeout: float | None = ...,
        record_class: type[Record] | None = ...,
    ) -> CursorFactory[Record]: ...
    def cursor(
        self,
        query: str,
        *args: object,
        prefetch: int | None = None,
        timeout: float | None = None,
        record_class: type[Record] | None = None,
    ) -> CursorFactory[typing.Any]:
        """A cursor factory for ``query``; iterate it with ``async for`` inside a transaction,
        or ``await`` it for a :class:`~asyncpg_rs.cursor.Cursor`."""
        self._check_open()
        from . import cursor as _cursor

        return _cursor.CursorFactory(self, query, None, args, prefetch, timeout, record_class)

    async def copy_from_table(
        self,
        table_name: str,
        *,
        output: _t.CopyOutput,
        columns: Iterable[str] | None = None,
        schema_name: str | None = None,
        timeout: float | None = None,
        format: _t.CopyFormat | None = None,
        oids: int | None = None,
        delimiter: str | None = None,
        null: str | None = None,
        header: bool | None = None,
        quote: str | None = None,
        escape: str | None = None,
        force_quote: bool | Iterable[str] | None = None,
        encoding: str | None = None,
    ) -> str:
        """Copy a table's contents to ``output`` (a path, a binary file object or a
        coroutine function called with each chunk); returns the COPY status."""
        return await _copy.copy_from_table(**locals())

    async def copy_from_query(
        self,
        query: str,
        *args: object,
        output: _t.CopyOutput,
        timeout: float | None = None,
        format: _t.CopyFormat | None = None,
        oids: int | None = None,
        delimiter: str | None = None,
        null: str | None = None,
        header: bool | None = None,
        quote: str | None = None,
        escape: str | None = None,
        force_quote: bool | Iterable[str] | None = None,
        encoding: str | None = None,
    ) -> str:
        """Copy the results of ``query`` to ``output`` (see :meth:`copy_from_table`)."""
        return await _copy.copy_from_query(**locals())

    async def copy_to_table(
        self,
        table_name: str,
        *,
        source: _t.CopySource,
        columns: Iterable[str] | None = None,
        schema_name: str | None = None,
        timeout: float | None = None,
        format: _t.CopyFormat | None = None,
        oids: int | None = None,
        freeze: bool | None = None,
        delimiter: str | None = None,
        null: str | None = None,
        header: bool | None = None,
        quote: str | None = None,
        escape: str | None = None,
        force_quote: bool | Iterable[str] | None = None,
        force_not_null: Iterable[str] | None = None,
        force_null: Iterable[str] | None = None,
        encoding: str | None = None,
        where: str | None = None,
    ) -> str:
        """Copy data from ``source`` (a path, a file object, an async iterable of bytes or
        a bytes-like object) into a table; returns the COPY status."""
        return await _copy.copy_to_table(**locals())

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: _t.CopyRecords,
        columns: Iterable[str] | None = None,
        schema_name: str | None = None,
        timeout: float | None = None,
        where: str | None = None,
    ) -> str:
        """Copy ``records`` (a sync or async iterable of sequences) into a table using the
        binary COPY format; a bad record raises DataError and nothing is copied."""
        return await _copy.copy_records_to_table(**locals())

    async def reload_schema_state(self) -> None:
        """Forget cached statements and introspected types (after ``ALTER TYPE`` and such)."""
        self._protocol.clear_types()
        self._drop_global_statement_cache()

    async def set_type_codec(
        self,
        typename: str,
        *,
        schema: str = "public",
        encoder: typing.Callable[[typing.Any], typing.Any],
        decoder: typing.Callable[[typing.Any], typing.Any],
        format: typing.Literal["text", "binary", "tuple"] = "text",
    ) -> None:
        """Use ``encoder``/``decoder`` for values of ``schema.typename``.

        With ``format='text'`` they work on ``str`` in PostgreSQL's text form, with
        ``'binary'`` on ``bytes`` in its binary form, and with ``'tuple'`` on a tuple: for
        ``date`` ``(days since 2000-01-01,)``, ``time`` ``(microseconds,)``, ``timetz``
        ``(microseconds, zone offset in seconds west of UTC)``, ``timestamp`` and
        ``timestamptz`` ``(microseconds since 2000-01-01 (UTC),)`` with ``±(2**63 - 1)``
        for infinity (``±(2**31 - 1)`` for dates), ``interval`` ``(months, days,
        microseconds)``, and a composite type's attribute values. Arrays of the type use
        the codec for their elements.
        """
        self._check_open()
        await _introspection.set_type_codec(self, typename, schema, encoder, decoder, format)

    async def reset_type_codec(self, typename: str, *, schema: str = "public") -> None:
        """Undo :meth:`set_type_codec` / :meth:`set_builtin_type_codec` for the type."""
        self._check_open()
        await _introspection.reset_type_codec(self, typename, schema)

    async def set_builtin_type_codec(
        self,
        typename: str,
        *,
        schema: str = "public",
        codec_name: str,
        format: str | None = None,
    ) -> None:
        """Handle ``schema.typename`` with a builtin codec, e.g. an extension type like
        ``hstore`` (``codec_name='pg_contrib.hstore'``) or ``citext`` (``'text'``)."""
        self._check_open()
        await _introspection.set_builtin_type_codec(self, typename, schema, codec_name, format)

    async def _introspect_types(self, oids, timeout, fetch=None):
        """Teach the protocol the types ``oids`` and everything they are built from, with
        one query per level of dependencies. ``fetch(sql, arg)`` runs the catalog query
        (a pipeline runs it inside itself); by default ``self.fetch``."""
        await _introspection.introspect_types(self, oids, timeout, fetch)

    async def reset(self, *, timeout: float | None = None) -> None:
        """Return the session to a clean state: roll back, close cursors, unlisten, reset
        settings and advisory locks."""
        self._check_open()
        await self.execute(self._session.take_reset_query(), timeout=timeout)

    async def close(self, *, timeout: float | None = None) -> None:
        """Close the connection gracefully.

        A query still running is cancelled first (its caller gets ``QueryCanceledError``);
        then Terminate is sent and the server closes the connection. With ``timeout``, a
        server that does not finish in time gets the connection aborted and
        ``asyncio.TimeoutError`` is raised.
        """
        try:
            if not self.is_closed():
                proto = self._protocol
                budget = 60.0 if timeout is None else timeout
                started = self._loop.time()
                if proto.is_busy():
                    self._session.cancel_current_command()
                    try:
                        await asyncio.wait_for(asyncio.shield(proto.wait_idle()), budget)
                    except asyncio.TimeoutError:
                        pass
                closed = proto.wait_closed()
                proto.terminate(graceful=True)
                remaining = max(budget - (self._loop.time() - started), 0.001)
                try:
                    await asyncio.wait_for(closed, remaining)
                except asyncio.TimeoutError:
                    proto.abort()
                    if timeout is not None:
                        raise
        finally:
            self._cleanup()

    def terminate(self) -> None:
        """Close the connection at once."""
        if not self.is_closed():
            self._session.aborted = True
            self._protocol.abort()
        self._cleanup()

    # ----------------------------------------------------------------- internals

    def _check_open(self):
        if self.is_closed():
            raise exceptions.InterfaceError("connection is closed")

    def _drop_global_statement_cache(self):
        self._stmt_cache.clear()

    def _mark_stmts_as_closed(self):
        self._session.mark_statements_closed()

    def _cleanup(self):
        session = self._session
        session.cancel_background_tasks()
        self._mark_stmts_as_closed()
        session.listeners.clear()
        session.log_listeners.clear()
        if not self._closed_fired:
            self._closed_fired = True
            self._call_termination_listeners()

    def _call_termination_listeners(self):
        listeners = list(self._termination_listeners)
        self._termination_listeners.clear()
        con = self._session.proxy or self
        for cb in listeners:
            cb.call(self._loop, con)

    def _on_connection_lost(self, exc):
        self._cleanup()

    def _on_notice(self, fields):
        log_listeners = self._session.log_listeners
        if not log_listeners:
            return
        msg = exceptions.PostgresLogMessage.new(fields)
        con = self._session.proxy or self
        for cb in list(log_listeners):
            cb.call(self._loop, con, msg)

    def _on_notification(self, pid, channel, payload):
        cbs = self._session.listeners.get(channel)
        if not cbs:
            return
        con = self._session.proxy or self
        for cb in list(cbs):
            cb.call(self._loop, con, pid, channel, payload)

    async def _simple_query(self, query, timeout):
        if timeout is not None:
            timeout = checked_timeout(timeout)
        session = self._session
        await session.ensure_idle(timeout)
        # through the protocol's asyncpg-named step, which instrumentation wraps
        result = await session.wait(self._protocol.query(query), timeout)
        if result is None:
            return ""
        return result

    async def _get_statement(
        self,
        query,
        timeout,
        *,
        named=False,
        use_cache=True,
        ignore_custom_codec=False,
        record_class=None,
    ):
        if use_cache:
            stmt = self._stmt_cache.get(query)
            if stmt is not None:
                return stmt
        await self._session.ensure_idle(timeout)
        cache = (
            use_cache
            and self._config.statement_cache_size > 0
            and (
                not self._config.max_cacheable_statement_size
                or len(query) <= self._config.max_cacheable_statement_size
            )
        )
        if isinstance(named, str):
            name = named
        elif (named or cache) and not self._session.pooled:
            name = f"__asyncpg_rs_stmt_{self._session.stmt_prefix}_{next(_STMT_NAMES):x}__"
        else:
            name = ""
        state = await self._session.wait(self._protocol.prepare(name, query), timeout)
        # the known types can be forgotten while introspection runs (reload_schema_state,
        # a codec change): what is unknown after the rebind is introspected again
        for _ in range(_INTROSPECTION_ATTEMPTS):
            unknown = state.unknown_oids()
            if not unknown:
                break
            await self._introspect_types(unknown, timeout)
            state = self._protocol.rebind_codecs(state)
        stmt = _session.StatementRef(state, query)
        if cache:
            self._stmt_cache.put(query, stmt)
        return stmt

    async def _execute(
        self,
        query: str,
        args: typing.Sequence[typing.Any],
        limit: int,
        timeout: typing.Optional[float],
        return_status: bool = False,
        ignore_custom_codec: bool = False,
        record_class: typing.Optional[type] = None,
    ) -> typing.Any:
        """Prepare ``query`` through the statement cache and run it with ``args``.

        asyncpg's name and signature, which instrumentation (Sentry) wraps: ``fetch``,
        ``fetchrow``, ``fetchval`` and ``execute`` with arguments all go through it. Returns
        the rows (``limit`` 0: all), or with ``return_status`` ``(rows, status, True)`` as
        asyncpg's does, the rows then left undecoded (``execute`` discards them).
        ``ignore_custom_codec`` is accepted for asyncpg's callers and has no effect here.
        The three options may also be passed by position (asyncpg makes them keyword-only):
        defaults of keyword-only parameters are looked up in a dict on every call, which
        cost the hot path nearly 1% of its instructions.
        """
        session = self._session
        # fetch, fetchrow, fetchval and execute leave this check to us: a call of
        # _check_open and is_closed was about 4% of a cached one-row fetch
        if session.aborted or self._protocol.is_closed():
            raise exceptions.InterfaceError("connection is closed")
        # query loggers are told inline, not through a wrapping coroutine (the hot path)
        log_started = time.monotonic() if session.query_loggers else None
        log_timeout = timeout
        failure = None
        try:
            if timeout is not None:
                timeout = checked_timeout(timeout)
            if record_class is not None:
                _check_record_class(record_class)
            else:
                record_class = session.record_class
            want_rows = not return_status
            proto = self._protocol
            for attempt in (0, 1):
                # The hot path: a cached statement, nothing pending, no timeout: one call
                # into Rust and one await, with no intermediate coroutines.
                stmt = self._stmt_cache.get(query) if self._cache_inline else None
                if stmt is None:
                    if timeout is None:
                        timeout = self._config.command_timeout
                    if timeout is None:
                        stmt = await self._get_statement(query, None)
                    else:
                        # the timeout covers preparing and running, not each separately
                        started = self._loop.time()
                        stmt = await self._get_statement(query, timeout)
                        timeout -= self._loop.time() - started
                        if timeout <= 0:
                            raise asyncio.TimeoutError
                if session.cancel_tasks or session.stmts_to_close:
                    await session.ensure_idle(timeout)
                fut = proto.bind_execute(stmt._state, args, "", limit, record_class, want_rows)
                try:
                    if timeout is None and self._config.command_timeout is None:
                        try:
                            rows = await fut
                        except asyncio.CancelledError:
                            session.cancel_current_command()
                            raise
                    else:
                        rows = await session.wait(fut, timeout)
                except exceptions.PostgresError as e:
                    if attempt == 0 and (
                        self._stale_statement(e, query) or self._lost_statement(e, stmt._state)
                    ):
                        continue
                    raise
                finally:
                    del fut  # see Session.wait
                if return_status:
                    return rows, proto.last_status() or "", True
                return rows
            raise exceptions.InternalClientError("unreachable: statement retry loop")
        except BaseException as e:
            failure = e
            raise
        finally:
            if log_started is not None:
                self._log_query(query, args, log_timeout, log_started, failure)
            failure = None  # the error's traceback holds this frame: no cycle

    def _lost_statement(self, exc, state):
        """Whether ``exc`` says a pooler moved us away from a named statement (see
        _pooler.py): the connection turns pooled, and outside a transaction the caller
        retries (the error came at Parse or Bind, so nothing ran)."""
        if not _pooler.lost_statement(exc, state):
            return False
        self._session.pooled = True
        # the named statements are on servers we can no longer address: forget, not close
        self._stmt_cache.mark_all_closed()
        if self._protocol.is_in_transaction():
            exc.add_note(
                "a connection pooler moved this connection to another server; its prepared "
                "statements are unnamed from now on, so the transaction can be retried"
            )
            return False
        return True

    def _stale_statement(self, exc, query):
        """Whether ``exc`` says a cached plan went stale (after DDL); drops the statement.

        Outside a transaction the caller retries transparently; inside one a retry would
        run against a different snapshot, so the error is raised, as asyncpg does.
        """
        stale_cls = getattr(exceptions, "InvalidCachedStatementError", None)
        is_stale = (stale_cls is not None and isinstance(exc, stale_cls)) or (
            getattr(exc, "sqlstate", None) == "0A000"
            and "cached plan must not change result type" in str(exc)
        )
        if not is_stale:
            return False
        self._stmt_cache.discard(query)
        if self._protocol.is_in_transaction():
            if stale_cls is not None and not isinstance(exc, stale_cls):
                raise stale_cls(str(exc)) from exc
            raise exc
        return True

    async def _executemany(self, command, args, timeout, *, record_class=None, want_rows=False):
        """Prepare ``command`` (through the cache) and stream it for every argument sequence
        with one Sync (``Session.executemany_on``); asyncpg's name, which instrumentation
        wraps."""
        timeout = checked_timeout(timeout)  # before Parse goes out
        stmt = await self._get_statement(command, timeout)
        return await self._session.executemany_on(stmt, args, timeout, record_class, want_rows)

    async def _logged(self, query, args, timeout, func, *fargs):
        started = time.monotonic()
        exc = None
        try:
            return await func(*fargs)
        except BaseException as e:
            exc = e
            raise
        finally:
            self._log_query(query, args, timeout, started, exc)
            exc = None  # the error's traceback holds this frame: no cycle

    def _log_query(
        self,
        query: str,
        args: typing.Any,
        timeout: typing.Optional[float],
        started: float,
        exc: typing.Optional[BaseException],
    ) -> None:
        """Tell the query loggers about a query that started at ``started``
        (``time.monotonic()``) and ended now, failed with ``exc`` or not."""
        record = LoggedQuery(
            query,
            args,
            timeout,
            time.monotonic() - started,
            exc,
            self._addr,
            self._params,
        )
        for cb in list(self._session.query_loggers):
            cb.call(self._loop, record)

    def __repr__(self):
        return "<{}.{} object at 0x{:x}>".format(
            type(self).__module__.replace("asyncpg_rs", "asyncpg", 1),
            type(self).__name__,
            id(self),
        )


# as defined here: instrumentation that wraps them on the class replaces these attributes,
# which the pool's unawaited reset checks for (asyncpg_rs/_session.py)
RESET_PATH = (Connection.reset, Connection.execute, Connection.get_reset_query)


class _ConnectionSettings:
    """Read-only attribute access to server settings: ``con.get_settings().DateStyle``."""

    __slots__ = ("_settings",)

    def __init__(self, settings):
        object.__setattr__(self, "_settings", settings)

    def __getattr__(self, name: str) -> str:
        try:
            return self._settings[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._settings

    def __repr__(self):
        return f"<ConnectionSettings {self._settings!r}>"


def _origin():
    """The caller's stack, outside asyncpg_rs and asyncio, formatted for a warning."""
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [
        f
        for f in traceback.extract_stack()
        if not f.filename.startswith(here) and "/asyncio/" not in f.filename
    ]
    return "".join(traceback.format_list(frames))


def _dispatch(ref, method, *args):
    con = ref()
    if con is not None:
        getattr(con, method)(*args)


def _check_record_class(record_class):
    if record_class is Record:
        return
    if not (isinstance(record_class, type) and issubclass(record_class, Record)):
        raise exceptions.InterfaceError(
            f"record_class is expected to be a subclass of asyncpg.Record, got {record_class!r}"
        )
    if record_class.__new__ is not Record.__new__ or record_class.__init__ is not Record.__init__:
        raise exceptions.InterfaceError("record_class must not redefine __new__ or __init__")


async def connect(
    dsn: str | None = None,
    *,
    host: _t.HostArg | None = None,
    port: _t.PortArg | None = None,
    user: str | None = None,
    password: _t.PasswordArg | None = None,
    passfile: str | os.PathLike[str] | None = None,
    database: str | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    timeout: float = 60,
    statement_cache_size: int = 100,
    max_cached_statement_lifetime: float = 300,
    max_cacheable_statement_size: int = 1024 * 15,
    command_timeout: float | None = None,
    ssl: _t.SSLArg | None = None,
    direct_tls: bool | None = None,
    connection_class: type[_t.ConnectionT] = Connection,  # type: ignore[assignment]
    record_class: type[Record] = Record,
    server_settings: dict[str, str] | None = None,
    target_session_attrs: _t.SessionAttrs | None = None,
    krbsrvname: str | None = None,
    gsslib: _t.GSSLib | None = None,
    service: str | None = None,
    servicefile: str | os.PathLike[str] | None = None,
    load_balance_hosts: typing.Literal["disable", "random"] | None = None,
    channel_binding: typing.Literal["disable", "prefer", "require"] | None = None,
) -> _t.ConnectionT:
    """Connect to a PostgreSQL server and return a :class:`Connection`.

    Accepts asyncpg's arguments with asyncpg's meaning: a ``postgres://`` DSN and/or keyword
    arguments, libpq's environment variables, ``.pgpass`` and ``pg_service.conf`` services,
    ``ssl`` modes, multiple hosts and ``target_session_attrs``. Beyond asyncpg: ``dsn`` may
    also be a libpq ``key=value`` string, and ``load_balance_hosts`` (``"disable"`` or
    ``"random"``, also a DSN parameter) spreads connections over the hosts as libpq 16 does,
    and ``channel_binding`` (``"disable"``, ``"prefer"``, ``"require"``) binds SCRAM
    authentication to the TLS session (SCRAM-SHA-256-PLUS) as libpq does.
    """
    if not issubclass(connection_class, Connection):
        raise exceptions.InterfaceError(
            "connection_class is expected to be a subclass of "
            f"asyncpg.Connection, got {connection_class!r}"
        )
    _check_record_class(record_class)
    if loop is None:
        loop = asyncio.get_running_loop()
    con = await connect_utils._connect(
        loop=loop,
        connection_class=connection_class,
        record_class=record_class,
        dsn=dsn,
        host=host,
        port=port,
        user=user,
        password=password,
        passfile=passfile,
        ssl=ssl,
        direct_tls=direct_tls,
        database=database,
        server_settings=server_settings,
        command_timeout=command_timeout,
        statement_cache_size=statement_cache_size,
        max_cached_statement_lifetime=max_cached_statement_lifetime,
        max_cacheable_statement_size=max_cacheable_statement_size,
        target_session_attrs=target_session_attrs,
        krbsrvname=krbsrvname,
        gsslib=gsslib,
        service=service,
        servicefile=servicefile,
        load_balance_hosts=load_balance_hosts,
        channel_binding=channel_binding,
        timeout=timeout,
    )
    return con


_ = _native  # the native module is imported for its side effect of being loaded first
