"""The pool's queue of free places: the last one freed is handed out first (its connection
is the warmest), and tasks that wait are served in the order they came.

``asyncio.LifoQueue`` did this job with a task counter, a bound, a join event and
``put``/``get`` waiters, none of which the pool uses, for about a dozen Python calls per
lease; this keeps only what the pool needs, with the same behaviour on the rest: a wake-up
goes to the first waiter still waiting, and one that is woken and cancelled before it runs
passes its wake-up on.
"""

from __future__ import annotations

import collections
import typing

if typing.TYPE_CHECKING:
    import asyncio

T = typing.TypeVar("T")


class HolderQueue(typing.Generic[T]):
    __slots__ = ("items", "_waiters", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # read directly by the pool's fast path: a list, last in first out
        self.items: list[T] = []
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop = loop

    def empty(self) -> bool:
        return not self.items

    def put_nowait(self, item: T) -> None:
        self.items.append(item)
        self._wake_next()

    def get_nowait(self) -> T:
        """The last item put; IndexError when there is none (the pool checks first)."""
        return self.items.pop()

    async def get(self) -> T:
        """The last item put, waiting for one after the tasks already waiting."""
        while not self.items:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # it was woken: the wake-up is ours to pass on
                if self.items and not waiter.cancelled():
                    self._wake_next()
                raise
        return self.items.pop()

    def _wake_next(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
