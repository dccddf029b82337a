"""The connection: asyncpg's ``Connection`` API over the Rust protocol core.

Kept in Python on purpose: OpenTelemetry, Sentry and friends patch ``Connection.fetch`` and
its siblings on the class, and users subclass it (``connection_class=``).
"""

from __future__ import annotations

import asyncio
import collections
import decimal
import functools
import itertools
import os
import time
import traceback
import typing
import warnings
import weakref

from . import _copy, _native, connect_utils, exceptions
from . import prepared_stmt as _prepared_stmt
from . import transaction as _transaction
from ._timeouts import checked_timeout
from .protocol import Record
from .protocol import protocol as _protocol_layer
from .serverversion import split_server_version_string

__all__ = ("Connection", "connect")

_STMT_NAMES = itertools.count(1)

# One row per type: what its codec is built from (element, base, subtype or range type in
# `related`; attributes for composites). Everything travels as text, so a custom codec a
# user set on oid or int types cannot get in the way.
_INTROSPECT_SQL = """
SELECT t.oid::text, t.typname::text, t.typtype::text,
       (CASE
         WHEN t.typtype = 'd' THEN t.typbasetype
         WHEN t.typtype = 'r' THEN
           (SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid)
         WHEN t.typtype = 'm' THEN
           (SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid)
         WHEN t.typcategory = 'A' THEN t.typelem
         ELSE 0
       END)::text AS related,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS attr_names,
       ARRAY(SELECT a.atttypid::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS attr_oids,
       (SELECT n.nspname::text FROM pg_catalog.pg_namespace n
        WHERE n.oid = t.typnamespace) AS schema
FROM pg_catalog.pg_type t
WHERE t.oid::text = ANY($1::text[])
"""
# before PostgreSQL 14 there are no multiranges (and no pg_range.rngmultitypid)
_INTROSPECT_SQL_13 = _INTROSPECT_SQL.replace(
    """WHEN t.typtype = 'm' THEN
           (SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid)
         """,
    "",
)


# SQL's names of builtin types, as set_type_codec(schema='pg_catalog') accepts them
_SQL_STANDARD_TYPE_NAMES = {
    "smallint": "int2",
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "decimal": "numeric",
    "real": "float4",
    "double precision": "float8",
    "boolean": "bool",
    "timestamp with timezone": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "timestamp without timezone": "timestamp",
    "timestamp without time zone": "timestamp",
    "time with timezone": "timetz",
    "time with time zone": "timetz",
    "time without timezone": "time",
    "time without time zone": "time",
    "character": "bpchar",
    "character varying": "varchar",
    "bit varying": "varbit",
}


def _as_text(value):
    return value if isinstance(value, str) else str(value)


# set_builtin_type_codec(format='text'): the builtin codecs' text forms, as Python pairs
_TEXT_CODECS = {
    "numeric": (_as_text, decimal.Decimal),
    "int2": (_as_text, int),
    "int4": (_as_text, int),
    "int8": (_as_text, int),
    "float4": (_as_text, float),
    "float8": (_as_text, float),
    "text": (str, str),
    "varchar": (str, str),
    "bpchar": (str, str),
    "name": (str, str),
}


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


class _StatementCache:
    """LRU of prepared statements keyed by query text, honouring the three cache knobs."""

    __slots__ = ("_entries", "_max_size", "_max_lifetime", "_on_evict")

    def __init__(self, max_size, max_lifetime, on_evict):
        self._entries = collections.OrderedDict()
        self._max_size = max_size
        self._max_lifetime = max_lifetime
        self._on_evict = on_evict

    def get(self, query):
        entry = self._entries.get(query)
        if entry is None:
            return None
        stmt, expires = entry
        if expires is not None and time.monotonic() > expires:
            del self._entries[query]
            self._on_evict(stmt)
            return None
        self._entries.move_to_end(query)
        return stmt

    def put(self, query, stmt):
        if self._max_size <= 0:
            return
        expires = time.monotonic() + self._max_lifetime if self._max_lifetime else None
        self._entries[query] = (stmt, expires)
        self._entries.move_to_end(query)
        while len(self._entries) > self._max_size:
            _, (old, _) = self._entries.popitem(last=False)
            self._on_evict(old)

    def discard(self, query):
        entry = self._entries.pop(query, None)
        if entry is not None:
            self._on_evict(entry[0])

    def clear(self):
        entries = list(self._entries.values())
        self._entries.clear()
        for stmt, _ in entries:
            self._on_evict(stmt)

    def mark_all_closed(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)


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
        "_stmts_to_close",
        "_top_xact",
        "_aborted",
        "_listeners",
        "_log_listeners",
        "_termination_listeners",
        "_query_loggers",
        "_server_version",
        "_server_caps",
        "_intro_query",
        "_reset_query",
        "_proxy",
        "_cancel_tasks",
        "_record_class",
        "_closed_fired",
        "_source_traceback",
        "_pool_release_ctr",
        "_cache_inline",
        "__weakref__",
    )

    def __init__(self, protocol, transport, loop, addr, config, params):
        self._protocol = protocol
        self._transport = transport
        self._loop = loop
        self._addr = addr
        self._config = config
        self._params = params
        self._top_xact = None
        self._aborted = False
        self._stmts_to_close = set()
        self._stmt_cache = _StatementCache(
            config.statement_cache_size,
            config.max_cached_statement_lifetime,
            # the set's own method, not a bound method of self: a connection dropped without
            # close() must be freed by its refcount (and warn) without waiting for the GC
            self._stmts_to_close.add,
        )
        self._listeners = {}
        self._log_listeners = set()
        self._termination_listeners = set()
        self._query_loggers = set()
        self._server_version = None
        self._server_caps = None
        self._intro_query = None
        self._reset_query = None
        self._proxy = None
        self._cancel_tasks = set()
        self._record_class = getattr(config, "record_class", None) or Record
        self._closed_fired = False
        # where a connection was made, for the unclosed-connection warning (debug mode only:
        # extracting the stack costs more than the rest of __init__)
        self._source_traceback = _origin() if loop.get_debug() else None
        self._pool_release_ctr = 0
        # the hot path reads the statement cache itself unless a subclass wraps
        # _get_statement (instrumentation, tests), which must then see every query
        self._cache_inline = type(self)._get_statement is Connection._get_statement
        self_ref = weakref.ref(self)
        protocol.set_callbacks(
            on_notice=functools.partial(_dispatch, self_ref, "_on_notice"),
            on_notification=functools.partial(_dispatch, self_ref, "_on_notification"),
            on_lost=functools.partial(_dispatch, self_ref, "_on_connection_lost"),
        )

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

    def get_server_pid(self):
        """The process id of the server backend serving this connection."""
        return self._protocol.get_server_pid()

    def get_server_version(self):
        """The server version as a :class:`~asyncpg_rs.types.ServerVersion` named tuple."""
        if self._server_version is None:
            self._server_version = split_server_version_string(
                self._protocol.get_settings().get("server_version", "0")
            )
        return self._server_version

    def get_settings(self):
        """The server's current run-time parameters (ParameterStatus), as a settings object."""
        return _ConnectionSettings(self._protocol.get_settings())

    def get_reset_query(self):
        """The SQL that :meth:`reset` runs to return the session to a clean state."""
        if self._reset_query is None:
            self._reset_query = (
                "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"
            )
        return self._reset_query

    def is_closed(self):
        """Whether the connection is closed."""
        return self._aborted or self._protocol.is_closed()

    def is_in_transaction(self):
        """Whether the connection is inside a transaction block."""
        return self._protocol.is_in_transaction()

    # ------------------------------------------------------------------ listeners

    async def add_listener(self, channel, callback):
        """Listen for notifications on ``channel``.

        ``callback(connection, pid, channel, payload)`` may be a plain function or a coroutine
        function; it runs for every NOTIFY on the channel.
        """
        self._check_open()
        if channel not in self._listeners:
            await self.fetch(f"LISTEN {_quote_ident(channel)}")
            self._listeners[channel] = set()
        self._listeners[channel].add(_Callback.from_callable(callback))

    async def remove_listener(self, channel, callback):
        """Remove a listener added with :meth:`add_listener` (matched by equality)."""
        if self.is_closed():
            return
        if channel not in self._listeners:
            return
        cb = _Callback.from_callable(callback)
        if cb not in self._listeners[channel]:
            return
        self._listeners[channel].remove(cb)
        if not self._listeners[channel]:
            del self._listeners[channel]
            await self.fetch(f"UNLISTEN {_quote_ident(channel)}")

    def add_log_listener(self, callback):
        """Receive server NOTICE/WARNING messages: ``callback(connection, message)``."""
        if self.is_closed():
            raise exceptions.InterfaceError("connection is closed")
        self._log_listeners.add(_Callback.from_callable(callback))

    def remove_log_listener(self, callback):
        """Remove a listener added with :meth:`add_log_listener`."""
        self._log_listeners.discard(_Callback.from_callable(callback))

    def add_termination_listener(self, callback):
        """Call ``callback(connection)`` once when the connection is closed or lost."""
        self._termination_listeners.add(_Callback.from_callable(callback))

    def remove_termination_listener(self, callback):
        """Remove a listener added with :meth:`add_termination_listener`."""
        self._termination_listeners.discard(_Callback.from_callable(callback))

    def add_query_logger(self, callback):
        """Call ``callback(LoggedQuery)`` after every query this connection runs."""
        self._query_loggers.add(_Callback.from_callable(callback))

    def remove_query_logger(self, callback):
        """Remove a logger added with :meth:`add_query_logger`."""
        self._query_loggers.discard(_Callback.from_callable(callback))

    def query_logger(self, callback):
        """Context manager that adds ``callback`` as a query logger for its duration."""
        return _QueryLoggerContext(self, callback)

    # ------------------------------------------------------------------ transactions

    def transaction(self, *, isolation=None, readonly=False, deferrable=False):
        """A :class:`~asyncpg_rs.transaction.Transaction`; use it with ``async with``.

        Nested transactions become savepoints.
        """
        self._check_open()
        return _transaction.Transaction(self, isolation, readonly, deferrable)

    # ------------------------------------------------------------------ queries

    async def execute(self, query: str, *args, timeout: typing.Optional[float] = None) -> str:
        """Execute an SQL command (or commands); returns the status of the last one
        (e.g. ``'INSERT 0 1'``).

        Without arguments the simple-query protocol is used, so several statements separated
        by semicolons are allowed.
        """
        self._check_open()
        if not args:
            if self._query_loggers:
                return await self._logged(query, args, timeout, self._simple_query, query, timeout)
            return await self._simple_query(query, timeout)
        status, _ = await self._execute(query, args, 0, timeout, return_status=True)
        return status

    async def executemany(self, command: str, args, *, timeout: typing.Optional[float] = None):
        """Run ``command`` for each sequence of arguments in ``args``, atomically.

        All executions are pipelined with a single Sync: if one fails, none takes effect.
        """
        self._check_open()
        return await self._executemany(command, args, timeout)

    async def fetch(self, query, *args, timeout=None, record_class=None) -> list:
        """Run a query and return all result rows as a list of Records."""
        self._check_open()
        _, rows = await self._execute(query, args, 0, timeout, record_class=record_class)
        return rows

    async def fetchval(self, query, *args, column=0, timeout=None):
        """Run a query and return one value from the first row (``None`` if no rows)."""
        self._check_open()
        _, rows = await self._execute(query, args, 1, timeout)
        if not rows:
            return None
        return rows[0][column]

    async def fetchrow(self, query, *args, timeout=None, record_class=None):
        """Run a query and return the first row, or ``None``."""
        self._check_open()
        _, rows = await self._execute(query, args, 1, timeout, record_class=record_class)
        if not rows:
            return None
        return rows[0]

    async def fetchmany(self, query, args, *, timeout=None, record_class=None) -> list:
        """Run ``query`` for each argument sequence in ``args`` and return all rows.

        The executions are pipelined and atomic, as with :meth:`executemany`.
        """
        self._check_open()
        if record_class is not None:
            _check_record_class(record_class)
        return await self._executemany(
            query, args, timeout, record_class=record_class or self._record_class, want_rows=True
        )

    async def prepare(self, query, *, name=None, timeout=None, record_class=None):
        """Create a :class:`~asyncpg_rs.prepared_stmt.PreparedStatement` for ``query``."""
        self._check_open()
        return await self._prepare(
            query, name=name, timeout=timeout, use_cache=False, record_class=record_class
        )

    def _execute(self, query, args, limit, timeout, *, return_status=False, record_class=None):
        """Run ``query`` with ``args`` through the statement cache; an awaitable of
        ``(status, rows)``.

        asyncpg's name and argument order: ``execute`` with arguments and every ``fetch*``
        come through here, which is where instrumentation (Sentry) wraps a query. A plain
        function handing back the coroutine, so that the hot path has no extra frame.
        """
        if self._query_loggers:
            return self._run(query, args, limit, timeout, record_class, not return_status)
        return self._run_unlogged(query, args, limit, timeout, record_class, not return_status)

    async def _prepare(self, query, *, name=None, timeout=None, use_cache=False, record_class=None):
        timeout = checked_timeout(timeout)
        if record_class is not None:
            _check_record_class(record_class)
        if name is not None:
            named = name
        else:
            # without a statement cache the connection may sit behind a transaction-mode
            # pooler: use the unnamed statement, which is re-parsed with each Bind
            named = self._config.statement_cache_size > 0
        stmt = await self._get_statement(query, timeout, named=named, use_cache=use_cache)
        return _prepared_stmt.PreparedStatement(self, query, stmt, record_class)

    def cursor(self, query, *args, prefetch=None, timeout=None, record_class=None):
        """A cursor factory for ``query``; iterate it with ``async for`` inside a transaction,
        or ``await`` it for a :class:`~asyncpg_rs.cursor.Cursor`."""
        self._check_open()
        from . import cursor as _cursor

        return _cursor.CursorFactory(self, query, None, args, prefetch, timeout, record_class)

    async def copy_from_table(
        self,
        table_name,
        *,
        output,
        columns=None,
        schema_name=None,
        timeout=None,
        format=None,
        oids=None,
        delimiter=None,
        null=None,
        header=None,
        quote=None,
        escape=None,
        force_quote=None,
        encoding=None,
    ):
        """Copy a table's contents to ``output`` (a path, a binary file object or a
        coroutine function called with each chunk); returns the COPY status."""
        return await _copy.copy_from_table(
            self,
            table_name,
            output=output,
            columns=columns,
            schema_name=schema_name,
            timeout=timeout,
            format=format,
            oids=oids,
            delimiter=delimiter,
            null=null,
            header=header,
            quote=quote,
            escape=escape,
            force_quote=force_quote,
            encoding=encoding,
        )

    async def copy_from_query(
        self,
        query,
        *args,
        output,
        timeout=None,
        format=None,
        oids=None,
        delimiter=None,
        null=None,
        header=None,
        quote=None,
        escape=None,
        force_quote=None,
        encoding=None,
    ):
        """Copy the results of ``query`` to ``output`` (see :meth:`copy_from_table`)."""
        return await _copy.copy_from_query(
            self,
            query,
            *args,
            output=output,
            timeout=timeout,
            format=format,
            oids=oids,
            delimiter=delimiter,
            null=null,
            header=header,
            quote=quote,
            escape=escape,
            force_quote=force_quote,
            encoding=encoding,
        )

    async def copy_to_table(
        self,
        table_name,
        *,
        source,
        columns=None,
        schema_name=None,
        timeout=None,
        format=None,
        oids=None,
        freeze=None,
        delimiter=None,
        null=None,
        header=None,
        quote=None,
        escape=None,
        force_quote=None,
        force_not_null=None,
        force_null=None,
        encoding=None,
        where=None,
    ):
        """Copy data from ``source`` (a path, a file object, an async iterable of bytes or
        a bytes-like object) into a table; returns the COPY status."""
        return await _copy.copy_to_table(
            self,
            table_name,
            source=source,
            columns=columns,
            schema_name=schema_name,
            timeout=timeout,
            format=format,
            oids=oids,
            freeze=freeze,
            delimiter=delimiter,
            null=null,
            header=header,
            quote=quote,
            escape=escape,
            force_quote=force_quote,
            force_not_null=force_not_null,
            force_null=force_null,
            encoding=encoding,
            where=where,
        )

    async def copy_records_to_table(
        self, table_name, *, records, columns=None, schema_name=None, timeout=None, where=None
    ):
        """Copy ``records`` (a sync or async iterable of sequences) into a table using the
        binary COPY format; a bad record raises DataError and nothing is copied."""
        return await _copy.copy_records_to_table(
            self,
            table_name,
            records=records,
            columns=columns,
            schema_name=schema_name,
            timeout=timeout,
            where=where,
        )

    async def reload_schema_state(self):
        """Forget cached statements and introspected types (after ``ALTER TYPE`` and such)."""
        self._protocol.clear_types()
        self._drop_global_statement_cache()

    async def set_type_codec(self, typename, *, schema="public", encoder, decoder, format="text"):
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
        if format not in ("text", "binary", "tuple"):
            raise exceptions.InterfaceError(
                f"invalid format {format!r}: expected 'text', 'binary' or 'tuple'"
            )
        oid, kind, elem = await self._type_by_name(typename, schema)
        if kind == "c":
            if format != "tuple":
                raise exceptions.UnsupportedClientFeatureError(
                    "only tuple-format codecs can be used on composite types",
                    hint="Use `set_type_codec(..., format='tuple')` and pass/interpret "
                    "data as a Python tuple.",
                )
            # the attributes' codecs must be known to build the tuple
            await self._introspect_types([oid], None)
        elif kind not in ("b", "d", "e") or elem:
            raise exceptions.InterfaceError(
                f"cannot use custom codec on type {schema}.{typename}: "
                "it is neither a scalar type nor a composite type"
            )
        if kind == "d":
            raise exceptions.UnsupportedClientFeatureError(
                "custom codecs on domain types are not supported",
                hint="Set the codec on the base type.",
                detail="PostgreSQL does not distinguish domains from their base types in "
                "query results at the protocol level.",
            )
        self._protocol.set_custom_codec(oid, typename, schema, encoder, decoder, format)
        self._codecs_changed()

    async def reset_type_codec(self, typename, *, schema="public"):
        """Undo :meth:`set_type_codec` / :meth:`set_builtin_type_codec` for the type."""
        self._check_open()
        oid, _kind, _elem = await self._type_by_name(typename, schema)
        self._protocol.reset_custom_codec(oid)
        self._codecs_changed()

    async def set_builtin_type_codec(self, typename, *, schema="public", codec_name, format=None):
        """Handle ``schema.typename`` with a builtin codec, e.g. an extension type like
        ``hstore`` (``codec_name='pg_contrib.hstore'``) or ``citext`` (``'text'``)."""
        self._check_open()
        oid, _kind, _elem = await self._type_by_name(typename, schema)
        name = _SQL_STANDARD_TYPE_NAMES.get(codec_name.lower(), codec_name)
        if format == "text":
            pair = _TEXT_CODECS.get(name)
            if pair is None:
                raise exceptions.UnsupportedClientFeatureError(
                    f"the builtin codec {codec_name!r} has no text format here"
                )
            self._protocol.set_custom_codec(oid, typename, schema, pair[0], pair[1], "text")
        elif not self._protocol.set_builtin_alias(oid, typename, name):
            raise exceptions.InterfaceError(f"unknown builtin codec: {codec_name!r}")
        self._codecs_changed()

    def _codecs_changed(self):
        # composites, arrays and ranges built on the changed type are introspected anew,
        # and no cached statement keeps the old codecs
        self._protocol.clear_types()
        self._drop_global_statement_cache()

    async def _type_by_name(self, typename, schema):
        """(oid, typtype, element oid) of ``schema.typename``; in ``pg_catalog`` the SQL
        standard's names (``integer``, ``double precision``...) are known too, and the
        builtin types count as scalars (``point`` and ``name`` have elements)."""
        builtin = schema == "pg_catalog" and not typename.endswith("[]")
        if builtin:
            name = _SQL_STANDARD_TYPE_NAMES.get(typename.lower(), typename)
        else:
            name = typename
        row = await self.fetchrow(
            "SELECT t.oid::text, t.typtype::text, t.typelem::text, t.typcategory::text "
            "FROM pg_catalog.pg_type t "
            "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
            "WHERE t.typname = $1 AND n.nspname = $2",
            name,
            schema,
        )
        if row is None:
            raise ValueError(f"unknown type: {schema}.{typename}")
        elem = int(row[2])
        if builtin and row[3] != "A":
            elem = 0
        return int(row[0]), row[1], elem

    async def _introspect_types(self, oids, timeout):
        """Teach the protocol the types ``oids`` and everything they are built from, with
        one query per level of dependencies."""
        sql = _INTROSPECT_SQL if self.get_server_version() >= (14,) else _INTROSPECT_SQL_13
        proto = self._protocol
        found = {}
        pending = set(oids)
        while pending:
            rows = await self.fetch(sql, [str(o) for o in sorted(pending)], timeout=timeout)
            pending = set()
            for oid, name, kind, related, attr_names, attr_oids, schema in rows:
                oid, related = int(oid), int(related or 0)
                attr_oids = [int(a) for a in attr_oids]
                found[oid] = (oid, name, kind, related, list(attr_names), attr_oids, schema)
                for dep in [related, *attr_oids]:
                    if dep and dep not in found and not proto.has_codec(dep):
                        pending.add(dep)
            pending -= set(found)
        ordered, seen = [], set()

        def visit(oid):
            info = found.get(oid)
            if info is None or oid in seen:
                return
            seen.add(oid)
            for dep in [info[3], *info[5]]:
                visit(dep)
            ordered.append(info)

        for oid in found:
            visit(oid)
        proto.register_types(ordered)

    async def reset(self, *, timeout=None):
        """Return the session to a clean state: roll back, close cursors, unlisten, reset
        settings and advisory locks."""
        self._check_open()
        await self.execute(self._reset_query_now(), timeout=timeout)

    def _reset_query_now(self):
        # what reset() clears on the client side happens here; the server's part is returned
        self._listeners.clear()
        self._log_listeners.clear()
        reset_query = self.get_reset_query()
        if self._protocol.is_in_transaction() or self._top_xact is not None:
            if self._top_xact is None or not self._top_xact._managed:
                # reported as asyncpg does: to the loop's exception handler, not as a warning
                self._loop.call_exception_handler(
                    {
                        "message": f"Resetting connection with an active transaction {self!r}",
                    }
                )
            self._top_xact = None
            reset_query = "ROLLBACK;\n" + reset_query
        return reset_query

    def _reset_without_round_trip(self):
        """The pool's reset, sent ahead of the connection's next query instead of awaited.

        Only where nothing can tell the difference: outside a transaction, no operation in
        flight, no query logger, the default reset query (it cannot fail short of losing the
        connection), and ``reset``/``execute`` and the protocol's ``query`` neither overridden
        nor wrapped (instrumentation then sees the reset run through them, as with asyncpg).
        Returns
        whether it was sent; if the server fails it, the connection is closed and the pool
        replaces it. Otherwise the caller awaits :meth:`reset`.
        """
        cls = type(self)
        if (
            # by identity: a wrapt wrapper compares equal to the function it wraps
            any(
                a is not b
                for a, b in zip((cls.reset, cls.execute, cls.get_reset_query), _RESET_PATH)
            )
            or type(self._protocol).query is not _UNWRAPPED_QUERY
            or self._query_loggers
            or self._top_xact is not None
            or self._protocol.is_in_transaction()
            or self._protocol.is_busy()
            or self.is_closed()
        ):
            return False
        self._protocol.send_unawaited(self._reset_query_now())
        return True

    async def close(self, *, timeout=None):
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
                    self._cancel_current_command()
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

    def terminate(self):
        """Close the connection at once."""
        if not self.is_closed():
            self._aborted = True
            self._protocol.abort()
        self._cleanup()

    # ----------------------------------------------------------------- internals

    def _check_open(self):
        if self.is_closed():
            raise exceptions.InterfaceError("connection is closed")

    def _stmts_to_close_add(self, stmt):
        self._stmts_to_close.add(stmt)

    def _drop_global_statement_cache(self):
        self._stmt_cache.clear()

    def _mark_stmts_as_closed(self):
        self._stmt_cache.mark_all_closed()
        self._stmts_to_close.clear()

    def _cleanup(self):
        # Background cancellations are pointless once the connection is gone.
        current = asyncio.current_task(self._loop) if self._loop.is_running() else None
        for task in list(self._cancel_tasks):
            if task is not current:
                task.cancel()
        self._mark_stmts_as_closed()
        self._listeners.clear()
        self._log_listeners.clear()
        if not self._closed_fired:
            self._closed_fired = True
            self._call_termination_listeners()

    def _call_termination_listeners(self):
        listeners = list(self._termination_listeners)
        self._termination_listeners.clear()
        con = self._proxy or self
        for cb in listeners:
            cb.call(self._loop, con)

    def _on_connection_lost(self, exc):
        self._cleanup()

    def _on_notice(self, fields):
        if not self._log_listeners:
            return
        msg = exceptions.PostgresLogMessage.new(fields)
        con = self._proxy or self
        for cb in list(self._log_listeners):
            cb.call(self._loop, con, msg)

    def _on_notification(self, pid, channel, payload):
        cbs = self._listeners.get(channel)
        if not cbs:
            return
        con = self._proxy or self
        for cb in list(cbs):
            cb.call(self._loop, con, pid, channel, payload)

    async def _wait(self, fut, timeout):
        """Await a protocol future; on timeout or cancellation cancel the query server-side."""
        if timeout is None:
            timeout = self._config.command_timeout
        # `del fut` on the way out: a failed future holds the error, whose traceback holds
        # this frame; with fut still a local that is a cycle only the GC would free
        if timeout is None:
            try:
                return await fut
            except asyncio.CancelledError:
                self._cancel_current_command()
                raise
            finally:
                del fut
        if timeout <= 0:
            self._cancel_current_command()
            raise asyncio.TimeoutError
        handle = self._loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except (asyncio.CancelledError, asyncio.TimeoutError):
            self._cancel_current_command()
            raise
        finally:
            handle.cancel()
            del fut

    def _cancel_current_command(self):
        if not self._protocol.is_busy() or self.is_closed():
            return
        task = self._loop.create_task(self._send_cancel())
        self._cancel_tasks.add(task)
        task.add_done_callback(self._cancel_tasks.discard)

    async def _send_cancel(self):
        # Bounded by command_timeout, as asyncpg's: a CancelRequest that cannot get through
        # must not keep the connection in limbo forever.
        try:
            await _bounded(self._cancel_and_drain(), self._config.command_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The cancel could not be delivered or acknowledged: the connection's state is
            # unknown, so it must not be reused.
            self.terminate()

    async def _cancel_and_drain(self):
        try:
            await connect_utils._cancel(
                loop=self._loop,
                addr=self._addr,
                params=self._params,
                backend_pid=self._protocol.get_server_pid(),
                backend_secret=self._protocol.get_backend_secret(),
            )
        except ConnectionResetError:
            # some servers reset the side connection after taking the CancelRequest; the
            # cancelled query still has to be acknowledged on this one
            pass
        await asyncio.wait_for(self._protocol.wait_idle(), 30)

    async def _wait_cancellations(self, timeout):
        """Wait (up to ``timeout``) for background cancellations to finish; on timeout the
        connection is terminated, since its cancelled query may still be running."""
        if not self._cancel_tasks:
            return
        pending = asyncio.gather(*list(self._cancel_tasks), return_exceptions=True)
        try:
            await _bounded(asyncio.shield(pending), timeout)
        except asyncio.TimeoutError:
            self.terminate()
            raise

    async def _ensure_idle(self):
        # A cancelled or timed-out query may still be draining, and its CancelRequest may
        # still be on its way: wait for both, or the late cancel could hit the next query.
        if self._cancel_tasks:
            # asyncio.wait, not gather: if this caller is cancelled meanwhile, the
            # cancellations it waits for must go on, or the connection stays busy
            await asyncio.wait(list(self._cancel_tasks))
            if self._protocol.is_busy() and not self.is_closed():
                await self._protocol.wait_idle()
        if self._stmts_to_close:
            await self._close_pending_statements()

    async def _close_pending_statements(self):
        pending = list(self._stmts_to_close)
        self._stmts_to_close.clear()
        for stmt in pending:
            if stmt._state.closed or stmt._refs > 0:
                continue
            if self._protocol.is_busy() or self.is_closed():
                self._stmts_to_close.add(stmt)
                return
            await self._protocol.close_statement(stmt._state)

    async def _simple_query(self, query, timeout):
        if timeout is not None:
            timeout = checked_timeout(timeout)
        await self._ensure_idle()
        result = await self._wait(self._protocol.query(query), timeout)
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
        await self._ensure_idle()
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
        elif named or cache:
            name = f"__asyncpg_rs_stmt_{next(_STMT_NAMES):x}__"
        else:
            name = ""
        state = await self._wait(self._protocol.prepare(name, query), timeout)
        # the known types can be forgotten while introspection runs (reload_schema_state,
        # a codec change): what is unknown after the rebind is introspected again
        for _ in range(_INTROSPECTION_ATTEMPTS):
            unknown = state.unknown_oids()
            if not unknown:
                break
            await self._introspect_types(unknown, timeout)
            state = self._protocol.rebind_codecs(state)
        stmt = _StatementRef(state, query)
        if cache:
            self._stmt_cache.put(query, stmt)
        return stmt

    async def _bind_execute(self, stmt, args, limit, timeout, record_class, want_rows):
        timeout = checked_timeout(timeout)
        await self._ensure_idle()
        return await self._wait(
            self._protocol.bind_execute(
                stmt._state, args, "", limit, record_class or self._record_class, want_rows
            ),
            timeout,
        )

    async def _run(self, query, args, limit, timeout, record_class=None, want_rows=True):
        """Prepare (through the statement cache) and execute; returns (status, rows)."""
        if self._query_loggers:
            return await self._logged(
                query,
                args,
                timeout,
                self._run_unlogged,
                query,
                args,
                limit,
                timeout,
                record_class,
                want_rows,
            )
        return await self._run_unlogged(query, args, limit, timeout, record_class, want_rows)

    async def _run_unlogged(self, query, args, limit, timeout, record_class, want_rows):
        if timeout is not None:
            timeout = checked_timeout(timeout)
        if record_class is not None:
            _check_record_class(record_class)
        else:
            record_class = self._record_class
        proto = self._protocol
        for attempt in (0, 1):
            # The hot path: a cached statement, nothing pending, no timeout: one call into
            # Rust and one await, with no intermediate coroutines.
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
            if self._cancel_tasks or self._stmts_to_close:
                await self._ensure_idle()
            fut = proto.bind_execute(stmt._state, args, "", limit, record_class, want_rows)
            try:
                if timeout is None and self._config.command_timeout is None:
                    try:
                        rows = await fut
                    except asyncio.CancelledError:
                        self._cancel_current_command()
                        raise
                else:
                    rows = await self._wait(fut, timeout)
            except exceptions.PostgresError as e:
                if attempt == 0 and self._stale_statement(e, query):
                    continue
                raise
            finally:
                del fut  # see _wait
            return proto.last_status() or "", rows
        raise exceptions.InternalClientError("unreachable: statement retry loop")

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
        """Stream Bind/Execute for every argument sequence, in batches, with one Sync.

        The server starts working while later batches are still being encoded, and a huge
        or endless iterable never sits in memory. If the client side fails midway (a bad
        value, the iterable raising), the batch is aborted server-side so nothing of it is
        committed; inside the caller's own transaction what already ran stays in that
        transaction, which the caller decides about.
        """
        timeout = checked_timeout(timeout)  # before Parse goes out
        stmt = await self._get_statement(command, timeout)
        return await self._executemany_on(stmt, args, timeout, record_class, want_rows)

    async def _executemany_on(self, stmt, args, timeout, record_class, want_rows):
        timeout = checked_timeout(timeout)
        await self._ensure_idle()
        # through the protocol's asyncpg-named step, which instrumentation wraps
        return await self._protocol.bind_execute_many(
            stmt._state, args, self, timeout, record_class, want_rows
        )

    async def _stream_executemany(self, proto, state, args, timeout, record_class, want_rows):
        """The work of ``Protocol.bind_execute_many``."""
        fut = proto.executemany_begin(state, record_class, want_rows)
        if timeout is None:
            timeout = self._config.command_timeout
        deadline = None if timeout is None else self._loop.time() + timeout
        try:
            try:
                add = proto.executemany_add
                if hasattr(args, "__aiter__"):
                    async for a in args:
                        state = add(a)
                        if state == 2:
                            break  # the server already failed the batch: stop sending
                        if state:
                            await self._drain_until(deadline)
                else:
                    for a in args:
                        state = add(a)
                        if state == 2:
                            break
                        if state:
                            await self._drain_until(deadline)
            except BaseException as e:
                if not self.is_closed():
                    proto.executemany_end(failed=True, rollback=not proto.is_in_transaction())
                    if isinstance(e, (asyncio.TimeoutError, asyncio.CancelledError)):
                        # the server may be stuck (a lock): cancel it rather than wait; the
                        # next operation waits for the cancellation to land
                        fut.add_done_callback(_consume_outcome)
                        self._cancel_current_command()
                    else:
                        try:
                            await asyncio.shield(fut)
                        except (exceptions.PostgresError, asyncio.CancelledError):
                            pass
                raise
            proto.executemany_end()
            if deadline is not None:
                timeout = max(deadline - self._loop.time(), 0.001)
            rows = await self._wait(fut, timeout)
        finally:
            del fut  # see _wait
        return rows if want_rows else None

    async def _drain_until(self, deadline):
        """Wait for the transport to take more data (flow control), until ``deadline``."""
        if deadline is None:
            await self._protocol.drain()
        else:
            await asyncio.wait_for(self._protocol.drain(), max(deadline - self._loop.time(), 0))

    async def _logged(self, query, args, timeout, func, *fargs):
        started = time.monotonic()
        exc = None
        try:
            return await func(*fargs)
        except BaseException as e:
            exc = e
            raise
        finally:
            record = LoggedQuery(
                query,
                args,
                timeout,
                time.monotonic() - started,
                exc,
                self._addr,
                self._params,
            )
            for cb in list(self._query_loggers):
                cb.call(self._loop, record)

    def _set_proxy(self, proxy):
        if self._proxy is not None and proxy is not None:
            raise exceptions.InterfaceError("internal: connection is already proxied")
        self._proxy = proxy

    def __repr__(self):
        return "<{}.{} object at 0x{:x}>".format(
            type(self).__module__.replace("asyncpg_rs", "asyncpg", 1),
            type(self).__name__,
            id(self),
        )


# as defined here: instrumentation that wraps them on the class replaces these attributes
_RESET_PATH = (Connection.reset, Connection.execute, Connection.get_reset_query)
_UNWRAPPED_QUERY = _protocol_layer.Protocol.query  # agents wrap the protocol's query, too


class _StatementRef:
    """A server-side prepared statement shared by the cache and PreparedStatement objects."""

    __slots__ = ("_state", "_query", "_refs")

    def __init__(self, state, query):
        self._state = state
        self._query = query
        self._refs = 0


class _ConnectionSettings:
    """Read-only attribute access to server settings: ``con.get_settings().DateStyle``."""

    __slots__ = ("_settings",)

    def __init__(self, settings):
        object.__setattr__(self, "_settings", settings)

    def __getattr__(self, name):
        try:
            return self._settings[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name):
        return name in self._settings

    def __repr__(self):
        return f"<ConnectionSettings {self._settings!r}>"


class _Callback(typing.NamedTuple):
    cb: typing.Callable
    is_async: bool

    @classmethod
    def from_callable(cls, cb):
        return cls(cb, asyncio.iscoroutinefunction(cb))

    def call(self, loop, *args):
        if self.is_async:
            loop.create_task(_run_async_callback(loop, self.cb, args))
        else:
            try:
                self.cb(*args)
            except Exception as e:  # noqa: BLE001 - reported, never breaks the connection
                loop.call_exception_handler(
                    {
                        "message": f"Unhandled exception in asyncpg callback {self.cb!r}",
                        "exception": e,
                    }
                )


async def _run_async_callback(loop, cb, args):
    try:
        await cb(*args)
    except Exception as e:  # noqa: BLE001
        loop.call_exception_handler(
            {"message": f"Unhandled exception in asyncpg callback {cb!r}", "exception": e}
        )


class _QueryLoggerContext:
    __slots__ = ("_conn", "_cb")

    def __init__(self, conn, cb):
        self._conn = conn
        self._cb = cb

    def __enter__(self):
        self._conn.add_query_logger(self._cb)
        return self._cb

    def __exit__(self, *exc):
        self._conn.remove_query_logger(self._cb)


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


def _consume_outcome(fut):
    # an abandoned operation's error is expected: mark it retrieved so asyncio stays quiet
    if not fut.cancelled():
        fut.exception()


def _expire(fut):
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


def _quote_ident(ident):
    return '"' + ident.replace('"', '""') + '"'


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
    dsn=None,
    *,
    host=None,
    port=None,
    user=None,
    password=None,
    passfile=None,
    database=None,
    loop=None,
    timeout=60,
    statement_cache_size=100,
    max_cached_statement_lifetime=300,
    max_cacheable_statement_size=1024 * 15,
    command_timeout=None,
    ssl=None,
    direct_tls=None,
    connection_class=Connection,
    record_class=Record,
    server_settings=None,
    target_session_attrs=None,
    krbsrvname=None,
    gsslib=None,
    service=None,
    servicefile=None,
):
    """Connect to a PostgreSQL server and return a :class:`Connection`.

    Accepts asyncpg's arguments with asyncpg's meaning: a ``postgres://`` DSN and/or keyword
    arguments, libpq's environment variables, ``.pgpass`` and ``pg_service.conf`` services,
    ``ssl`` modes, multiple hosts and ``target_session_attrs``.
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
        timeout=timeout,
    )
    con._record_class = record_class
    return con


_ = _native  # the native module is imported for its side effect of being loaded first


async def _bounded(aw, timeout):
    if timeout is None:
        return await aw
    return await asyncio.wait_for(aw, timeout)
