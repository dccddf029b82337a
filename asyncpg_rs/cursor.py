"""Cursors: stream a query's rows through a server-side portal inside a transaction.

``async for row in con.cursor(query)`` fetches ``prefetch`` rows per round trip;
``cur = await con.cursor(query)`` gives a :class:`Cursor` to ``fetch``/``forward`` by hand.
Only the rows of one batch are in memory at a time.
"""

from __future__ import annotations

import itertools
import typing

from . import exceptions
from ._resource import guarded
from ._timeouts import checked_timeout
from ._typing import RecordT

if typing.TYPE_CHECKING:
    from collections.abc import Generator

__all__ = ("CursorFactory", "Cursor", "CursorIterator")

_portal_numbers = itertools.count(1)


def _check_positive(n, what):
    if n <= 0:
        raise exceptions.InterfaceError(f"{what} must be greater than zero")


class CursorFactory(typing.Generic[RecordT]):
    """What ``Connection.cursor()`` returns: iterate it, or ``await`` it for a Cursor."""

    __slots__ = (
        "_connection",
        "_query",
        "_stmt",
        "_args",
        "_prefetch",
        "_timeout",
        "_record_class",
    )

    def __init__(self, connection, query, stmt, args, prefetch, timeout, record_class):
        self._connection = connection
        self._query = query
        self._stmt = stmt
        self._args = args
        self._prefetch = prefetch
        self._timeout = timeout
        self._record_class = record_class

    def __aiter__(self) -> CursorIterator[RecordT]:
        prefetch = 50 if self._prefetch is None else self._prefetch
        return CursorIterator(
            self._connection,
            self._query,
            self._stmt,
            self._args,
            prefetch,
            self._timeout,
            self._record_class,
        )

    def __await__(self) -> Generator[typing.Any, None, Cursor[RecordT]]:
        if self._prefetch is not None:
            raise exceptions.InterfaceError(
                "prefetch argument can only be specified for iterable cursor"
            )
        cursor = Cursor(self._connection, self._query, self._stmt, self._args, self._record_class)
        return cursor._init(self._timeout).__await__()


class BaseCursor(typing.Generic[RecordT]):
    """What both cursors are made of; asyncpg's name, which instrumentation patches.

    Every round trip of a cursor goes through ``_bind`` (open the portal), ``_exec`` (fetch
    from it) or ``_bind_exec`` (both in one round trip, for an iterator's first batch), as in
    asyncpg, so that tracing wrapped around them (Sentry's AsyncPGIntegration) sees each one
    once; and they reach the server through the protocol's ``bind``, ``execute`` and
    ``bind_execute``, which other agents wrap.
    """

    __slots__ = (
        "_connection",
        "_query",
        "_stmt",
        "_args",
        "_record_class",
        "_portal",
        "_exhausted",
        "_xact",
        "_release_ctr",
    )

    def __init__(self, connection, query, stmt, args, record_class):
        self._connection = connection
        self._query = query
        self._stmt = stmt
        self._args = args
        self._record_class = record_class
        self._portal = None
        self._exhausted = False
        self._xact = None
        self._release_ctr = connection._session.release_ctr

    def _check_ready(self):
        con = self._connection
        if con.is_closed():
            raise exceptions.InterfaceError("cursor: the connection is closed")
        if self._stmt is not None and self._stmt._state.closed:
            raise exceptions.InterfaceError("cursor: the prepared statement is closed")
        if self._portal is not None and not con.is_in_transaction():
            raise exceptions.NoActiveSQLTransactionError(
                "cursor cannot be used outside of the transaction it was created in"
            )

    async def _prepare_portal(self, timeout: float | None) -> None:
        con = self._connection
        self._check_ready()
        if not con.is_in_transaction():
            raise exceptions.NoActiveSQLTransactionError(
                "cursor cannot be created outside of a transaction"
            )
        session = con._session
        if self._stmt is None:
            self._stmt = await session.get_statement(self._query, timeout)
        await session.ensure_idle(timeout)

    async def _bind_portal(self, timeout: float | None) -> None:
        timeout = checked_timeout(timeout)
        await self._prepare_portal(timeout)
        session = self._connection._session
        portal = f"__asyncpg_rs_cursor_{next(_portal_numbers):x}__"
        await session.wait(session.protocol.bind(self._stmt._state, self._args, portal), timeout)
        self._portal = portal

    async def _after_fetch(self, timeout: float | None) -> None:
        session = self._connection._session
        if not session.protocol.portal_suspended():
            self._exhausted = True
            # the portal would keep its locks until the transaction ends
            await session.wait(session.protocol.close_portal(self._portal), timeout)

    async def _fetch_rows(self, n: int, timeout: float | None) -> list[typing.Any]:
        timeout = checked_timeout(timeout)
        session = self._connection._session
        self._check_ready()
        await session.ensure_idle(timeout)
        record_class = self._record_class or session.record_class
        rows = await session.wait(
            session.protocol.execute(self._stmt._state, self._portal, n, record_class), timeout
        )
        await self._after_fetch(timeout)
        return rows

    async def _bind(self, timeout: float | None) -> None:
        """Bind the cursor's portal (``await con.cursor(...)``)."""
        await self._bind_portal(timeout)

    async def _exec(self, n: int, timeout: float | None) -> list[typing.Any]:
        """Fetch the next ``n`` rows from the bound portal."""
        return await self._fetch_rows(n, timeout)

    async def _bind_exec(self, n: int, timeout: float | None) -> list[typing.Any]:
        """Bind the portal and fetch its first ``n`` rows (an iterator's first batch), in one
        round trip: Bind and Execute to a named portal that stays open when suspended."""
        timeout = checked_timeout(timeout)
        await self._prepare_portal(timeout)
        session = self._connection._session
        portal = f"__asyncpg_rs_cursor_{next(_portal_numbers):x}__"
        record_class = self._record_class or session.record_class
        rows = await session.wait(
            session.protocol.bind_execute(
                self._stmt._state, self._args, portal, n, record_class, True
            ),
            timeout,
        )
        self._portal = portal
        await self._after_fetch(timeout)
        return rows

    def __repr__(self):
        attrs = []
        if self._exhausted:
            attrs.append("exhausted")
        attrs.append("")
        mod = "asyncpg" if type(self).__module__.startswith("asyncpg") else type(self).__module__
        return '<{}.{} "{!s:.30}" {}{:#x}>'.format(
            mod, type(self).__name__, self._query, " ".join(attrs), id(self)
        )


class CursorIterator(BaseCursor[RecordT]):
    """An async iterator over a query's rows, ``prefetch`` rows per round trip."""

    __slots__ = ("_prefetch", "_timeout", "_buffer")

    def __init__(self, connection, query, stmt, args, prefetch, timeout, record_class):
        super().__init__(connection, query, stmt, args, record_class)
        _check_positive(prefetch, "prefetch argument")
        self._prefetch = prefetch
        self._timeout = timeout
        self._buffer = []

    def __aiter__(self) -> CursorIterator[RecordT]:
        return self

    @guarded
    async def __anext__(self) -> RecordT:
        if self._portal is None:
            rows = await self._bind_exec(self._prefetch, self._timeout)
        elif not self._buffer and not self._exhausted:
            rows = await self._exec(self._prefetch, self._timeout)
        else:
            rows = None
        if rows is not None:
            rows.reverse()
            self._buffer = rows
        if self._buffer:
            return self._buffer.pop()
        raise StopAsyncIteration


class Cursor(BaseCursor[RecordT]):
    """A cursor to move through a query's rows by hand; valid until its transaction ends."""

    __slots__ = ()

    async def _init(self, timeout):
        await self._bind(timeout)
        return self

    @guarded
    async def fetch(self, n: int, *, timeout: float | None = None) -> list[RecordT]:
        """The next ``n`` rows (fewer at the end; ``[]`` when exhausted)."""
        self._check_ready()
        _check_positive(n, "n")
        if self._exhausted:
            return []
        return await self._exec(n, timeout)

    @guarded
    async def fetchrow(self, *, timeout: float | None = None) -> RecordT | None:
        """The next row, or ``None`` when exhausted."""
        self._check_ready()
        if self._exhausted:
            return None
        rows = await self._exec(1, timeout)
        return rows[0] if rows else None

    @guarded
    async def forward(self, n: int, *, timeout: float | None = None) -> int:
        """Skip ``n`` rows; returns how many were skipped."""
        self._check_ready()
        _check_positive(n, "n")
        con = self._connection
        # as asyncpg's: through the protocol's `query` (which agents trace), not `execute`
        # (which query loggers would see)
        status = await con._simple_query(f'MOVE FORWARD {int(n)} "{self._portal}"', timeout)
        moved = int(status.split()[-1])
        if moved < n:
            self._exhausted = True
        return moved
