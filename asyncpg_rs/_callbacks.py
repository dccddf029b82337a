"""The callbacks users register on a connection (listeners, log listeners, termination
listeners, query loggers): how they are run, and how their failures are reported (to the
loop's exception handler, as asyncpg does; they never break the connection)."""

from __future__ import annotations

import asyncio
import typing


class Callback(typing.NamedTuple):
    """A user's listener or logger, and whether it is a coroutine function."""

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


class QueryLoggerContext:
    """What ``Connection.query_logger`` returns: adds the logger for a ``with`` block."""

    __slots__ = ("_conn", "_cb")

    def __init__(self, conn, cb):
        self._conn = conn
        self._cb = cb

    def __enter__(self) -> typing.Any:
        self._conn.add_query_logger(self._cb)
        return self._cb

    def __exit__(self, *exc: object) -> None:
        self._conn.remove_query_logger(self._cb)
