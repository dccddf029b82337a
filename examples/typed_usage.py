"""asyncpg_rs as a type checker sees it: python examples/typed_usage.py DSN.

Every call here is typed: ``mypy --strict`` passes on this file and the ``assert_type`` calls
pin what the annotations promise. Under ``--disallow-any-expr`` only the lines marked
``# Any: a column value`` (a column's value, or ``fetchval``'s, is whatever its type decodes
to) or ``# Any: constructor`` (a class passed as a value) may report an ``Any``.
tests/test_typing.py checks all of that, and runs the file against a real server so it
stays true.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator
from typing import assert_type

import asyncpg_rs
from asyncpg_rs import exceptions
from asyncpg_rs.cursor import Cursor, CursorFactory
from asyncpg_rs.eventloop import TimerHandle
from asyncpg_rs.pool import PoolConnectionProxy
from asyncpg_rs.prepared_stmt import PreparedStatement
from asyncpg_rs.transaction import Transaction
from asyncpg_rs.types import Point, Range, ServerVersion


class Book(asyncpg_rs.Record):
    """Rows of ``books``, as ``record_class=Book`` returns them."""

    def title(self) -> str:
        value = self["title"]  # Any: a column value
        assert isinstance(value, str)  # Any: a column value
        return value


class AppConnection(asyncpg_rs.Connection):
    """What ``connection_class=AppConnection`` makes."""


async def queries(con: asyncpg_rs.Connection) -> None:
    assert_type(con.get_server_version(), ServerVersion)
    assert_type(con.get_server_pid(), int)
    assert_type(con.is_in_transaction(), bool)
    status = await con.execute(
        "CREATE TEMP TABLE books (id int4 PRIMARY KEY, title text NOT NULL, at point)"
    )
    assert_type(status, str)
    await con.executemany(
        "INSERT INTO books VALUES ($1, $2, $3)",
        [(1, "Dune", Point(1, 2)), (2, "Emma", None), (3, "Ulysses", None)],
    )

    rows = await con.fetch("SELECT * FROM books ORDER BY id")
    assert_type(rows, list[asyncpg_rs.Record])
    books = await con.fetch("SELECT * FROM books ORDER BY id", record_class=Book)
    assert_type(books, list[Book])
    assert [b.title() for b in books] == ["Dune", "Emma", "Ulysses"]

    row = await con.fetchrow("SELECT * FROM books WHERE id = $1", 1)
    assert_type(row, asyncpg_rs.Record | None)
    assert row is not None and row["title"] == "Dune"  # Any: a column value
    book = await con.fetchrow("SELECT * FROM books WHERE id = $1", 2, record_class=Book)
    assert_type(book, Book | None)
    assert book is not None and book.title() == "Emma"
    assert await con.fetchrow("SELECT * FROM books WHERE id = $1", 99) is None

    count: int = await con.fetchval("SELECT count(*) FROM books")  # Any: a column value
    assert count == 3
    many = await con.fetchmany("SELECT $1::int4 * 2", [(1,), (2,)], record_class=Book)
    assert_type(many, list[Book])

    stmt = await con.prepare("SELECT * FROM books WHERE id = $1")
    assert_type(stmt, PreparedStatement[asyncpg_rs.Record])
    typed_stmt = await con.prepare("SELECT * FROM books WHERE id > $1", record_class=Book)
    assert_type(typed_stmt, PreparedStatement[Book])
    assert_type(await typed_stmt.fetch(0), list[Book])
    assert_type(await typed_stmt.fetchrow(0), Book | None)
    assert [p.name for p in stmt.get_parameters()] == ["int4"]
    assert [a.name for a in stmt.get_attributes()] == ["id", "title", "at"]

    tx = con.transaction(isolation="repeatable_read")
    assert_type(tx, Transaction)
    async with tx:
        factory = con.cursor("SELECT * FROM books ORDER BY id", prefetch=2, record_class=Book)
        assert_type(factory, CursorFactory[Book])
        titles = [b.title() async for b in factory]
        assert titles == ["Dune", "Emma", "Ulysses"]
        cur = await con.cursor("SELECT * FROM books ORDER BY id")
        assert_type(cur, Cursor[asyncpg_rs.Record])
        assert await cur.forward(1) == 1
        first = await cur.fetchrow()
        assert_type(first, asyncpg_rs.Record | None)
        assert_type(await cur.fetch(5), list[asyncpg_rs.Record])
        async for r in typed_stmt.cursor(0):
            assert_type(r, Book)

    span: Range[int] = await con.fetchval("SELECT int4range(1, 5)")  # Any: a column value
    assert span.lower == 1 and span.upper == 5 and not span.isempty


async def copy(con: asyncpg_rs.Connection) -> None:
    await con.execute("CREATE TEMP TABLE copied (id int4, name text)")
    status = await con.copy_records_to_table(
        "copied", records=[(1, "a"), (2, "b")], columns=["id", "name"]
    )
    assert_type(status, str)
    sink = io.BytesIO()
    await con.copy_from_table("copied", output=sink, format="csv")
    assert sink.getvalue() == b"1,a\n2,b\n"

    async def chunks() -> AsyncIterator[bytes]:
        yield b"3,c\n"

    await con.copy_to_table("copied", source=chunks(), format="csv")
    received: list[bytes] = []

    async def collect(data: bytes) -> None:
        received.append(data)

    await con.copy_from_query("SELECT * FROM copied WHERE id > $1", 2, output=collect)
    assert b"".join(received) == b"3\tc\n"


async def listeners(con: asyncpg_rs.Connection) -> None:
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_notify(
        connection: asyncpg_rs.Connection | PoolConnectionProxy,
        pid: int,
        channel: str,
        payload: str,
    ) -> None:
        got.set_result(payload)

    def on_log(
        connection: asyncpg_rs.Connection | PoolConnectionProxy,
        message: exceptions.PostgresLogMessage,
    ) -> None:
        pass

    await con.add_listener("news", on_notify)
    con.add_log_listener(on_log)
    await con.execute("NOTIFY news, 'hello'")
    assert await asyncio.wait_for(got, 10) == "hello"
    await con.remove_listener("news", on_notify)
    con.remove_log_listener(on_log)


async def pool(dsn: str) -> None:
    async def init(con: asyncpg_rs.Connection) -> None:
        await con.execute("SET application_name = 'typed_usage'")

    async with asyncpg_rs.create_pool(dsn, min_size=1, max_size=2, init=init) as p:
        assert_type(p, asyncpg_rs.Pool)
        async with p.acquire() as con:
            assert_type(con, PoolConnectionProxy)
            one: int = await con.fetchval("SELECT 1")  # Any: a column value
            assert one == 1
            assert_type(await con.fetch("SELECT 1 AS x", record_class=Book), list[Book])
        lent = await p.acquire()
        try:
            assert_type(await lent.fetchrow("SELECT 1"), asyncpg_rs.Record | None)
        finally:
            await p.release(lent)
        assert_type(await p.fetch("SELECT 1"), list[asyncpg_rs.Record])
        assert_type(p.get_size(), int)


async def main(dsn: str) -> None:
    con = await asyncpg_rs.connect(dsn, statement_cache_size=10)
    assert_type(con, asyncpg_rs.Connection)
    try:
        await queries(con)
        await copy(con)
        await listeners(con)
        try:
            await con.execute("SELECT 1/0")
        except exceptions.PostgresError as e:
            assert_type(e.sqlstate, str)
            assert_type(e.detail, str | None)
            assert isinstance(e, exceptions.DivisionByZeroError)
    finally:
        await con.close()
    # a class object carries its constructor, whose connection parameters hold Any
    app = await asyncpg_rs.connect(dsn, connection_class=AppConnection)  # Any: constructor
    assert_type(app, AppConnection)
    await app.close()
    await pool(dsn)


def run_on_every_entry_point(dsn: str) -> None:
    # the loop API: run(), a Runner with our loop factory, and the policy
    asyncpg_rs.run(main(dsn))
    with asyncio.Runner(loop_factory=asyncpg_rs.new_event_loop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, asyncpg_rs.Loop)
        runner.run(main(dsn))
    policy = asyncpg_rs.EventLoopPolicy()
    assert_type(policy.new_event_loop(), asyncpg_rs.Loop)
    loop = asyncpg_rs.new_event_loop()
    assert_type(loop, asyncpg_rs.Loop)
    try:
        assert loop.run_until_complete(asyncio.sleep(0, "done")) == "done"
        timer = loop.call_later(60, print, "never")
        assert_type(timer, TimerHandle)
        timer.cancel()
        total = loop.run_in_executor(None, add, 1, 2)
        assert_type(total, asyncio.Future[int])
        assert loop.run_until_complete(total) == 3
    finally:
        loop.close()
    asyncpg_rs.install()
    try:
        assert asyncio.run(running_loop_name()) == "Loop"
    finally:
        asyncio.set_event_loop_policy(None)


def add(a: int, b: int) -> int:
    return a + b


async def running_loop_name() -> str:
    return type(asyncio.get_running_loop()).__name__


if __name__ == "__main__":
    run_on_every_entry_point(sys.argv[1])
    print("typed usage: ok")
