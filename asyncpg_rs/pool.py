"""The connection pool: asyncpg's ``Pool`` API, built for services under load.

- Waiters are served first come, first served; an acquire that times out or is cancelled
  leaves nothing behind.
- A connection that is closed, broken, past ``max_queries`` or expired is replaced, never
  handed out.
- Releasing a connection always resets its session (a plain ``SELECT`` can take an advisory
  lock or change a setting); where nothing can observe it, the reset is sent ahead of the
  next borrower's first query instead of costing the release a round trip.
"""

from __future__ import annotations

import asyncio
import logging
import typing
import warnings

from . import _holder_queue, exceptions
from . import connection as _connection
from . import pipeline as _pipeline
from .protocol import Record

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterable, Generator, Iterable, Sequence

    from . import _typing as _t

    # for type checkers the proxy is the connection it forwards to (``__getattr__``)
    _ProxyBase = _connection.Connection
else:
    _ProxyBase = _connection._ConnectionProxy

__all__ = ("Pool", "create_pool", "PoolConnectionProxy")

logger = logging.getLogger("asyncpg.pool")


def _public_name(cls):
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module == "asyncpg_rs" or module.startswith("asyncpg_rs."):
        module = "asyncpg" + module[len("asyncpg_rs") :]
    return f"{module}.{cls.__qualname__}"


class PoolConnectionProxy(_ProxyBase):
    """What ``Pool.acquire()`` hands out: the connection, until it is released.

    Every ``Connection`` method and attribute is available through it; after release any use
    raises :class:`~asyncpg_rs.exceptions.InterfaceError`.
    """

    __slots__ = ("_con", "_holder")

    def __init__(self, holder: _Holder, con: _connection.Connection) -> None:
        self._con = con
        self._holder = holder
        con._session.set_proxy(self)

    def __getattr__(self, attr):
        con = object.__getattribute__(self, "_con")
        if con is None:
            raise _released(attr)
        return getattr(con, attr)

    def _detach(self):
        con, self._con = self._con, None
        if con is not None:
            con._session.set_proxy(None)
        return con

    def __repr__(self):
        if self._con is None:
            return f"<{type(self).__name__} [released] {id(self):#x}>"
        return f"<{type(self).__name__} {self._con!r} {id(self):#x}>"


def _released(attr):
    return exceptions.InterfaceError(
        f"cannot call Connection.{attr}(): connection has been released back to the pool"
    )


class _ForwardToConnection:
    """``proxy.<name>`` for a public method of ``Connection``: the lent connection's
    attribute, as ``__getattr__`` gives it (so a method patched onto the class or the
    connection later is the one called), found without the failed lookup that comes before
    ``__getattr__``: Python raises and clears an AttributeError there, which cost about 6k
    instructions per call made through the proxy (a sixth of ``await con.fetchrow(...)``)."""

    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = name

    def __get__(self, proxy, owner=None):
        if proxy is None:
            return self
        con = proxy._con
        if con is None:
            raise _released(self._name)
        return getattr(con, self._name)

    def __call__(self, proxy, *args, **kwargs):
        # called on the class, as ``PoolConnectionProxy.fetch(proxy, ...)`` (or by a wrapper
        # patched over it): asyncpg's proxy methods are plain functions there
        return self.__get__(proxy)(*args, **kwargs)


for _name, _value in vars(_connection.Connection).items():
    if not _name.startswith("_") and callable(_value) and not hasattr(PoolConnectionProxy, _name):
        setattr(PoolConnectionProxy, _name, _ForwardToConnection(_name))
del _name, _value


class _Holder:
    """One of the pool's ``max_size`` places: maybe a connection, and its bookkeeping."""

    __slots__ = (
        "_pool",
        "_con",
        "_in_use",
        "_queries",
        "_generation",
        "_idle_timer",
        "_idle_since",
        "_released",
        "_timeout",
    )

    def __init__(self, pool):
        self._pool = pool
        self._con = None
        # None while free; while lent out True, or the future close() waits on (returned())
        self._in_use = None
        self._queries = 0
        self._generation = None
        self._idle_timer = None
        self._idle_since = None  # loop time of the release while idle, else None
        self._released = None
        # the timeout of the acquire that handed the connection out: release's default
        self._timeout = None

    def is_connected(self):
        return self._con is not None and not self._con.is_closed()

    def is_idle(self):
        return self._in_use is None and self.is_connected()

    def is_ready(self):
        """Connected, open and of the pool's current generation: ``acquire`` would hand the
        connection out as it is."""
        con = self._con
        return (
            con is not None and self._generation == self._pool._generation and not con.is_closed()
        )

    async def connect(self):
        pool = self._pool
        con = await pool._connect_new()
        self._con = con
        self._queries = 0
        self._generation = pool._generation
        con.add_termination_listener(self._on_connection_terminated)

    def _on_connection_terminated(self, con):
        if con is self._con and self._in_use is None:
            # an idle connection died (server restart, pg_terminate_backend): forget it now
            # and let the pool refill to min_size
            self._con = None
            self._pool._schedule_refill()

    async def acquire(self):
        """Make the connection ready to hand out (connect, or replace a stale one)."""
        pool = self._pool
        self._idle_since = None  # in use: an idle timer that fires now leaves it be
        if self._con is not None and not self.is_ready():
            await self._discard()
        if self._con is None:
            await self.connect()
            if pool._init is not None:
                try:
                    await pool._init(self._con)
                except BaseException:
                    await self._discard()
                    raise
        self._in_use = True
        return self._con

    def open_lease(self):
        """The lease ``acquire`` opens on a ready connection, without awaiting anything;
        no acquire timeout bounds its release (``Pool.release``'s default)."""
        self._idle_since = None
        self._in_use = True
        self._timeout = None

    async def release(self, timeout):
        pool = self._pool
        con = self._con
        try:
            if con is None or con.is_closed():
                self._con = None
                return
            self._queries += 1
            session = con._session
            session.release_ctr += 1
            _warn_dangling(con)
            if self._generation != pool._generation or (
                pool._max_queries and self._queries >= pool._max_queries
            ):
                await self._discard()
                return
            if session.cancelling():
                # A timed-out query is still being cancelled: wait for that within the
                # release timeout; past it the connection is terminated and the holder freed.
                started = pool._loop.time()
                try:
                    await session.wait_cancellations(timeout)
                except asyncio.TimeoutError:
                    self._con = None
                    raise
                if timeout is not None:
                    timeout = max(timeout - (pool._loop.time() - started), 0.001)
                if con.is_closed():
                    self._con = None
                    return
            try:
                if pool._reset is not None:
                    await _bounded(pool._reset(con), timeout)
                elif timeout is not None or not session.reset_without_round_trip():
                    # Always reset: a plain SELECT can take an advisory lock or change a
                    # setting. Where possible the reset rides ahead of the next query; a
                    # release with a timeout awaits it, so that a reset which cannot finish
                    # in time raises TimeoutError here and the connection is dropped.
                    await con.reset(timeout=timeout)
            except (Exception, asyncio.CancelledError):
                # the caller learns why, as with asyncpg (a TimeoutError for a slow reset)
                self._drop_unreset(con)
                raise
            self._start_idle_timer()
        finally:
            self._mark_free()

    def release_at_once(self, timeout):
        """The common release, done here and now: the reset goes out ahead of the next query
        and nothing has to be awaited. Returns False, having done nothing, where ``release``
        has something to await or decide (a reset to wait for, a connection to replace, a
        cancellation to let land, forgotten listeners to warn about); the caller then runs
        that one. No task is made per release this way (``Pool.release`` shields the awaited
        one in a task)."""
        pool = self._pool
        con = self._con
        if (
            timeout is not None
            or pool._reset is not None
            or con is None
            or self._generation != pool._generation
            or (pool._max_queries and self._queries + 1 >= pool._max_queries)
        ):
            return False
        session = con._session
        if session.cancel_tasks or session.listeners or session.log_listeners:
            return False
        try:
            if not session.reset_without_round_trip():
                return False
        except BaseException:
            self._drop_unreset(con)
            self._mark_free()
            raise
        self._queries += 1
        session.release_ctr += 1
        self._start_idle_timer()
        self._mark_free()
        return True

    def give_back(self, timeout):
        """Release in place, or return the release to await: shielded, so that a cancelled
        caller cannot leave the place half-released."""
        if self.release_at_once(timeout):
            return None
        return asyncio.shield(self.release(timeout))

    def _drop_unreset(self, con):
        """A connection whose session could not be reset must not be reused."""
        con.terminate()
        self._con = None

    async def release_after_failure(self):
        if self._con is not None:
            self._con.terminate()
            self._con = None
        self._mark_free()

    def returned(self):
        """A future resolved when the lent connection comes back. Made on demand: only
        ``Pool.close`` waits for one, and a future per lease was about 4% of a pooled
        query."""
        if self._in_use is True:
            self._in_use = self._pool._loop.create_future()
        return self._in_use

    def _mark_free(self):
        in_use, self._in_use = self._in_use, None
        if in_use is not None and in_use is not True and not in_use.done():
            in_use.set_result(None)
        self._pool._queue.put_nowait(self)
        if self._con is None:
            # the connection was dropped on release (closed, reset failed, recycled): the
            # pool restores its floor of min_size connections in the background
            self._pool._schedule_refill()

    async def _discard(self):
        con, self._con = self._con, None
        if con is None:
            return
        con.remove_termination_listener(self._on_connection_terminated)
        if con.is_closed():
            return
        try:
            await asyncio.wait_for(con.close(), 10)
        except (Exception, asyncio.TimeoutError):
            con.terminate()

    def _start_idle_timer(self):
        """Idle from now: the connection closes once it has been idle for the pool's
        ``max_inactive_connection_lifetime``. One timer per idle stretch, not one per lease:
        a lease only clears ``_idle_since``, and a timer that fires on a connection used since
        it was set waits again for the time left (a call_later and a cancel per lease were
        about 3% of a pooled query)."""
        lifetime = self._pool._max_inactive_connection_lifetime
        if lifetime:
            loop = self._pool._loop
            self._idle_since = loop.time()
            if self._idle_timer is None:
                self._idle_timer = loop.call_later(lifetime, self._expire_idle)

    def _cancel_idle_timer(self):
        self._idle_since = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _expire_idle(self):
        self._idle_timer = None
        since = self._idle_since
        if since is None:
            return  # leased: its release sets the timer again
        pool = self._pool
        left = since + pool._max_inactive_connection_lifetime - pool._loop.time()
        if left > 0:
            self._idle_timer = pool._loop.call_later(left, self._expire_idle)
            return
        self._idle_since = None
        if self.is_idle() and pool.get_size() > pool._min_size:
            con, self._con = self._con, None
            con.remove_termination_listener(self._on_connection_terminated)
            pool._loop.create_task(_close_quietly(con))

    def terminate(self):
        self._cancel_idle_timer()
        if self._con is not None:
            self._con.terminate()
            self._con = None


def _warn_dangling(con):
    """Warn about listeners a caller forgot: the reset drops them, which is surely a bug."""
    session = con._session
    if not (session.listeners or session.log_listeners):
        return  # the common case, on every release: no counting
    n, n_log = session.dangling_listeners()
    if n:
        warnings.warn(
            exceptions.InterfaceWarning(
                f"{con!r} is being released to the pool but has {n} active notification "
                f"listener{'s' if n != 1 else ''}"
            ),
            stacklevel=4,
        )
    if n_log:
        warnings.warn(
            exceptions.InterfaceWarning(
                f"{con!r} is being released to the pool but has {n_log} active log "
                f"listener{'s' if n_log != 1 else ''}"
            ),
            stacklevel=4,
        )


async def _bounded(aw, timeout):
    if timeout is None:
        return await aw
    return await asyncio.wait_for(aw, timeout)


async def _close_quietly(con):
    try:
        await asyncio.wait_for(con.close(), 10)
    except (Exception, asyncio.TimeoutError):
        con.terminate()


class PoolAcquireContext:
    """``pool.acquire()``: use it with ``async with`` (released on exit) or ``await`` it."""

    __slots__ = ("_pool", "_timeout", "_con", "_done")

    def __init__(self, pool, timeout):
        self._pool = pool
        self._timeout = timeout
        self._con = None
        self._done = False

    async def __aenter__(self) -> PoolConnectionProxy:
        if self._con is not None or self._done:
            raise exceptions.InterfaceError("a connection is already acquired")
        self._con = await self._pool._acquire(self._timeout)
        return self._con

    async def __aexit__(self, *exc: object) -> None:
        self._done = True
        con, self._con = self._con, None
        await self._pool.release(con)

    def __await__(self) -> Generator[typing.Any, None, PoolConnectionProxy]:
        self._done = True
        return self._pool._acquire(self._timeout).__await__()


class Pool:
    """A pool of connections. Create it with :func:`create_pool`.

    ``async with pool.acquire() as con:`` borrows a connection; the shortcuts
    (:meth:`fetch`, :meth:`execute`, ...) borrow one for a single call.
    """

    def __init__(
        self,
        *connect_args: str | None,
        min_size: int,
        max_size: int,
        max_queries: int,
        max_inactive_connection_lifetime: float,
        connect: _t.PoolConnect | None = None,
        setup: _t.PoolSetup | None = None,
        init: _t.PoolInit | None = None,
        reset: _t.PoolInit | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        connection_class: type[_connection.Connection] = _connection.Connection,
        record_class: type[Record] = Record,
        init_size: int | None = None,
        **connect_kwargs: typing.Any,
    ) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.get_event_loop_policy().get_event_loop()
        if max_size <= 0:
            raise ValueError("max_size is expected to be greater than zero")
        if min_size < 0:
            raise ValueError("min_size is expected to be greater or equal to zero")
        if min_size > max_size:
            raise ValueError("min_size is greater than max_size")
        if init_size is None:
            init_size = min_size
        if init_size < 0:
            raise ValueError("init_size is expected to be greater or equal to zero")
        if init_size < min_size:
            raise ValueError("init_size is smaller than min_size")
        if init_size > max_size:
            raise ValueError("init_size is greater than max_size")
        if max_queries <= 0:
            raise ValueError("max_queries is expected to be greater than zero")
        if max_inactive_connection_lifetime < 0:
            raise ValueError(
                "max_inactive_connection_lifetime is expected to be greater or equal to zero"
            )
        if not issubclass(connection_class, _connection.Connection):
            raise exceptions.InterfaceError(
                "connection_class is expected to be a subclass of "
                f"asyncpg.Connection, got {connection_class!r}"
            )
        if not issubclass(record_class, Record):
            raise exceptions.InterfaceError(
                f"record_class is expected to be a subclass of asyncpg.Record, got {record_class!r}"
            )
        self._loop = loop
        self._min_size = min_size
        self._max_size = max_size
        self._init_size = init_size
        self._max_queries = max_queries
        self._max_inactive_connection_lifetime = max_inactive_connection_lifetime
        self._connect_fn = connect
        self._setup = setup
        self._init = init
        self._reset = reset
        self._connection_class = connection_class
        self._record_class = record_class
        self._connect_args = connect_args
        self._connect_kwargs = connect_kwargs
        self._holders = [_Holder(self) for _ in range(max_size)]
        self._queue = None
        self._generation = 0
        self._initialized = False
        self._initializing = False
        self._closing = False
        self._closed = False
        self._maintenance_task = None

    # -------------------------------------------------------------- lifecycle

    async def _async__init__(self):
        if self._initialized:
            return self
        if self._initializing:
            raise exceptions.InterfaceError("pool is being initialized in another task")
        if self._closed:
            raise exceptions.InterfaceError("pool is closed")
        self._initializing = True
        try:
            self._queue = _holder_queue.HolderQueue(self._loop)
            for holder in self._holders:
                self._queue.put_nowait(holder)
            if self._init_size:
                # the first connection alone, so a bad DSN fails once, not init_size times
                first = self._holders[-1]
                await self._connect_holder(first)
                rest = self._holders[-self._init_size : -1]
                if rest:
                    await asyncio.gather(*(self._connect_holder(h) for h in rest))
            self._initialized = True
            return self
        except BaseException:
            for h in self._holders:
                h.terminate()
            raise
        finally:
            self._initializing = False

    async def _connect_holder(self, holder):
        await holder.connect()
        if self._init is not None:
            try:
                await self._init(holder._con)
            except BaseException:
                await holder._discard()
                raise
        holder._start_idle_timer()

    def __await__(self) -> Generator[typing.Any, None, typing.Self]:
        return self._async__init__().__await__()

    async def __aenter__(self) -> typing.Self:
        await self._async__init__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connect_new(self):
        if self._connect_fn is not None:
            con = await self._connect_fn(
                *self._connect_args,
                loop=self._loop,
                connection_class=self._connection_class,
                record_class=self._record_class,
                **self._connect_kwargs,
            )
        else:
            con = await _connection.connect(
                *self._connect_args,
                loop=self._loop,
                connection_class=self._connection_class,
                record_class=self._record_class,
                **self._connect_kwargs,
            )
        if not isinstance(con, self._connection_class):
            good = _public_name(self._connection_class)
            bad = _public_name(type(con))
            if isinstance(con, _connection.Connection):
                await _close_quietly(con)
            raise exceptions.InterfaceError(
                f"expected pool connect callback to return an instance of '{good}', got '{bad}'"
            )
        return con

    def _schedule_refill(self):
        if self._closing or not self._initialized:
            return
        if self._maintenance_task is not None and not self._maintenance_task.done():
            return
        self._maintenance_task = self._loop.create_task(self._refill())

    async def _refill(self):
        """Bring the number of open connections back to ``min_size``."""
        backoff = 1.0
        while not self._closing and self.get_size() < self._min_size:
            holder = self._take_unconnected()
            if holder is None:
                return
            failed = False
            try:
                await self._connect_holder(holder)
                if self._closing:
                    await holder._discard()
                    return
                if not holder.is_connected():
                    # init (or the server) closed it already: it does not restore the floor
                    await holder._discard()
                    raise exceptions.ConnectionDoesNotExistError(
                        "the new connection was closed before it could join the pool"
                    )
            except (Exception, asyncio.TimeoutError):
                logger.warning(
                    "Failed to restore the pool connection floor; retrying", exc_info=True
                )
                failed = True
            finally:
                # back in the queue: only what is in the queue may be handed out, so a
                # holder is never connected twice at once
                self._queue.put_nowait(holder)
            if failed:
                # back off with the holder in the queue: an acquire waiting for it gets it
                # and connects itself, so its caller learns why connecting fails; the delay
                # doubles up to a minute (asyncpg's schedule), so a server that is down for
                # long is not hammered
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0

    def _take_unconnected(self):
        """Take an idle holder without a connection out of the queue, or None."""
        return self._take_first(lambda h: h._con is None)

    def _take_first(self, wanted):
        """Take the first queued holder for which ``wanted(holder)`` holds, or None; the
        others keep their places."""
        taken = []
        found = None
        while not self._queue.empty():
            h = self._queue.get_nowait()
            if wanted(h):
                found = h
                break
            taken.append(h)
        for h in reversed(taken):
            self._queue.put_nowait(h)
        return found

    def _prefer_connected(self, holder):
        """A holder without a connection came off the queue: hand out an idle connection
        instead if one is queued, so one that outlived an idle shrink is reused rather than
        a new one opened beside it."""
        if holder._con is not None:
            return holder
        connected = self._take_first(_Holder.is_connected)
        if connected is None:
            return holder
        self._queue.put_nowait(holder)
        return connected

    # -------------------------------------------------------------- acquire/release

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        """Borrow a connection: ``async with pool.acquire() as con:`` or ``await``."""
        return PoolAcquireContext(self, timeout)

    async def _acquire(self, timeout):
        self._check_open()
        deadline = None if timeout is None else self._loop.time() + timeout
        if timeout is None:
            holder = await self._queue.get()
        else:
            holder = await asyncio.wait_for(self._queue.get(), timeout)
        return await self._lease(holder, deadline, timeout)

    async def _lease(self, holder, deadline, timeout):
        """Hand out the connection of ``holder``, just taken off the queue, as a proxy:
        connected (or replaced) if it must be, ``init`` and ``setup`` run."""
        holder = self._prefer_connected(holder)
        try:
            if deadline is None:
                con = await holder.acquire()
            else:
                con = await asyncio.wait_for(holder.acquire(), max(deadline - self._loop.time(), 0))
        except BaseException:
            # nothing may leak: the place goes back to the queue, a half-made
            # connection is dropped
            if holder._in_use is not None:
                await holder.release_after_failure()
            else:
                if holder._con is not None and holder._con.is_closed():
                    holder._con = None
                self._queue.put_nowait(holder)
            raise
        holder._timeout = timeout
        proxy = PoolConnectionProxy(holder, con)
        if self._setup is not None:
            try:
                await self._setup(proxy)
            except BaseException:
                proxy._detach()
                await holder.release_after_failure()
                raise
        return proxy

    async def release(
        self, connection: PoolConnectionProxy, *, timeout: float | None = None
    ) -> None:
        """Give back a connection from :meth:`acquire`; its session is reset.

        ``timeout`` bounds the reset (default: the timeout given to :meth:`acquire`); a reset
        that does not finish in time raises ``TimeoutError`` and the connection is dropped.
        """
        if type(connection) is not PoolConnectionProxy or connection._holder._pool is not self:
            raise exceptions.InterfaceError(
                f"Pool.release() received invalid connection: {connection!r} is not a "
                "member of this pool"
            )
        holder = connection._holder
        if connection._con is None:
            return  # already released
        if timeout is None:
            # as asyncpg: the acquire's timeout also bounds the release (the session reset)
            timeout = holder._timeout
        connection._detach()
        pending = holder.give_back(timeout)
        if pending is not None:
            await pending

    # -------------------------------------------------------------- shortcuts

    async def _shortcut(self, method, args, kwargs):
        """``method`` of a pooled connection, as ``async with self.acquire() as con:`` runs
        it, minus the acquire's and the release's coroutines where the connection is ready
        (they were about a seventh of the client's CPU per pooled one-row query). A subclass
        or instrumentation that overrides ``acquire`` or ``release``, and a ``setup``
        callback, which expects the proxy, see every shortcut go through them, as in
        asyncpg."""
        cls = type(self)
        if self._setup is not None or (cls.acquire, cls.release) != _ACQUIRE_RELEASE:
            async with self.acquire() as con:
                return await getattr(con, method)(*args, **kwargs)
        self._check_open()
        queue = self._queue
        # waiting in line as acquire() waits: more tasks than connections is the usual case
        holder = queue.items.pop() if queue.items else await queue.get()
        if not holder.is_ready():
            proxy = await self._lease(holder, None, None)
            try:
                return await getattr(proxy, method)(*args, **kwargs)
            finally:
                await self.release(proxy)
        holder.open_lease()
        con = holder._con
        # the lease as acquire() makes it: callbacks during the statement get the proxy
        proxy = PoolConnectionProxy(holder, con)
        try:
            return await getattr(con, method)(*args, **kwargs)
        finally:
            proxy._detach()
            pending = holder.give_back(None)
            if pending is not None:
                await pending

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        """Run ``query`` on a pooled connection (see :meth:`Connection.execute`)."""
        return await self._shortcut("execute", (query, *args), {"timeout": timeout})

    async def executemany(
        self, command: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None:
        """See :meth:`Connection.executemany`."""
        async with self.acquire() as con:
            return await con.executemany(command, args, timeout=timeout)

    async def fetch_many_queries(
        self,
        queries: Iterable[_pipeline.QueryItem] | AsyncIterable[_pipeline.QueryItem],
        *,
        timeout: float | None = None,
        atomic: bool = False,
        record_class: type[Record] | None = None,
        return_exceptions: bool = False,
    ) -> list[typing.Any]:
        """Run ``queries`` in one pipeline on a pooled connection (see
        :meth:`Connection.fetch_many_queries`)."""
        options = _pipeline.fetch_many_options(timeout, atomic, record_class, return_exceptions)
        async with self.acquire() as con:
            return await con.fetch_many_queries(queries, **options._asdict())

    def pipeline(
        self, *, atomic: bool = False, timeout: float | None = None
    ) -> _pipeline.PoolPipeline:
        """``async with pool.pipeline() as p:`` runs a :meth:`Connection.pipeline` on a
        connection acquired for the block and released at its end (see
        :class:`~asyncpg_rs.pipeline.PoolPipeline`)."""
        return _pipeline.PoolPipeline(self, atomic=atomic, timeout=timeout)

    @typing.overload
    async def fetch(
        self,
        query: str,
        *args: object,
        timeout: float | None = ...,
        record_class: None = ...,
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
        """See :meth:`Connection.fetch`."""
        kwargs = {"timeout": timeout, "record_class": record_class}
        return await self._shortcut("fetch", (query, *args), kwargs)

    async def fetchval(
        self, query: str, *args: object, column: int = 0, timeout: float | None = None
    ) -> typing.Any:
        """See :meth:`Connection.fetchval`."""
        kwargs = {"column": column, "timeout": timeout}
        return await self._shortcut("fetchval", (query, *args), kwargs)

    @typing.overload
    async def fetchrow(
        self,
        query: str,
        *args: object,
        timeout: float | None = ...,
        record_class: None = ...,
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
        """See :meth:`Connection.fetchrow`."""
        kwargs = {"timeout": timeout, "record_class": record_class}
        return await self._shortcut("fetchrow", (query, *args), kwargs)

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
        """See :meth:`Connection.fetchmany`."""
        async with self.acquire() as con:
            return await con.fetchmany(query, args, timeout=timeout, record_class=record_class)

    async def copy_from_table(self, table_name: str, **kwargs: typing.Any) -> str:
        """See :meth:`Connection.copy_from_table`."""
        async with self.acquire() as con:
            return await con.copy_from_table(table_name, **kwargs)

    async def copy_from_query(self, query: str, *args: object, **kwargs: typing.Any) -> str:
        """See :meth:`Connection.copy_from_query`."""
        async with self.acquire() as con:
            return await con.copy_from_query(query, *args, **kwargs)

    async def copy_to_table(self, table_name: str, **kwargs: typing.Any) -> str:
        """See :meth:`Connection.copy_to_table`."""
        async with self.acquire() as con:
            return await con.copy_to_table(table_name, **kwargs)

    async def copy_records_to_table(self, table_name: str, **kwargs: typing.Any) -> str:
        """See :meth:`Connection.copy_records_to_table`."""
        async with self.acquire() as con:
            return await con.copy_records_to_table(table_name, **kwargs)

    # -------------------------------------------------------------- state

    def get_size(self) -> int:
        """The number of open connections (idle or in use)."""
        return sum(1 for h in self._holders if h.is_connected())

    def get_init_size(self) -> int:
        """The number of connections opened when the pool starts."""
        return self._init_size

    def get_min_size(self) -> int:
        """The floor on the number of connections."""
        return self._min_size

    def get_max_size(self) -> int:
        """The maximum number of connections."""
        return self._max_size

    def get_idle_size(self) -> int:
        """The number of open connections not in use."""
        return sum(1 for h in self._holders if h.is_idle())

    def is_closing(self) -> bool:
        """Whether :meth:`close` or :meth:`terminate` was called."""
        return self._closing

    def set_connect_args(self, dsn: str | None = None, **connect_kwargs: typing.Any) -> None:
        """Connection arguments for connections made from now on."""
        self._connect_args = (dsn,)
        self._connect_kwargs = connect_kwargs

    async def expire_connections(self) -> None:
        """Replace every connection: idle ones at their next acquire, busy ones at release."""
        self._generation += 1

    async def close(self) -> None:
        """Close gracefully: wait for borrowed connections to come back, then close all."""
        if self._closed:
            return
        self._check_init()
        self._closing = True
        warning = self._loop.call_later(60, self._warn_slow_close)
        task = self._maintenance_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            pending = [h.returned() for h in self._holders if h._in_use is not None]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for h in self._holders:
                h._cancel_idle_timer()
            await asyncio.gather(*(h._discard() for h in self._holders), return_exceptions=True)
        except (Exception, asyncio.CancelledError):
            self.terminate()
            raise
        finally:
            warning.cancel()
            self._closed = True
            if self._maintenance_task is not None:
                self._maintenance_task.cancel()

    def _warn_slow_close(self):
        logger.warning(
            "Pool.close() is taking over 60 seconds to complete. Check if you have any "
            "unreleased connections left. Use asyncio.wait_for() to set a timeout for "
            "Pool.close()."
        )

    def terminate(self) -> None:
        """Close every connection at once."""
        if self._closed:
            return
        self._closing = True
        for h in self._holders:
            h.terminate()
        self._closed = True
        if self._maintenance_task is not None:
            self._maintenance_task.cancel()

    def _check_init(self):
        if not self._initialized:
            if self._initializing:
                raise exceptions.InterfaceError(
                    "pool is being initialized, but not yet ready: likely there is a race "
                    "between creating a pool and using it"
                )
            raise exceptions.InterfaceError("pool is not initialized")
        if self._closed:
            raise exceptions.InterfaceError("pool is closed")

    def _check_open(self):
        self._check_init()
        if self._closing:
            raise exceptions.InterfaceError("pool is closing")


# Pool's own acquire and release: the shortcuts skip them only while they are these
_ACQUIRE_RELEASE = (Pool.acquire, Pool.release)


def create_pool(
    dsn: str | None = None,
    *,
    min_size: int = 10,
    max_size: int = 10,
    max_queries: int = 50000,
    max_inactive_connection_lifetime: float = 300.0,
    connect: _t.PoolConnect | None = None,
    setup: _t.PoolSetup | None = None,
    init: _t.PoolInit | None = None,
    reset: _t.PoolInit | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    connection_class: type[_connection.Connection] = _connection.Connection,
    record_class: type[Record] = Record,
    init_size: int | None = None,
    **connect_kwargs: typing.Any,
) -> Pool:
    """Create a :class:`Pool`; ``await`` it, or use it with ``async with``.

    ``connect_kwargs`` are :func:`asyncpg_rs.connect`'s arguments. ``setup`` runs on every
    acquire, ``init`` on every new connection, ``reset`` (default: ``Connection.reset``,
    the whole session) on every release.
    """
    return Pool(
        dsn,
        connection_class=connection_class,
        record_class=record_class,
        min_size=min_size,
        max_size=max_size,
        max_queries=max_queries,
        loop=loop,
        connect=connect,
        setup=setup,
        init=init,
        reset=reset,
        max_inactive_connection_lifetime=max_inactive_connection_lifetime,
        init_size=init_size,
        **connect_kwargs,
    )
