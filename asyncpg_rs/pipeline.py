"""Pipelines: many statements sent before the first reply is read.

``Connection.pipeline()`` gives a :class:`Pipeline`; ``Connection.fetch_many_queries()`` is
the plain form for a list (or any iterable) of queries. Both send every statement without
waiting for the previous one's reply, so N independent lookups cost one network round trip
instead of N. docs/guide.md ("Pipelines") describes the semantics for users; this module's
comments say why they are so.

Round trips: statements already in the statement cache go out in one round trip. Statements
new to the cache are parsed and described first, all of a batch together (one extra round
trip), inside the same pipeline; types never seen before are then introspected inside the
pipeline too (one more round trip per level of type dependencies), as for a single query.

The wire work is done by the protocol's ``pipeline_*`` methods (src/pg/protocol/pipeline.rs):
each statement gets its own future, settled as soon as its reply is complete.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import typing

from . import _native, _pooler, _session, exceptions
from ._resource import check_connection
from ._timeouts import checked_timeout

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterable, Iterable

    from .connection import Connection
    from .pool import Pool
    from .prepared_stmt import PreparedStatement

# What a pipeline statement may be: a query, or a PreparedStatement of the same connection;
# fetch_many_queries takes either alone or with its arguments.
Query = typing.Union[str, "PreparedStatement[typing.Any]"]
QueryItem = typing.Union[Query, tuple[Query, "typing.Sequence[object]"]]

__all__ = ("Pipeline", "PipelineResult", "PoolPipeline", "Query", "QueryItem", "fetch_many_queries")

# Requests taken from the input at a time: the statements new to the cache among them are
# prepared together, in one round trip. Bounded, so an endless iterable streams.
_CHUNK = 512

_FETCH, _FETCHROW, _FETCHVAL, _EXECUTE = range(4)


class _Request:
    # stmt: the statement of a PreparedStatement given instead of a query string
    __slots__ = ("query", "args", "kind", "column", "record_class", "index", "fut", "stmt")

    def __init__(self, query, args, kind, column, record_class, index, session):
        self.fut = self.stmt = None
        self.record_class = record_class
        self.query = _query_text(self, query, index, session)
        self.args = args
        self.kind = kind
        self.column = column
        self.index = index


def _query_text(req: _Request, query: typing.Any, index: int, session: typing.Any) -> str:
    """The query's text; a PreparedStatement's statement is kept in ``req.stmt``."""
    if type(query) is str:
        return query
    if isinstance(query, str):
        return str(query)
    from .prepared_stmt import PreparedStatement

    if isinstance(query, PreparedStatement):
        check_connection(query, "pipeline")
        if query._connection._session is not session:
            raise exceptions.InterfaceError(
                f"pipeline statement #{index + 1}: the prepared statement belongs to another "
                "connection"
            )
        req.stmt = query._stmt
        if req.record_class is None:
            req.record_class = query._record_class
        return query._query
    raise exceptions.InterfaceError(
        f"pipeline statement #{index + 1}: the query must be a str or a PreparedStatement, "
        f"got {type(query).__name__}"
    )


def _convert(req: _Request, value: typing.Any) -> typing.Any:
    kind = req.kind
    if kind == _FETCH or kind == _EXECUTE:
        return value
    if not value:
        return None
    if kind == _FETCHROW:
        return value[0]
    return value[0][req.column]


class PipelineResult(_Request):
    """The result of one statement of a :class:`Pipeline`: ``await`` it.

    Awaiting a result whose statement was not sent yet sends everything queued in the
    pipeline first (:meth:`Pipeline.sync`), so awaiting inside the ``async with`` block
    never deadlocks.
    """

    # the request itself (one object per statement, not two)
    __slots__ = ("_pipeline", "_retrieved")

    def __init__(self, pipeline, query, args, kind, column, record_class, index) -> None:
        self.fut = self.stmt = None
        self.record_class = record_class
        self.query = (
            query if type(query) is str else _query_text(self, query, index, pipeline._con._session)
        )
        self.args = args
        self.kind = kind
        self.column = column
        self.index = index
        self._pipeline = pipeline
        self._retrieved = False

    def done(self) -> bool:
        """Whether the statement's outcome is known."""
        fut = self.fut
        return fut is not None and fut.done()

    def __await__(self) -> typing.Generator[typing.Any, None, typing.Any]:
        # a generator rather than a coroutine: one object less per result
        req = self
        if req.fut is None:
            yield from self._pipeline.sync().__await__()
        self._retrieved = True
        fut = req.fut
        try:
            value = yield from fut.__await__()
        except BaseException:
            # the error is kept in the future and its traceback holds this frame: no cycle
            del self, req, fut
            raise
        return _convert(req, value)

    def __repr__(self) -> str:
        state = "pending" if not self.done() else "done"
        return f"<PipelineResult #{self.index + 1} {state} {self.query[:40]!r}>"


class Pipeline:
    """Statements queued with :meth:`fetch`, :meth:`fetchrow`, :meth:`fetchval` and
    :meth:`execute` are sent together, without waiting for each other's replies.

    Use it as ``async with con.pipeline() as p:``. Each method returns a
    :class:`PipelineResult` at once; leaving the block (or awaiting any result, or
    :meth:`sync`) sends what is queued and waits for every reply. Leaving the block raises
    the first error of a statement whose result was not awaited inside it, so a failed
    ``execute`` is never silent.

    ``atomic=False`` (the default): each statement is followed by its own Sync, so it is its
    own implicit transaction (or part of the caller's ``transaction()``), exactly as if the
    statements ran one after another; one failing does not affect the others.
    ``atomic=True``: one Sync for the whole pipeline, one implicit transaction: if a
    statement fails, nothing of the pipeline commits and the statements after it raise
    ``InterfaceError`` naming the statement that failed.

    ``timeout`` bounds each :meth:`sync` (preparing new statements included); on timeout or
    cancellation the server's current statement is cancelled, the results not yet in raise
    ``TimeoutError`` (or ``InterfaceError`` after a cancellation), and the connection stays
    usable.

    A Python class, like ``Connection``, so it can be subclassed or instrumented.
    """

    def __init__(
        self, connection: Connection, *, atomic: bool = False, timeout: float | None = None
    ) -> None:
        self._con = connection
        self._atomic = bool(atomic)
        self._timeout = checked_timeout(timeout)
        self._queue: list[PipelineResult] = []
        self._results: list[PipelineResult] = []
        self._count = 0
        self._lock: asyncio.Lock | None = None
        self._release_ctr = connection._session.release_ctr
        self._closed = False

    # ------------------------------------------------------------------ queueing

    def _add(self, query, args, kind, column=0, record_class=None) -> PipelineResult:
        if self._closed:
            raise exceptions.InterfaceError("the pipeline is closed: its block has ended")
        if record_class is not None:
            from .connection import _check_record_class

            _check_record_class(record_class)
        result = PipelineResult(self, query, args, kind, column, record_class, self._count)
        self._count += 1
        self._queue.append(result)
        self._results.append(result)
        return result

    def fetch(
        self, query: Query, *args: object, record_class: type | None = None
    ) -> PipelineResult:
        """Queue ``query``; its result is the list of rows (see ``Connection.fetch``)."""
        return self._add(query, args, _FETCH, record_class=record_class)

    def fetchrow(
        self, query: Query, *args: object, record_class: type | None = None
    ) -> PipelineResult:
        """Queue ``query``; its result is the first row or ``None``."""
        return self._add(query, args, _FETCHROW, record_class=record_class)

    def fetchval(self, query: Query, *args: object, column: int = 0) -> PipelineResult:
        """Queue ``query``; its result is ``column`` of the first row or ``None``."""
        return self._add(query, args, _FETCHVAL, column=column)

    def execute(self, query: Query, *args: object) -> PipelineResult:
        """Queue ``query``; its result is the command tag (e.g. ``'UPDATE 1'``).

        Unlike ``Connection.execute`` without arguments, this is one statement through the
        extended protocol: no ``;``-separated scripts.
        """
        return self._add(query, args, _EXECUTE)

    # ------------------------------------------------------------------ sending

    async def sync(self) -> None:
        """Send every queued statement and wait for all their replies.

        Statements failing does not raise here (their results do); a timeout, a
        cancellation or a lost connection does.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._queue:
                return
            session = self._con._session
            if session.release_ctr != self._release_ctr:
                raise exceptions.InterfaceError(
                    "cannot use the pipeline: its connection has been released to the pool"
                )
            session.check_open()
            batch, self._queue = self._queue, []
            try:
                await _run(self._con, batch, atomic=self._atomic, timeout=self._timeout)
            except BaseException as e:
                # not the error itself as the cause: the futures would hold it in a cycle
                _fail_unsent(
                    batch,
                    f"the pipeline stopped ({type(e).__name__})",
                    lost=self._con.is_closed(),
                )
                raise
            _fail_unsent(batch, _STOPPED)

    async def __aenter__(self) -> Pipeline:
        self._con._session.check_open()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                await self.sync()
                first = self._unretrieved_error()
                if first is not None:
                    try:
                        raise first
                    finally:
                        del first  # the error's traceback holds this frame: no cycle
            else:
                _fail_unsent(self._queue, "the pipeline's block raised before it was sent")
                self._queue = []
        finally:
            self._closed = True
            self._results = []

    def _unretrieved_error(self) -> BaseException | None:
        errors = []
        for result in self._results:
            fut = result.fut
            if fut is None or not fut.done() or fut.cancelled():
                continue
            error = fut.exception()  # marks it retrieved: raised by the block, or awaited
            if error is not None and not result._retrieved:
                errors.append(error)
        return _first_error(errors)


class PoolPipeline:
    """What ``Pool.pipeline()`` returns: ``async with pool.pipeline() as p:`` acquires a
    connection for the block and gives its :class:`Pipeline`, the same object as
    ``con.pipeline()``'s, with the same semantics.

    Leaving the block sends what is queued and waits for every reply (raising as
    ``con.pipeline()``'s block does), then releases the connection, also when the block
    raised. Acquiring waits for a free connection as ``pool.acquire()`` does: ``timeout``
    bounds the pipeline, not that wait, as with the pool's ``fetch`` and friends.
    """

    __slots__ = ("_pool", "_atomic", "_timeout", "_held")

    def __init__(self, pool: Pool, *, atomic: bool = False, timeout: float | None = None) -> None:
        # checked at the call, as con.pipeline() does: a bad value never takes a connection
        self._timeout = checked_timeout(timeout)
        self._atomic = bool(atomic)
        self._pool: Pool | None = pool
        self._held: tuple[Pool, typing.Any, Pipeline] | None = None

    async def __aenter__(self) -> Pipeline:
        # entering uses the pool up: a second block (nested or later) would otherwise hold a
        # second connection that only one exit knows of
        pool, self._pool = self._pool, None
        if pool is None:
            raise exceptions.InterfaceError(
                "a pool.pipeline() block can be entered once: call pool.pipeline() again"
            )
        con = await pool.acquire()
        try:
            # through the connection's method, which instrumentation may wrap
            pipeline = con.pipeline(atomic=self._atomic, timeout=self._timeout)
            await pipeline.__aenter__()
        except BaseException:
            await pool.release(con)
            raise
        self._held = (pool, con, pipeline)
        return pipeline

    async def __aexit__(self, exc_type, exc, tb) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        pool, con, pipeline = held
        try:
            await pipeline.__aexit__(exc_type, exc, tb)
        finally:
            # after the pipeline's last reply (or its cancellation), never before: released
            # earlier, the connection would go to the next borrower mid-pipeline
            await pool.release(con)


def _fail_unsent(
    requests: typing.Iterable[_Request], why: str, cause=None, lost: bool = False
) -> None:
    """Statements never sent fail with ``why``; as asyncpg's queries do when ``lost``."""
    loop = None
    cls = exceptions.ConnectionDoesNotExistError if lost else exceptions.InterfaceError
    for req in requests:
        if req.fut is None:
            if loop is None:
                loop = asyncio.get_running_loop()
            req.fut = loop.create_future()
            err = cls(f"pipeline statement #{req.index + 1} was not sent: {why}")
            if cause is not None:
                err.__cause__ = cause
            req.fut.set_exception(err)
            req.fut.exception()  # the pipeline's own error is what gets raised


async def fetch_many_queries(
    con: Connection,
    queries: Iterable[QueryItem] | AsyncIterable[QueryItem],
    *,
    timeout: float | None = None,
    atomic: bool = False,
    record_class: type | None = None,
    return_exceptions: bool = False,
) -> list[typing.Any]:
    """See ``Connection.fetch_many_queries``."""
    session = con._session
    session.check_open()
    timeout, atomic, record_class, return_exceptions = fetch_many_options(
        timeout, atomic, record_class, return_exceptions
    )
    requests: list[_Request] = []
    counter = itertools.count()

    def request(item):
        index = next(counter)
        if isinstance(item, (tuple, list)):
            try:
                query, args = item
            except ValueError:
                raise exceptions.InterfaceError(
                    f"pipeline statement #{index + 1}: expected a (query, args) pair, "
                    f"got {len(item)} items"
                ) from None
        else:
            query, args = item, ()  # a bare query (or PreparedStatement) without arguments
        req = _Request(query, args, _FETCH, 0, record_class, index, session)
        requests.append(req)
        return req

    if hasattr(queries, "__aiter__"):

        async def source():
            async for item in queries:
                yield request(item)

        feed: typing.Any = source()
    else:
        feed = map(request, queries)
    await _run(con, feed, atomic=atomic, timeout=timeout)
    _fail_unsent(requests, _STOPPED)
    results, first = _collect(requests)
    requests.clear()
    if first is not None and not return_exceptions:
        results.clear()
        try:
            raise first
        finally:
            del first  # the error's traceback holds this frame: no cycle
    return results


class _FetchManyOptions(typing.NamedTuple):
    timeout: float | None
    atomic: bool
    record_class: type | None
    return_exceptions: bool


def fetch_many_options(
    timeout: float | None, atomic: bool, record_class: type | None, return_exceptions: bool
) -> _FetchManyOptions:
    """``fetch_many_queries``' options, checked and normalised. The pool checks them before
    it takes a connection: a bad argument must neither wait for one nor hold one."""
    if record_class is not None:
        from .connection import _check_record_class

        _check_record_class(record_class)
    return _FetchManyOptions(
        checked_timeout(timeout), bool(atomic), record_class, bool(return_exceptions)
    )


def _collect(requests: list[_Request]) -> tuple[list[typing.Any], BaseException | None]:
    """Each request's rows, or its error in its place; and the error to raise."""
    results: list[typing.Any] = []
    errors = []
    for req in requests:
        fut = req.fut
        if fut.cancelled():
            error: BaseException | None = asyncio.CancelledError()
        else:
            error = fut.exception()
        if error is not None:
            errors.append(error)
            results.append(error)
        else:
            results.append(fut.result())
    return results, _first_error(errors)


# ---------------------------------------------------------------------- the engine


async def _chunks(feed):
    if hasattr(feed, "__aiter__"):
        chunk = []
        async for req in feed:
            chunk.append(req)
            if len(chunk) >= _CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    else:
        it = iter(feed)
        while True:
            chunk = list(itertools.islice(it, _CHUNK))
            if not chunk:
                return
            yield chunk


_STOPPED = "an earlier statement failed and the pipeline is one transaction"


def _first_error(errors: typing.Iterable[BaseException | None]) -> BaseException | None:
    """The error to raise for a pipeline: the first failure in statement order that is not
    only the consequence of another (a statement skipped or not sent because an earlier
    one failed, which has that failure as its ``__cause__``)."""
    first = None
    for e in errors:
        if e is None:
            continue
        if isinstance(e, exceptions.InterfaceError) and isinstance(e.__cause__, Exception):
            if first is None:
                first = e
            continue
        return e
    return first


class _Stop(Exception):
    """A one-Sync pipeline failed server-side: nothing more is sent."""


async def _run(con: Connection, feed, *, atomic: bool, timeout: float | None) -> None:
    """Send every request of ``feed`` (requests, or an async iterator of them) in one
    pipeline, setting each request's ``fut``; returns once every reply is in."""
    session = con._session
    proto = con._protocol
    loop = session.loop
    if timeout is None:
        timeout = con._config.command_timeout
    deadline = None if timeout is None else loop.time() + timeout
    await session.ensure_idle(timeout)
    run = _Run(con, atomic, deadline)
    done = proto.pipeline_begin(not atomic)
    sent: list[_Request] = []
    try:
        try:
            async for chunk in _chunks(feed):
                sent = chunk
                await run.send(chunk)
        except _Stop:
            root = run.stop_error()
            for req in sent:
                if req.fut is None and root is not None and req.query == run.stop_query:
                    req.fut = loop.create_future()
                    req.fut.set_exception(root)
            _fail_unsent(sent, _STOPPED, root)
        except BaseException as e:
            why = (
                "the pipeline timed out"
                if isinstance(e, asyncio.TimeoutError)
                else "the pipeline was cancelled"
                if isinstance(e, asyncio.CancelledError)
                else f"the pipeline stopped: {type(e).__name__}: {e}"
            )
            if not session.is_closed():
                proto.pipeline_end(
                    failed=True, rollback=atomic and not proto.is_in_transaction(), reason=why
                )
                if isinstance(e, (asyncio.TimeoutError, asyncio.CancelledError)):
                    # the server may be stuck (a lock): cancel rather than wait; the next
                    # operation waits for the cancellation to land (Session.ensure_idle)
                    done.add_done_callback(_session._consume_outcome)
                    session.cancel_current_command()
                else:
                    try:
                        await asyncio.shield(done)
                    except (exceptions.PostgresError, asyncio.CancelledError):
                        pass
            _fail_unsent(sent, why, lost=session.is_closed())
            run.give_up(e, why)
            raise
        proto.pipeline_end()
        left = None if deadline is None else max(deadline - loop.time(), 0.001)
        try:
            await session.wait(done, left)
        except BaseException as e:
            why = (
                "the pipeline timed out"
                if isinstance(e, asyncio.TimeoutError)
                else "the pipeline was cancelled"
            )
            run.give_up(e, why)
            raise
    finally:
        del done  # see Session.wait
    run.after()


class _Run:
    """One pipeline's statements: preparing the new ones, sending, and what is learnt from
    the failures afterwards (stale or lost cached statements)."""

    __slots__ = (
        "con",
        "proto",
        "session",
        "atomic",
        "deadline",
        "local",
        "requests",
        "stop_query",
        "_stop_error",
        "started",
        "timeout",
    )

    def __init__(self, con: Connection, atomic: bool, deadline: float | None) -> None:
        self.con = con
        self.proto = con._protocol
        self.session = con._session
        self.atomic = atomic
        self.deadline = deadline
        self.started = time.monotonic()  # for query loggers, as Connection._execute's
        self.timeout = None if deadline is None else deadline - self.session.loop.time()
        # statements this pipeline prepared that the cache does not keep (statement cache
        # off, too long): reused for the rest of the pipeline
        self.local: dict[str, _session.StatementRef] = {}
        # every request whose future may still be pending: settled on a timeout
        self.requests: list[_Request] = []
        # a one-Sync pipeline that stopped at a statement that could not be prepared
        self.stop_query: str | None = None
        self._stop_error: BaseException | None = None

    def stop_error(self) -> BaseException | None:
        """Why a one-Sync pipeline stopped: the failure the server reported."""
        if self._stop_error is not None:
            return self._stop_error
        for req in self.requests:
            fut = req.fut
            if fut.done() and not fut.cancelled():
                e = fut.exception()
                if isinstance(e, exceptions.PostgresError):
                    return e
        return None

    async def _until(self, fut: asyncio.Future[typing.Any]) -> typing.Any:
        try:
            if self.deadline is None:
                return await fut
            left = self.deadline - self.session.loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            return await asyncio.wait_for(fut, left)
        finally:
            del fut

    def _cached(self, query: str) -> _session.StatementRef | None:
        stmt = self.session.stmt_cache.get(query)
        if stmt is None:
            stmt = self.local.get(query)
        return stmt

    async def _prepare(self, queries: dict[str, int | None]) -> dict[str, typing.Any]:
        """Parse/describe ``queries`` (query -> first statement number) in one round trip;
        returns query -> StatementRef, or the exception its preparation raised."""
        from .connection import _INTROSPECTION_ATTEMPTS, _STMT_NAMES

        con, proto, session = self.con, self.proto, self.session
        config = con._config
        futs = []
        for query, index in queries.items():
            cache = config.statement_cache_size > 0 and (
                not config.max_cacheable_statement_size
                or len(query) <= config.max_cacheable_statement_size
            )
            if cache and not session.pooled:
                name = f"__asyncpg_rs_stmt_{session.stmt_prefix}_{next(_STMT_NAMES):x}__"
            else:
                name = ""
            fut = proto.pipeline_prepare(name, query, index)
            # a one-Sync pipeline stops at the first failure: the rest are never awaited
            fut.add_done_callback(_session._consume_outcome)
            futs.append((query, cache, fut))
            del fut
        # all of them in one write, and (with one Sync) a Flush for their replies
        proto.pipeline_flush()
        out: dict[str, typing.Any] = {}
        for query, cache, fut in futs:
            try:
                state = await self._until(fut)
            except exceptions.PostgresError as e:
                # kept to be raised by each statement of this query: without the traceback
                # through this frame, which holds it (a cycle only the GC would free)
                out[query] = e.with_traceback(None)
                if self.atomic:
                    self.stop_query, self._stop_error = query, out[query]
                    raise _Stop from None
                continue
            except exceptions.InterfaceError as e:
                out[query] = e.with_traceback(None)
                continue
            finally:
                del fut
            for _ in range(_INTROSPECTION_ATTEMPTS):
                unknown = state.unknown_oids()
                if not unknown:
                    break
                await con._introspect_types(unknown, None, fetch=self._fetch)
                state = proto.rebind_codecs(state)
            stmt = _session.StatementRef(state, query)
            if cache:
                session.stmt_cache.put(query, stmt)
            else:
                self.local[query] = stmt
            out[query] = stmt
        return out

    async def _fetch(self, query: str, *args: typing.Any) -> typing.Any:
        """A query of the driver's own (type introspection) inside the pipeline."""
        stmt = self._cached(query)
        if stmt is None:
            got = (await self._prepare({query: None}))[query]
            if isinstance(got, BaseException):
                raise got
            stmt = got
        fut, _ = self.proto.pipeline_execute(stmt._state, args, 0, None, True, None)
        self.proto.pipeline_flush()
        try:
            return await self._until(fut)
        finally:
            del fut

    async def send(self, chunk: list[_Request]) -> None:
        proto = self.proto
        # the chunk's statements, looked up once each and held here: preparing the new ones
        # may evict others from the cache, which stay valid until the next operation
        stmts: dict[str, typing.Any] = {}
        new: dict[str, int | None] = {}
        cached = self._cached
        for req in chunk:
            query = req.query
            if req.stmt is None and query not in stmts:
                stmt = stmts[query] = cached(query)
                if stmt is None:
                    new[query] = req.index
        if new:
            stmts.update(await self._prepare(new))
        record_class = self.session.record_class
        loggers = self.session.query_loggers
        add = proto.pipeline_execute
        for req in chunk:
            stmt = req.stmt or stmts[req.query]
            if stmt is None or isinstance(stmt, BaseException):
                # its preparation failed: each statement of that query raises its error
                req.fut = self.session.loop.create_future()
                req.fut.set_exception(
                    stmt
                    if stmt is not None
                    else exceptions.InterfaceError("the statement could not be prepared")
                )
                continue
            kind = req.kind
            # fetchrow/fetchval need one row: the server stops there (PortalSuspended)
            limit = 1 if kind == _FETCHROW or kind == _FETCHVAL else 0
            req.fut, status = add(
                stmt._state,
                req.args,
                limit,
                req.record_class or record_class,
                kind != _EXECUTE,
                req.index,
            )
            self.requests.append(req)
            if not loggers:
                req.args = None  # encoded: a long pipeline must not keep every argument
            if status == _native.EXECUTEMANY_FAILED:
                raise _Stop
            if status == _native.EXECUTEMANY_PAUSED:
                await self._drain()
            elif status == _native.EXECUTEMANY_FLUSHED:
                await asyncio.sleep(0)  # read what the server sent meanwhile
        if len(self.requests) > 4 * _CHUNK:
            # keep only what may still be pending (bounded memory on long pipelines)
            keep = []
            for r in self.requests:
                if r.fut.done():
                    self._learn(r)
                else:
                    keep.append(r)
            self.requests = keep

    async def _drain(self) -> None:
        waiter = self.proto.drain()
        try:
            await self._until(waiter)
        finally:
            del waiter

    def give_up(self, exc: BaseException, why: str) -> None:
        """The caller stopped waiting: results not in yet raise ``exc``'s kind (the rows
        still arriving are not decoded, see pipeline.rs)."""
        for req in self.requests:
            fut = req.fut
            if fut.done():
                if not fut.cancelled():
                    fut.exception()  # reported through the pipeline's own error
            else:
                if isinstance(exc, asyncio.TimeoutError):
                    fut.set_exception(asyncio.TimeoutError(why))
                else:
                    fut.set_exception(
                        exceptions.InterfaceError(
                            f"pipeline statement #{req.index + 1}: {why} before its result arrived"
                        )
                    )
                fut.exception()
            self._log(req, fut.exception() if not fut.cancelled() else exc)

    def _log(self, req: _Request, exc: BaseException | None) -> None:
        # each statement is a query to the loggers, timed from the pipeline's start
        if self.session.query_loggers:
            self.con._log_query(req.query, req.args, self.timeout, self.started, exc)

    def after(self) -> None:
        """Learn from the failures what a single query learns from its own: a cached
        statement made stale by DDL is dropped, a named statement a pooler lost turns the
        connection pooled (neither is retried: later statements may depend on it)."""
        learn = self._learn
        if self.session.query_loggers:
            for req in self.requests:
                learn(req)
        else:
            for req in self.requests:
                fut = req.fut
                if fut.cancelled() or fut.exception() is not None:
                    learn(req)
        self.requests = []

    def _learn(self, req: _Request) -> None:
        fut = req.fut
        if fut.cancelled():
            self._log(req, asyncio.CancelledError())
            return
        exc = fut.exception()  # marks it retrieved: the pipeline's API reports it
        self._log(req, exc)
        if exc is None:
            return
        cache = self.session.stmt_cache
        if getattr(exc, "sqlstate", None) == "0A000" and "cached plan must not change" in str(exc):
            cache.discard(req.query)
            return
        stmt = cache.get(req.query)
        if stmt is not None and _pooler.lost_statement(exc, stmt._state):
            self.session.pooled = True
            # the named statements are on servers we can no longer address: forget them
            cache.mark_all_closed()
