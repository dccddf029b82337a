"""The session behind a ``Connection``: what the modules beside ``connection.py`` work with.

A :class:`~asyncpg_rs.connection.Connection` owns one :class:`Session` (``con._session``).
It holds the protocol and the client-side state of the server session: the statement cache
and the statements waiting to be closed, the open transaction, the record class, the
listeners, the background cancellations and the pool lease. It also carries the logic every
operation shares: waiting for a protocol future under a timeout, cancelling the server's
current command, and waiting for the connection to become idle first.

``cursor.py``, ``prepared_stmt.py``, ``transaction.py``, ``_copy.py``, ``pool.py`` and
``connect_utils.py`` use the names below, never the Connection's private attributes. The
Connection keeps the attributes asyncpg has under asyncpg's names (``_protocol``,
``_transport``, ``_loop``, ``_addr``, ``_params``, ``_config``, ``_stmt_cache``, and the
methods ``_get_statement``, ``_execute``, ``_executemany``) because libraries and
instrumentation read or wrap them; those refer to the same objects as the session's.

The session refers to its connection weakly: a connection dropped without ``close()`` must be
freed by its refcount (and warn) at once, which a reference cycle would prevent.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
import typing
import weakref

from . import _native, _pooler, connect_utils, exceptions
from ._timeouts import checked_timeout

if typing.TYPE_CHECKING:
    from .connection import Connection
    from .transaction import Transaction

__all__ = ("Session", "StatementCache", "StatementRef")


class StatementRef:
    """A server-side prepared statement shared by the cache and PreparedStatement objects.

    ``_state`` is the protocol's ``StatementState``; ``_refs`` counts the PreparedStatement
    objects using it (a statement they hold is closed only once none is left).
    ``_unnamed``: only an unnamed statement can turn stale (see ``StatementCache.get``).
    """

    __slots__ = ("_state", "_query", "_refs", "_unnamed")

    def __init__(self, state: typing.Any, query: str) -> None:
        self._state = state
        self._query = query
        self._refs = 0
        self._unnamed = not state.name


class StatementCache:
    """LRU of prepared statements keyed by query text, honouring the three cache knobs."""

    __slots__ = ("_entries", "_max_size", "_max_lifetime", "_on_evict")

    def __init__(
        self,
        max_size: int,
        max_lifetime: float,
        on_evict: typing.Callable[[StatementRef], object],
    ) -> None:
        self._entries: collections.OrderedDict[str, tuple[StatementRef, float | None]] = (
            collections.OrderedDict()
        )
        self._max_size = max_size
        self._max_lifetime = max_lifetime
        self._on_evict = on_evict

    def get(self, query: str) -> StatementRef | None:
        entry = self._entries.get(query)
        if entry is None:
            return None
        stmt, expires = entry
        # stale: an unnamed statement the server now describes with other result types. The
        # native getter is asked only for those: per cached query it cost ~2% of a SELECT 1.
        if (expires is not None and time.monotonic() > expires) or (
            stmt._unnamed and stmt._state.stale
        ):
            del self._entries[query]
            self._on_evict(stmt)
            return None
        self._entries.move_to_end(query)
        return stmt

    def put(self, query: str, stmt: StatementRef) -> None:
        if self._max_size <= 0:
            return
        expires = time.monotonic() + self._max_lifetime if self._max_lifetime else None
        self._entries[query] = (stmt, expires)
        self._entries.move_to_end(query)
        while len(self._entries) > self._max_size:
            _, (old, _) = self._entries.popitem(last=False)
            self._on_evict(old)

    def discard(self, query: str) -> None:
        entry = self._entries.pop(query, None)
        if entry is not None:
            self._on_evict(entry[0])

    def clear(self) -> None:
        entries = list(self._entries.values())
        self._entries.clear()
        for stmt, _ in entries:
            self._on_evict(stmt)

    def mark_all_closed(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Session:
    """One connection's protocol, session state and shared waiting/cancelling logic.

    Attributes (read by the sibling modules; written only where noted):

    - ``protocol``, ``loop``, ``addr``, ``params``, ``config``: as given to the Connection.
    - ``stmt_cache``: the :class:`StatementCache`.
    - ``record_class``: the connection's default row class (``connect(record_class=)``).
    - ``top_xact``: the outermost open :class:`~asyncpg_rs.transaction.Transaction`, or
      ``None``; set and cleared by ``transaction.py``.
    - ``release_ctr``: bumped by the pool at every release; objects bound to a pooled
      connection (statements, cursors, transactions) remember it to refuse use after release.
    - ``proxy``: the pool's proxy while the connection is lent out (see :meth:`set_proxy`).
    - ``listeners``, ``log_listeners``, ``query_loggers``: the registries behind
      ``add_listener``, ``add_log_listener`` and ``add_query_logger``.
    - ``aborted``: set once the connection was terminated.
    - ``pooled``: the connection goes through a connection pooler, so it prepares nothing by
      name (see ``_pooler.py``); set at connect, or when a named statement went missing.
    - ``stmt_prefix``: the random part of this connection's statement names.
    """

    __slots__ = (
        "protocol",
        "loop",
        "addr",
        "params",
        "config",
        "stmt_cache",
        "stmts_to_close",
        "cancel_tasks",
        "record_class",
        "top_xact",
        "release_ctr",
        "proxy",
        "listeners",
        "log_listeners",
        "query_loggers",
        "aborted",
        "pooled",
        "stmt_prefix",
        "_connection",
    )

    def __init__(
        self,
        connection: Connection,
        protocol: typing.Any,
        loop: asyncio.AbstractEventLoop,
        addr: typing.Any,
        config: typing.Any,
        params: typing.Any,
        record_class: type,
    ) -> None:
        self.protocol = protocol
        self.loop = loop
        self.addr = addr
        self.params = params
        self.config = config
        self.stmts_to_close: set[StatementRef] = set()
        self.stmt_cache = StatementCache(
            config.statement_cache_size,
            config.max_cached_statement_lifetime,
            # the set's own method: the cache must not hold the session or the connection
            self.stmts_to_close.add,
        )
        self.cancel_tasks: set[asyncio.Task[None]] = set()
        self.record_class = record_class
        self.top_xact: Transaction | None = None
        self.release_ctr = 0
        self.proxy: typing.Any = None
        self.listeners: dict[str, set[typing.Any]] = {}
        self.log_listeners: set[typing.Any] = set()
        self.query_loggers: set[typing.Any] = set()
        self.aborted = False
        self.pooled = False
        self.stmt_prefix = _pooler.statement_name_prefix()
        self._connection = weakref.ref(connection)

    # ------------------------------------------------------------------ state

    def is_closed(self) -> bool:
        """Whether the connection is closed (terminated, or lost by the protocol)."""
        return self.aborted or self.protocol.is_closed()

    def check_open(self) -> None:
        """Raise ``InterfaceError`` if the connection is closed."""
        if self.is_closed():
            raise exceptions.InterfaceError("connection is closed")

    def _terminate(self) -> None:
        con = self._connection()
        if con is not None:
            con.terminate()
        else:
            self.aborted = True
            self.protocol.abort()

    # ------------------------------------------------------------------ statements

    async def get_statement(
        self, query: str, timeout: float | None, *, use_cache: bool = True
    ) -> StatementRef:
        """Prepare ``query`` (through the cache when ``use_cache``) via the connection's
        ``_get_statement``, which instrumentation may wrap to see every statement."""
        con = self._connection()
        if con is None:
            raise exceptions.InterfaceError("connection is closed")
        return await con._get_statement(query, timeout, use_cache=use_cache)

    def release_statement(self, stmt: StatementRef) -> None:
        """The last PreparedStatement using ``stmt`` is gone: close it on the server at the
        next operation, unless the cache still holds it."""
        if stmt._refs == 0 and stmt._state.name and not stmt._state.closed:
            if self.stmt_cache.get(stmt._query) is not stmt:
                self.stmts_to_close.add(stmt)

    def mark_statements_closed(self) -> None:
        """The connection is gone: no statement is left to close on the server."""
        self.stmt_cache.mark_all_closed()
        self.stmts_to_close.clear()

    async def _close_pending_statements(self) -> None:
        pending = list(self.stmts_to_close)
        self.stmts_to_close.clear()
        for stmt in pending:
            if stmt._state.closed or stmt._refs > 0 or not stmt._state.name:
                # the unnamed statement (a pooled connection's) needs no Close
                continue
            if self.protocol.is_busy() or self.is_closed():
                self.stmts_to_close.add(stmt)
                return
            await self.protocol.close_statement(stmt._state)

    # ------------------------------------------------------------------ running

    async def ensure_idle(self, timeout: float | None = None) -> None:
        """Wait until the connection can take a new operation.

        A cancelled or timed-out query may still be draining, and its CancelRequest may still
        be on its way: wait for both, or the late cancel could hit the next query. Statements
        released since the last operation are closed on the server first.

        The caller's ``timeout`` (or ``command_timeout``) bounds that wait too, as asyncpg's
        does: a CancelRequest lost in a blackholed network must not make every later query
        ignore its timeout (tests/test_fault_load.py). Running out raises TimeoutError and
        leaves the cancellation going.
        """
        if self.cancel_tasks:
            timeout = self.config.command_timeout if timeout is None else checked_timeout(timeout)
            deadline = None if timeout is None else self.loop.time() + timeout
            # asyncio.wait, not gather: if this caller is cancelled meanwhile, the
            # cancellations it waits for must go on, or the connection stays busy
            _, pending = await asyncio.wait(list(self.cancel_tasks), timeout=timeout)
            if pending:
                raise asyncio.TimeoutError
            if self.protocol.is_busy() and not self.is_closed():
                left = None if deadline is None else max(0.0, deadline - self.loop.time())
                waiting = self.protocol.wait_idle()
                try:
                    await _bounded(waiting, left)
                finally:
                    del waiting  # see wait
        if self.stmts_to_close:
            await self._close_pending_statements()

    async def wait(self, fut: asyncio.Future[typing.Any], timeout: float | None) -> typing.Any:
        """Await a protocol future; on timeout or cancellation cancel the query server-side.

        ``timeout=None`` means the connection's ``command_timeout``.
        """
        if timeout is None:
            timeout = self.config.command_timeout
        # `del fut` on the way out: a failed future holds the error, whose traceback holds
        # this frame; with fut still a local that is a cycle only the GC would free
        if timeout is None:
            try:
                return await fut
            except asyncio.CancelledError:
                self.cancel_current_command()
                raise
            finally:
                del fut
        if timeout <= 0:
            self.cancel_current_command()
            raise asyncio.TimeoutError
        handle = self.loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except (asyncio.CancelledError, asyncio.TimeoutError):
            self.cancel_current_command()
            raise
        finally:
            handle.cancel()
            del fut

    async def bind_execute(
        self,
        stmt: StatementRef,
        args: typing.Sequence[typing.Any],
        limit: int,
        timeout: float | None,
        record_class: type | None,
        want_rows: bool,
    ) -> typing.Any:
        """Run the prepared ``stmt`` with ``args`` (no statement cache, no stale-plan retry);
        returns the rows (``limit`` 0: all)."""
        timeout = checked_timeout(timeout)
        await self.ensure_idle(timeout)
        return await self.wait(
            self.protocol.bind_execute(
                stmt._state, args, "", limit, record_class or self.record_class, want_rows
            ),
            timeout,
        )

    async def executemany_on(
        self,
        stmt: StatementRef,
        args: typing.Iterable[typing.Any] | typing.AsyncIterable[typing.Any],
        timeout: float | None,
        record_class: type | None,
        want_rows: bool,
    ) -> list[typing.Any] | None:
        """Stream Bind/Execute of ``stmt`` for every argument sequence, with one Sync.

        The server starts working while later batches are still being encoded, and a huge
        or endless iterable never sits in memory. If the client side fails midway (a bad
        value, the iterable raising), the batch is aborted server-side so nothing of it is
        committed; inside the caller's own transaction what already ran stays in that
        transaction, which the caller decides about.

        The batch goes through the protocol's asyncpg-named ``bind_execute_many``, which APM
        agents wrap, and comes back to :meth:`stream_executemany`.
        """
        timeout = checked_timeout(timeout)
        await self.ensure_idle(timeout)
        return await self.protocol.bind_execute_many(
            stmt._state, args, self._connection(), timeout, record_class, want_rows
        )

    async def stream_executemany(
        self,
        proto: typing.Any,
        state: typing.Any,
        args: typing.Iterable[typing.Any] | typing.AsyncIterable[typing.Any],
        timeout: float | None,
        record_class: type | None,
        want_rows: bool,
    ) -> list[typing.Any] | None:
        """The work of ``Protocol.bind_execute_many``: see :meth:`executemany_on`."""
        fut = proto.executemany_begin(state, record_class, want_rows)
        if timeout is None:
            timeout = self.config.command_timeout
        deadline = None if timeout is None else self.loop.time() + timeout
        try:
            try:
                add = proto.executemany_add
                if hasattr(args, "__aiter__"):
                    async for a in args:
                        state = add(a)
                        if state == _native.EXECUTEMANY_FAILED:
                            break  # the server already failed the batch: stop sending
                        if state == _native.EXECUTEMANY_PAUSED:
                            await self._drain_until(deadline)
                        elif state == _native.EXECUTEMANY_FLUSHED:
                            await asyncio.sleep(0)  # read what the server said meanwhile
                else:
                    for a in args:
                        state = add(a)
                        if state == _native.EXECUTEMANY_FAILED:
                            break
                        if state == _native.EXECUTEMANY_PAUSED:
                            await self._drain_until(deadline)
                        elif state == _native.EXECUTEMANY_FLUSHED:
                            await asyncio.sleep(0)
            except BaseException as e:
                if not self.is_closed():
                    proto.executemany_end(failed=True, rollback=not proto.is_in_transaction())
                    if isinstance(e, (asyncio.TimeoutError, asyncio.CancelledError)):
                        # the server may be stuck (a lock): cancel it rather than wait; the
                        # next operation waits for the cancellation to land
                        fut.add_done_callback(_consume_outcome)
                        self.cancel_current_command()
                    else:
                        try:
                            await asyncio.shield(fut)
                        except (exceptions.PostgresError, asyncio.CancelledError):
                            pass
                raise
            proto.executemany_end()
            if deadline is not None:
                timeout = max(deadline - self.loop.time(), 0.001)
            rows = await self.wait(fut, timeout)
        finally:
            del fut  # see wait()
        return rows if want_rows else None

    async def _drain_until(self, deadline: float | None) -> None:
        """Wait for the transport to take more data (flow control), until ``deadline``."""
        if deadline is None:
            await self.protocol.drain()
        else:
            await asyncio.wait_for(self.protocol.drain(), max(deadline - self.loop.time(), 0))

    # ------------------------------------------------------------------ cancellation

    def cancel_current_command(self) -> None:
        """Cancel the server's current command in the background (a CancelRequest on a side
        connection); the next operation waits for it to land (:meth:`ensure_idle`)."""
        if not self.protocol.is_busy() or self.is_closed():
            return
        task = self.loop.create_task(self._send_cancel())
        self.cancel_tasks.add(task)
        task.add_done_callback(self.cancel_tasks.discard)

    async def _send_cancel(self) -> None:
        # Bounded by command_timeout, as asyncpg's: a CancelRequest that cannot get through
        # must not keep the connection in limbo forever.
        try:
            await _bounded(self._cancel_and_drain(), self.config.command_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The cancel could not be delivered or acknowledged: the connection's state is
            # unknown, so it must not be reused.
            self._terminate()

    async def _cancel_and_drain(self) -> None:
        try:
            await connect_utils._cancel(
                loop=self.loop,
                addr=self.addr,
                params=self.params,
                backend_pid=self.protocol.get_server_pid(),
                backend_secret=self.protocol.get_backend_secret(),
            )
        except ConnectionResetError:
            # some servers reset the side connection after taking the CancelRequest; the
            # cancelled query still has to be acknowledged on this one
            pass
        await asyncio.wait_for(self.protocol.wait_idle(), 30)

    def cancel_background_tasks(self) -> None:
        """The connection is gone: background cancellations are pointless."""
        current = asyncio.current_task(self.loop) if self.loop.is_running() else None
        for task in list(self.cancel_tasks):
            if task is not current:
                task.cancel()

    # ------------------------------------------------------------------ pool lease

    def set_proxy(self, proxy: typing.Any) -> None:
        """Lend the connection out through the pool's ``proxy`` (``None`` ends the lease).

        Callbacks (listeners, termination) receive the proxy while it is set.
        """
        if self.proxy is not None and proxy is not None:
            raise exceptions.InterfaceError("internal: connection is already proxied")
        self.proxy = proxy

    def cancelling(self) -> bool:
        """Whether a cancellation of a timed-out or cancelled query is still under way."""
        return bool(self.cancel_tasks)

    async def wait_cancellations(self, timeout: float | None) -> None:
        """Wait (up to ``timeout``) for background cancellations to finish; on timeout the
        connection is terminated, since its cancelled query may still be running."""
        if not self.cancel_tasks:
            return
        pending = asyncio.gather(*list(self.cancel_tasks), return_exceptions=True)
        try:
            await _bounded(asyncio.shield(pending), timeout)
        except asyncio.TimeoutError:
            self._terminate()
            raise

    def dangling_listeners(self) -> tuple[int, int]:
        """(notification listeners, log listeners) still registered: a pooled connection's
        borrower forgot them, and the release's reset drops them."""
        return sum(len(v) for v in self.listeners.values()), len(self.log_listeners)

    def take_reset_query(self) -> str:
        """The SQL that resets the server session; what the reset clears on the client side
        (listeners, the open transaction) is cleared here."""
        con = self._connection()
        if con is None:
            raise exceptions.InterfaceError("connection is closed")
        self._drop_listeners()
        reset_query = con.get_reset_query()
        xact = self.top_xact
        if self.protocol.is_in_transaction() or xact is not None:
            if xact is None or not xact._managed:
                # reported as asyncpg does: to the loop's exception handler, not as a warning
                self.loop.call_exception_handler(
                    {"message": f"Resetting connection with an active transaction {con!r}"}
                )
            self.top_xact = None
            reset_query = "ROLLBACK;\n" + reset_query
        return reset_query

    def reset_without_round_trip(self) -> bool:
        """Send the pool's reset ahead of the connection's next query, not awaited, where
        nothing can tell that from an awaited reset: outside a transaction, no operation in
        flight, no query logger, the default reset query (it cannot fail short of losing the
        connection), and ``reset``/``execute`` and the protocol's ``query`` neither
        overridden nor wrapped (instrumentation then sees the reset run through them, as with
        asyncpg). Wrapped is judged by identity with the functions as defined: a wrapper
        patched onto ``Connection`` itself (Sentry's, OpenTelemetry's) is then seen, and a
        wrapt wrapper compares equal to what it wraps.

        Returns whether it was sent; if the server fails it, the connection is closed and the
        pool replaces it. Otherwise nothing was done and the caller awaits
        ``Connection.reset``."""
        con = self._connection()
        if con is None or self.aborted or self.query_loggers or self.top_xact is not None:
            return False
        cls = type(con)
        reset_path = _reset_path()
        if (
            cls.reset is not reset_path[0]
            or cls.execute is not reset_path[1]
            or cls.get_reset_query is not reset_path[2]
            or type(self.protocol).query is not reset_path[3]
        ):
            return False
        # the protocol checks open, idle and outside a transaction, and sends, in one call
        if not self.protocol.send_reset_if_idle(con.get_reset_query()):
            return False
        self._drop_listeners()
        return True

    def _drop_listeners(self) -> None:
        """The reset's client side: the server forgets LISTEN, so do the callbacks."""
        self.listeners.clear()
        self.log_listeners.clear()


@functools.cache
def _reset_path() -> tuple[typing.Any, ...]:
    """``Connection``'s reset functions as defined, and the protocol's ``query``: looked up
    once, since connection.py imports this module and the lookup must wait for it."""
    from . import connection as _connection
    from .protocol import protocol as _protocol_layer

    return (*_connection.RESET_PATH, _protocol_layer.UNWRAPPED_QUERY)


def _expire(fut: asyncio.Future[typing.Any]) -> None:
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


def _consume_outcome(fut: asyncio.Future[typing.Any]) -> None:
    # an abandoned operation's error is expected: mark it retrieved so asyncio stays quiet
    if not fut.cancelled():
        fut.exception()


async def _bounded(aw: typing.Awaitable[typing.Any], timeout: float | None) -> typing.Any:
    if timeout is None:
        return await aw
    return await asyncio.wait_for(aw, timeout)
