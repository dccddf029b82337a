"""COPY to and from the server: the implementation behind ``Connection.copy_*``.

Data moves in chunks both ways. Out of the server, the protocol stops reading the socket while
the caller's output falls behind; into it, we wait for the transport to drain before sending
more, so neither side ever buffers a whole table.

``copy_from_table``, ``copy_from_query``, ``copy_to_table`` and ``copy_records_to_table``
here take the arguments of the Connection method of the same name as keywords, ``self``
(the connection) included: each method's body is ``_copy.<name>(**locals())``, so the
method keeps asyncpg's real signature and nothing forwards the keywords one by one.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import typing

from . import _native, exceptions
from ._quoting import quote_ident as _quote_ident
from ._quoting import quote_literal as _quote_literal
from ._timeouts import checked_timeout

if typing.TYPE_CHECKING:
    from .connection import Connection

_READ_SIZE = 512 * 1024
# copy_records_to_table sends CopyData messages of about this size, sizing its record batches
# from the bytes the records took so far (the first batch is 1,024 records). 1,024-record
# messages (~40 KiB for five small columns) made the server work harder per row over TLS
# (see copy_in_data in src/pg/protocol/copy_ops.rs and docs/ARCHITECTURE.md); 512 KiB ones,
# asyncpg's size, cost the client 1.5-2x the CPU per row of 64-128 KiB ones (the batch no
# longer fits the CPU caches) and the server no less.
_COPY_MESSAGE_SIZE = 128 * 1024
_FIRST_BATCH = 1024
_MAX_BATCH = 65536


def _table_name(table_name, schema_name):
    if schema_name:
        return f"{_quote_ident(schema_name)}.{_quote_ident(table_name)}"
    return _quote_ident(table_name)


def _column_list(columns):
    if not columns:
        return ""
    return " (" + ", ".join(_quote_ident(c) for c in columns) + ")"


def _options(
    *,
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
):
    opts = []
    if format is not None:
        opts.append(f"FORMAT {format}")
    if oids is not None:
        opts.append(f"OIDS {bool(oids)}")
    if freeze is not None:
        opts.append(f"FREEZE {bool(freeze)}")
    if delimiter is not None:
        opts.append(f"DELIMITER {_quote_literal(delimiter)}")
    if null is not None:
        opts.append(f"NULL {_quote_literal(null)}")
    if header is not None:
        opts.append(f"HEADER {bool(header)}")
    if quote is not None:
        opts.append(f"QUOTE {_quote_literal(quote)}")
    if escape is not None:
        opts.append(f"ESCAPE {_quote_literal(escape)}")
    if force_quote is not None:
        if force_quote is True:
            opts.append("FORCE_QUOTE *")
        elif force_quote:
            opts.append("FORCE_QUOTE (" + ", ".join(map(_quote_ident, force_quote)) + ")")
    if force_not_null is not None:
        opts.append("FORCE_NOT_NULL (" + ", ".join(map(_quote_ident, force_not_null)) + ")")
    if force_null is not None:
        opts.append("FORCE_NULL (" + ", ".join(map(_quote_ident, force_null)) + ")")
    if encoding is not None:
        opts.append(f"ENCODING {_quote_literal(encoding)}")
    return " (" + ", ".join(opts) + ")" if opts else ""


# ------------------------------------------------------------------ COPY ... TO STDOUT


class _Sink:
    """Where COPY OUT data goes: a path, a binary file object, or a coroutine function."""

    def __init__(self, output):
        self._file = None
        self._close = False
        self._write = None
        self._async = False
        if isinstance(output, (str, bytes, os.PathLike)):
            self._file = open(output, "wb")  # noqa: SIM115 - closed in close()
            self._close = True
            self._write = self._file.write
        elif inspect.iscoroutinefunction(output) or (
            callable(output) and not hasattr(output, "write")
        ):
            self._write = output
            self._async = True
        elif hasattr(output, "write"):
            self._write = output.write
            self._async = inspect.iscoroutinefunction(output.write)
        else:
            raise TypeError(
                "output is expected to be a file-like object, a path or a coroutine function, "
                f"got {type(output).__name__}"
            )

    async def write(self, chunks):
        # COPY data is a stream: what arrived together goes out in one call, so a sink is
        # not called once per row
        data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
        if self._async:
            await self._write(data)
        else:
            self._write(data)

    def close(self):
        if self._close and self._file is not None:
            self._file.close()


async def copy_out(con, sql, output, timeout):
    """COPY ... TO STDOUT into ``output``; ``timeout`` bounds the whole operation."""
    timeout = checked_timeout(timeout)
    if timeout is None:
        return await _copy_out(con, sql, output)
    return await asyncio.wait_for(_copy_out(con, sql, output), timeout)


async def _copy_out(con, sql, output):
    timeout = None
    session = con._session
    sink = _Sink(output)
    try:
        session.check_open()
        await session.ensure_idle()
        proto = session.protocol
        done = proto.copy_out(sql)
        try:
            while True:
                chunks = await session.wait(proto.copy_out_read(), timeout)
                if chunks is None:
                    break
                await sink.write(chunks)
        except BaseException:
            # the sink failed or we were cancelled: stop buffering, cancel the COPY on the
            # server and let the protocol drain to ReadyForQuery
            if not session.is_closed() and proto.is_busy():
                proto.copy_out_discard()
                session.cancel_current_command()
            if not done.done():
                done.cancel()
            raise
        status = await session.wait(done, timeout)
        return status or ""
    finally:
        # a failed future holds the error, whose traceback holds this frame: no cycle
        done = None
        sink.close()


async def copy_from_table(
    self: Connection,
    table_name: str,
    *,
    output: typing.Any,
    columns: typing.Iterable[str] | None,
    schema_name: str | None,
    timeout: float | None,
    **options: typing.Any,
) -> str:
    """``Connection.copy_from_table``: COPY a table TO STDOUT into ``output``."""
    sql = (
        f"COPY {_table_name(table_name, schema_name)}{_column_list(columns)} TO STDOUT"
        f"{_options(**options)}"
    )
    return await copy_out(self, sql, output, timeout)


async def _inline_args(con, query, args, timeout):
    """``query`` with ``$n`` replaced by literals for ``args``, typed as the server infers."""
    stmt = await con._session.get_statement(query, timeout, use_cache=False)
    types = [name for _, name in stmt._state.parameter_types()]
    if len(types) != len(args):
        raise exceptions.InterfaceError(
            f"the server expects {len(types)} argument{'s' if len(types) != 1 else ''} for "
            f"this query, {len(args)} {'was' if len(args) == 1 else 'were'} passed"
        )
    select = ", ".join(
        f"quote_nullable(${i}::{_quote_ident(t) if not t.startswith('_') else t[1:] + '[]'}::text)"
        for i, t in enumerate(types, 1)
    )
    literals = await con.fetchrow(f"SELECT {select}", *args)
    for i in range(len(types), 0, -1):
        t = types[i - 1]
        typ = t[1:] + "[]" if t.startswith("_") else _quote_ident(t)
        query = query.replace(f"${i}", f"{literals[i - 1]}::{typ}")
    return query


async def copy_from_query(
    self: Connection,
    query: str,
    args: typing.Sequence[typing.Any],
    *,
    output: typing.Any,
    timeout: float | None,
    **options: typing.Any,
) -> str:
    """``Connection.copy_from_query``: COPY the results of ``query`` (with ``args``
    inlined as literals) TO STDOUT into ``output``."""
    timeout = checked_timeout(timeout)
    if args:
        query = await _inline_args(self, query, args, timeout)
    sql = f"COPY ({query}) TO STDOUT{_options(**options)}"
    return await copy_out(self, sql, output, timeout)


# ------------------------------------------------------------------ COPY ... FROM STDIN


async def _send(con, proto, done, data):
    if done.done():
        return False  # the server already ended the COPY (an error): stop sending
    if proto.copy_in_data(data):
        await proto.drain()
    return True


async def _chunks_of(source):
    """Yield bytes chunks from a path, a file object, an async iterable or a buffer."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            while True:
                chunk = f.read(_READ_SIZE)
                if not chunk:
                    return
                yield chunk
    elif hasattr(source, "read"):
        read = source.read
        is_async = inspect.iscoroutinefunction(read)
        while True:
            chunk = await read(_READ_SIZE) if is_async else read(_READ_SIZE)
            if not chunk:
                return
            yield bytes(chunk) if not isinstance(chunk, bytes) else chunk
    elif hasattr(source, "__aiter__"):
        async for chunk in source:
            yield bytes(chunk) if not isinstance(chunk, bytes) else chunk
    else:
        try:
            data = memoryview(source)
        except TypeError:
            raise TypeError(
                "source is expected to be a path, a file-like object, an asynchronous "
                f"iterable of bytes or a bytes-like object, got {type(source).__name__}"
            ) from None
        yield bytes(data)


async def copy_in(con, sql, chunks, timeout):
    """Run ``sql`` (a COPY FROM STDIN) feeding it from the async iterator ``chunks``;
    ``timeout`` bounds the whole operation."""
    timeout = checked_timeout(timeout)
    if timeout is None:
        return await _copy_in(con, sql, chunks)
    return await asyncio.wait_for(_copy_in(con, sql, chunks), timeout)


async def _copy_in(con, sql, chunks):
    timeout = None
    session = con._session
    session.check_open()
    await session.ensure_idle()
    proto = session.protocol
    ready, done = proto.copy_in(sql)
    try:
        try:
            await session.wait(ready, timeout)
        except BaseException:
            if not done.done():
                done.cancel()
            raise
        try:
            async for chunk in chunks:
                if not await _send(con, proto, done, chunk):
                    break
        except BaseException as e:
            # abort the COPY so nothing of it is committed, and let the server confirm
            if not done.done():
                proto.copy_in_end(f"aborted by the client: {type(e).__name__}")
                try:
                    await asyncio.shield(done)
                except (exceptions.QueryCanceledError, asyncio.CancelledError):
                    pass
                except exceptions.PostgresError:
                    pass
            raise
        proto.copy_in_end()
        status = await session.wait(done, timeout)
    finally:
        # a failed future holds the error, whose traceback holds this frame: no cycle
        ready = done = None
    return status or ""


async def copy_to_table(
    self: Connection,
    table_name: str,
    *,
    source: typing.Any,
    columns: typing.Iterable[str] | None,
    schema_name: str | None,
    timeout: float | None,
    where: str | None,
    **options: typing.Any,
) -> str:
    """``Connection.copy_to_table``: COPY a table FROM STDIN, fed from ``source``."""
    sql = (
        f"COPY {_table_name(table_name, schema_name)}{_column_list(columns)} FROM STDIN"
        f"{_options(**options)}"
    )
    if where:
        sql += f" WHERE {where}"
    return await copy_in(self, sql, _chunks_of(source), timeout)


async def _record_batches(records, size):
    """``records`` in lists of ``size()`` records (asked again before each batch)."""
    if isinstance(records, list):
        # slices are copied at C speed: no Python step per record
        start = 0
        while start < len(records):
            n = size()
            yield records[start : start + n]
            start += n
    elif hasattr(records, "__aiter__"):
        batch = []
        n = size()
        async for r in records:
            batch.append(r)
            if len(batch) >= n:
                yield batch
                batch = []
                n = size()
        if batch:
            yield batch
    else:
        it = iter(records)
        while True:
            batch = list(itertools.islice(it, size()))
            if not batch:
                return
            yield batch


async def copy_records_to_table(
    self: Connection,
    table_name: str,
    *,
    records: typing.Any,
    columns: typing.Iterable[str] | None,
    schema_name: str | None,
    timeout: float | None,
    where: str | None,
) -> str:
    """``Connection.copy_records_to_table``: COPY ``records`` into a table in the binary
    format, encoded in Rust with the target columns' codecs."""
    tab = _table_name(table_name, schema_name)
    cols = ", ".join(_quote_ident(c) for c in columns) if columns else "*"
    stmt = await self._session.get_statement(
        f"SELECT {cols} FROM {tab} LIMIT 0", timeout, use_cache=False
    )
    state = stmt._state
    col_names = [name for name, _, _ in state.columns()]
    sql = f"COPY {tab} ({', '.join(_quote_ident(c) for c in col_names)}) FROM STDIN (FORMAT binary)"
    if where:
        sql += f" WHERE {where}"

    per_batch = _FIRST_BATCH

    def batch_size():
        return per_batch

    async def encoded():
        nonlocal per_batch
        yield _native.copy_binary_header()
        index = 0
        async for batch in _record_batches(records, batch_size):
            data = _native.encode_copy_records(state, batch, index)
            index += len(batch)
            # size the next batches to make CopyData messages of about _COPY_MESSAGE_SIZE
            # from what these records took
            per_batch = max(
                1, min(_MAX_BATCH, _COPY_MESSAGE_SIZE * len(batch) // max(len(data), 1))
            )
            yield data
        yield _native.copy_binary_trailer()

    return await copy_in(self, sql, encoded(), timeout)
