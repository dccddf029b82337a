"""Transactions and savepoints: ``async with connection.transaction(): ...``."""

from __future__ import annotations

import enum
import itertools
import typing

from . import exceptions
from ._resource import guarded

if typing.TYPE_CHECKING:
    from types import TracebackType

__all__ = ("Transaction",)


class TransactionState(enum.Enum):
    NEW = 0
    STARTED = 1
    COMMITTED = 2
    ROLLEDBACK = 3
    FAILED = 4


_ISOLATION_SQL = {
    "read_committed": "READ COMMITTED",
    "read_uncommitted": "READ UNCOMMITTED",
    "repeatable_read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
}

# Why an operation is refused in a state that is not STARTED (asyncpg's wording).
_REFUSAL = {
    TransactionState.NEW: "the transaction is not yet started",
    TransactionState.COMMITTED: "the transaction is already committed",
    TransactionState.ROLLEDBACK: "the transaction is already rolled back",
    TransactionState.FAILED: "the transaction is in error state",
}

_savepoint_numbers = itertools.count(1)


class Transaction:
    """A transaction block, or a savepoint when another ``Transaction`` is already open on the
    connection.

    Use ``async with`` (commit on success, roll back on an exception), or call :meth:`start`,
    :meth:`commit` and :meth:`rollback` yourself.
    """

    __slots__ = (
        "_connection",
        "_release_ctr",
        "_isolation",
        "_readonly",
        "_deferrable",
        "_state",
        "_nested",
        "_savepoint",
        "_managed",
    )

    def __init__(self, connection, isolation, readonly, deferrable):
        if isolation is not None and isolation not in _ISOLATION_SQL:
            raise ValueError(
                f"isolation is expected to be either of {sorted(_ISOLATION_SQL)}, got {isolation!r}"
            )
        self._connection = connection
        # a pooled connection released since this object was made is no longer ours
        self._release_ctr = connection._session.release_ctr
        self._isolation = isolation
        self._readonly = readonly
        self._deferrable = deferrable
        self._state = TransactionState.NEW
        self._nested = False
        self._savepoint = None
        self._managed = False

    async def __aenter__(self) -> None:
        if self._managed:
            raise exceptions.InterfaceError(
                "cannot enter context: already in an `async with` block"
            )
        self._managed = True
        await self.start()

    async def __aexit__(
        self,
        extype: type[BaseException] | None,
        ex: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._connection._session.release_ctr != self._release_ctr:
            if extype is GeneratorExit:
                # An async generator holding the block was finalised after its pooled
                # connection went back to the pool: the pool's release rolls back for us,
                # and the two must not race on the connection.
                return
            raise exceptions.InterfaceError(
                "cannot call Transaction.__aexit__(): the underlying connection has been "
                "released back to the pool"
            )
        if self._connection.is_closed():
            if extype is GeneratorExit:
                # an async generator holding the block was closed after its connection
                # went away: there is nothing left to end
                return
            raise exceptions.InterfaceError("cannot __aexit__; the connection is closed")
        try:
            await self._finish(commit=extype is None)
        finally:
            self._managed = False

    def _refuse_unless_new(self, opname):
        if self._state is TransactionState.STARTED:
            raise exceptions.InterfaceError(f"cannot {opname}; the transaction is already started")
        if self._state is not TransactionState.NEW:
            raise exceptions.InterfaceError(f"cannot {opname}; {_REFUSAL[self._state]}")

    def _refuse_unless_started(self, opname):
        if self._state is not TransactionState.STARTED:
            raise exceptions.InterfaceError(f"cannot {opname}; {_REFUSAL[self._state]}")

    async def _begin_sql(self):
        con = self._connection
        outer = con._session.top_xact
        if outer is None:
            if con.is_in_transaction():
                raise exceptions.InterfaceError(
                    "cannot use Connection.transaction() in a manually started transaction"
                )
            parts = ["BEGIN"]
            if self._isolation is not None:
                parts.append("ISOLATION LEVEL " + _ISOLATION_SQL[self._isolation])
            if self._readonly:
                parts.append("READ ONLY")
            if self._deferrable:
                parts.append("DEFERRABLE")
            return " ".join(parts) + ";"
        if self._isolation is not None:
            outer_isolation = outer._isolation
            if outer_isolation is None:
                # the outer block took the session's default, which SET SESSION
                # CHARACTERISTICS or the server's configuration may have changed
                shown = await con.fetchval("SHOW transaction_isolation")
                outer_isolation = shown.replace(" ", "_")
            if self._isolation != outer_isolation:
                raise exceptions.InterfaceError(
                    "nested transaction has a different isolation level: "
                    f"current {self._isolation!r} != outer {outer_isolation!r}"
                )
        self._nested = True
        self._savepoint = f"asyncpg_rs_savepoint_{next(_savepoint_numbers)}"
        return f"SAVEPOINT {self._savepoint};"

    @guarded
    async def start(self) -> None:
        """Enter the transaction block (or set the savepoint, when nested)."""
        self._refuse_unless_new("start")
        con = self._connection
        session = con._session
        sql = await self._begin_sql()
        if not self._nested:
            session.top_xact = self
        try:
            await con.execute(sql)
        except BaseException:
            self._state = TransactionState.FAILED
            if session.top_xact is self:
                session.top_xact = None
            raise
        self._state = TransactionState.STARTED

    async def _finish(self, *, commit):
        opname = "commit" if commit else "rollback"
        self._refuse_unless_started(opname)
        con = self._connection
        if con._session.top_xact is self:
            con._session.top_xact = None
        if self._nested:
            sql = (
                f"RELEASE SAVEPOINT {self._savepoint};"
                if commit
                else f"ROLLBACK TO {self._savepoint};"
            )
        else:
            sql = "COMMIT;" if commit else "ROLLBACK;"
        try:
            await con.execute(sql)
        except BaseException:
            self._state = TransactionState.FAILED
            raise
        self._state = TransactionState.COMMITTED if commit else TransactionState.ROLLEDBACK

    @guarded
    async def commit(self) -> None:
        """Commit the transaction (release the savepoint, when nested)."""
        if self._managed:
            raise exceptions.InterfaceError(
                "cannot manually commit from within an `async with` block"
            )
        await self._finish(commit=True)

    @guarded
    async def rollback(self) -> None:
        """Roll the transaction back (to the savepoint, when nested)."""
        if self._managed:
            raise exceptions.InterfaceError(
                "cannot manually rollback from within an `async with` block"
            )
        await self._finish(commit=False)

    def __repr__(self):
        attrs = [f"state:{self._state.name.lower()}"]
        if self._isolation is not None:
            attrs.append(self._isolation)
        if self._readonly:
            attrs.append("readonly")
        if self._deferrable:
            attrs.append("deferrable")
        mod = type(self).__module__
        # asyncpg's tests and users' logs expect the class under its public path
        if mod.startswith("asyncpg_rs") or mod.startswith("asyncpg"):
            mod = "asyncpg"
        return "<{}.{} {} {:#x}>".format(mod, type(self).__name__, " ".join(attrs), id(self))
