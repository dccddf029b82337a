"""``PreparedStatement``: a server-side statement bound to one connection."""

from __future__ import annotations

import json
import typing

from . import exceptions
from ._resource import guarded
from ._typing import RecordT

if typing.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .cursor import CursorFactory
    from .types import Attribute, Type

__all__ = ("PreparedStatement",)


def _type_of(info):
    from .types import Type

    return Type(*info)


class PreparedStatement(typing.Generic[RecordT]):
    """A prepared statement, made by :meth:`Connection.prepare`.

    Its methods mirror the connection's query methods without the query argument. The
    server-side statement is closed once the object is garbage-collected.
    """

    __slots__ = (
        "_connection",
        "_query",
        "_stmt",
        "_record_class",
        "_last_status",
        "_release_ctr",
        "__weakref__",
    )

    def __init__(self, connection, query, stmt, record_class):
        self._connection = connection
        self._query = query
        self._stmt = stmt
        self._record_class = record_class
        self._last_status = None
        # a pool bumps the counter on release: a statement must not outlive its lease
        self._release_ctr = connection._session.release_ctr
        stmt._refs += 1

    def __del__(self):
        stmt = getattr(self, "_stmt", None)
        if stmt is None:
            return
        stmt._refs -= 1
        self._connection._session.release_statement(stmt)

    @guarded
    def get_name(self) -> str:
        """The server-side name of the statement."""
        return self._stmt._state.name

    @guarded
    def get_query(self) -> str:
        """The text of the query."""
        return self._query

    @guarded
    def get_statusmsg(self) -> str | None:
        """The status of the last command this statement ran (e.g. ``'SELECT 3'``)."""
        return self._last_status

    @guarded
    def get_parameters(self) -> tuple[Type, ...]:
        """The parameter types, as a tuple of :class:`~asyncpg_rs.types.Type`."""
        return tuple(_type_of(info) for info in self._stmt._state.parameter_type_infos())

    @guarded
    def get_attributes(self) -> tuple[Attribute, ...]:
        """The result columns, as a tuple of :class:`~asyncpg_rs.types.Attribute`."""
        from .types import Attribute

        return tuple(
            Attribute(name, _type_of(info)) for name, info in self._stmt._state.column_type_infos()
        )

    @guarded
    def cursor(
        self, *args: object, prefetch: int | None = None, timeout: float | None = None
    ) -> CursorFactory[RecordT]:
        """A cursor factory over this statement (see :meth:`Connection.cursor`)."""
        from . import cursor as _cursor

        return _cursor.CursorFactory(
            self._connection,
            self._query,
            self._stmt,
            args,
            prefetch,
            timeout,
            self._record_class,
        )

    @guarded
    async def explain(self, *args: object, analyze: bool = False) -> typing.Any:
        """The server's plan for this statement with ``args``, as parsed JSON."""
        query = "EXPLAIN (FORMAT JSON, VERBOSE"
        if analyze:
            query += ", ANALYZE) "
        else:
            query += ") "
        query += self._query
        if analyze:
            # EXPLAIN ANALYZE runs the statement: keep its effects out of the database
            tr = self._connection.transaction()
            await tr.start()
            try:
                data = await self._connection.fetchval(query, *args)
            finally:
                await tr.rollback()
        else:
            data = await self._connection.fetchval(query, *args)
        return json.loads(data)

    async def _exec(self, args, limit, timeout, want_rows=True):
        session = self._connection._session
        try:
            rows = await session.bind_execute(
                self._stmt, args, limit, timeout, self._record_class, want_rows
            )
        except exceptions.FeatureNotSupportedError as e:
            if "cached plan must not change result type" in str(e):
                # the statement was prepared before a schema change; it cannot be re-prepared
                # behind the user's back, as the cache does for its own statements
                raise exceptions.InvalidCachedStatementError(
                    "cached statement plan is invalid due to a database schema or "
                    "configuration change"
                ) from e
            raise
        finally:
            self._last_status = session.protocol.last_status()
        return rows

    @guarded
    async def fetch(self, *args: object, timeout: float | None = None) -> list[RecordT]:
        """Execute the statement and return all rows."""
        return await self._exec(args, 0, timeout)

    @guarded
    async def fetchval(
        self, *args: object, column: int = 0, timeout: float | None = None
    ) -> typing.Any:
        """Execute the statement and return one value of the first row."""
        rows = await self._exec(args, 1, timeout)
        return rows[0][column] if rows else None

    @guarded
    async def fetchrow(self, *args: object, timeout: float | None = None) -> RecordT | None:
        """Execute the statement and return the first row, or ``None``."""
        rows = await self._exec(args, 1, timeout)
        return rows[0] if rows else None

    @guarded
    async def fetchmany(
        self, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> list[RecordT]:
        """Execute the statement for each argument sequence and return all rows."""
        session = self._connection._session
        return await session.executemany_on(
            self._stmt, args, timeout, self._record_class or session.record_class, True
        )

    @guarded
    async def executemany(
        self, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None:
        """Execute the statement for each argument sequence, atomically."""
        await self._connection._session.executemany_on(self._stmt, args, timeout, None, False)
