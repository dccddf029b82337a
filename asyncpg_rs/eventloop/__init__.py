"""asyncpg_rs's own asyncio event loop, a drop-in for uvloop.

Use it like uvloop::

    import asyncpg_rs
    asyncpg_rs.run(main())                               # like asyncio.run
    asyncio.Runner(loop_factory=asyncpg_rs.new_event_loop)  # Python 3.11+
    asyncpg_rs.install()                                 # set the event loop policy

:class:`Loop` is a Python class over the native ``LoopCore``: the ready queue, the timer
heap, the reactor (mio) and the run loop are Rust; this layer adds what is not on the hot path
(tasks, executors, exception handling, signals, socket helpers) with asyncio's semantics.
Futures and tasks are CPython's own C ``asyncio.Future`` and ``asyncio.Task``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
import warnings
import weakref
from asyncio import events
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, TypeVar

if TYPE_CHECKING:
    from collections.abc import Generator
    from typing import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

from .._native import Handle, LoopCore, TimerHandle
from ._datagram import DatagramMethods, DatagramTransport
from ._processes import ProcessMethods
from ._signals import SignalMethods
from ._sockets import SocketMethods
from ._streams import Server, StreamMethods

__all__ = (
    "Loop",
    "Handle",
    "TimerHandle",
    "Server",
    "DatagramTransport",
    "new_event_loop",
    "run",
    "EventLoopPolicy",
    "install",
)

_T = TypeVar("_T")
_logger = logging.getLogger("asyncio")
# as asyncio.constants.DEBUG_STACK_DEPTH
_DEBUG_STACK_DEPTH = 10


def _debug_from_environment() -> bool:
    return sys.flags.dev_mode or (
        not sys.flags.ignore_environment and bool(os.environ.get("PYTHONASYNCIODEBUG"))
    )


def _stop_when_done(fut: asyncio.Future) -> None:
    # A future cancelled after the loop stopped would otherwise stop the next run.
    if fut._loop is None:
        return
    # A KeyboardInterrupt or SystemExit raised by the task already ended the run (it
    # propagated out of run_forever); this callback, queued as the task finished, only runs
    # at the start of the next run_forever, which it would end at once.
    if not fut.cancelled() and isinstance(fut.exception(), (KeyboardInterrupt, SystemExit)):
        return
    fut._loop.stop()


class Loop(
    LoopCore,
    StreamMethods,
    DatagramMethods,
    ProcessMethods,
    SocketMethods,
    SignalMethods,
    asyncio.AbstractEventLoop,
):
    """The asyncpg_rs event loop: an ``asyncio.AbstractEventLoop`` on a Rust core."""

    def __init__(self) -> None:
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_shutdown_called = False
        self._exception_handler: Callable[..., Any] | None = None
        self._asyncgens: weakref.WeakSet = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._init_signals()
        self.set_debug(_debug_from_environment())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def _check_closed(self) -> None:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    # ---------------------------------------------------------------- running

    def run_forever(self) -> None:
        """Run until :meth:`stop` is called."""
        self._check_closed()
        self._check_running()
        debug = self.get_debug()
        old_hooks = sys.get_asyncgen_hooks()
        if debug:
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        wakeup = False
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
            )
            events._set_running_loop(self)
            wakeup = self._install_wakeup_fd()
            self._run_native()
        finally:
            if wakeup:
                self._release_wakeup_fd()
            events._set_running_loop(None)
            if debug:
                sys.set_coroutine_origin_tracking_depth(0)
            sys.set_asyncgen_hooks(*old_hooks)

    def run_until_complete(self, future: Generator[Any, None, _T] | Awaitable[_T]) -> _T:
        """Run until ``future`` (a future, task or coroutine) is done; return its result."""
        self._check_closed()
        self._check_running()
        new_task = not asyncio.isfuture(future)
        future = asyncio.ensure_future(future, loop=self)
        if new_task:
            # the caller gets the exception; no "exception was never retrieved" for it
            future._log_destroy_pending = False
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self) -> None:
        """Close the loop: drop pending callbacks, shut the default executor down (no wait)."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            _logger.debug("Close %r", self)
        self._close_signals()
        self._close_native()
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def __del__(self, _warn=warnings.warn) -> None:
        try:
            closed = self.is_closed()
        except Exception:
            return
        if not closed:
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # ---------------------------------------------------------------- futures and tasks

    # ---------------------------------------------------------------- async generators

    def _asyncgen_firstiter_hook(self, agen) -> None:
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen) -> None:
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close every asynchronous generator still open on this loop."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await asyncio.gather(*[ag.aclose() for ag in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # ---------------------------------------------------------------- executors

    def _check_default_executor(self) -> None:
        if self._executor_shutdown_called:
            raise RuntimeError("Executor shutdown has been called")

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[Unpack[_Ts]], _T],
        *args: *_Ts,
    ) -> asyncio.Future[_T]:
        """Run ``func(*args)`` in ``executor`` (the default thread pool when None)."""
        self._check_closed()
        if self.get_debug() and (asyncio.iscoroutine(func) or asyncio.iscoroutinefunction(func)):
            raise TypeError("coroutines cannot be used with run_in_executor()")
        if executor is None:
            self._check_default_executor()
            executor = self._default_executor
            if executor is None:
                # asyncio's prefix: tools that group threads by name see the same as there
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return asyncio.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor: concurrent.futures.Executor) -> None:
        """Use ``executor`` (a ``ThreadPoolExecutor``) for ``run_in_executor(None, ...)``."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Shut the default executor down, waiting (up to ``timeout``) for its threads."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        future = self.create_future()

        def shutdown():
            try:
                executor.shutdown(wait=True)
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_result_unless_done, future, None)
            except Exception as exc:
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_exception_unless_done, future, exc)

        thread = threading.Thread(target=shutdown, name="asyncpg_rs-executor-shutdown")
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                try:
                    await asyncio.wait_for(asyncio.shield(future), timeout)
                except asyncio.TimeoutError:
                    warnings.warn(
                        "The executor did not finishing joining its threads within "
                        f"{timeout} seconds.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    executor.shutdown(wait=False)
        finally:
            thread.join(timeout)

    # ---------------------------------------------------------------- errors

    def get_exception_handler(self) -> Callable[..., Any] | None:
        """The handler set with :meth:`set_exception_handler`, or None."""
        return self._exception_handler

    def set_exception_handler(self, handler: Callable[..., Any] | None) -> None:
        """Call ``handler(loop, context)`` for errors the loop catches; None for the default."""
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log ``context`` on the ``asyncio`` logger, with the exception's traceback."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (
            (type(exception), exception, exception.__traceback__)
            if exception is not None
            else False
        )
        if "source_traceback" not in context and getattr(self, "_current_handle", None) is not None:
            pass
        lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                import traceback

                value = (
                    "Object created at (most recent call last):\n"
                    + "".join(traceback.format_list(value)).rstrip()
                )
            elif key == "handle_traceback":
                import traceback

                value = (
                    "Handle created at (most recent call last):\n"
                    + "".join(traceback.format_list(value)).rstrip()
                )
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        _logger.error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Report an error: to the custom handler if set, else :meth:`default_exception_handler`."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                _logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                _logger.error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )


def _set_result_unless_done(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception_unless_done(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def new_event_loop() -> Loop:
    """A new :class:`Loop`."""
    return Loop()


def run(
    main: Coroutine[Any, Any, _T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_event_loop,
    debug: bool | None = None,
    **run_kwargs: Any,
) -> _T:
    """Run coroutine ``main`` on a new :class:`Loop`, like ``asyncio.run``.

    As ``uvloop.run``: ``loop_factory`` makes the loop (a subclass of :class:`Loop`, say, or
    one set up first); a loop that is not a :class:`Loop` raises ``TypeError``, since the
    point of calling this rather than ``asyncio.run`` is to run on ours. ``run_kwargs`` go
    to ``asyncio.Runner``."""
    if events._get_running_loop() is not None:
        raise RuntimeError("asyncpg_rs.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")

    async def on_our_loop() -> _T:
        # checked on the running loop, as uvloop does: the factory's loop is only known here
        if not isinstance(events._get_running_loop(), Loop):
            main.close()  # never to run: no "was never awaited" warning
            raise TypeError("asyncpg_rs.run() uses a non-asyncpg_rs event loop")
        return await main

    with asyncio.Runner(debug=debug, loop_factory=loop_factory, **run_kwargs) as runner:
        return runner.run(on_our_loop())


if sys.version_info >= (3, 14):
    # policies are deprecated from 3.14; naming the public base would warn on import
    from asyncio.events import _BaseDefaultEventLoopPolicy as _PolicyBase
else:
    from asyncio.events import BaseDefaultEventLoopPolicy as _PolicyBase


class EventLoopPolicy(_PolicyBase):
    """An event loop policy whose loops are :class:`Loop` (as ``uvloop.EventLoopPolicy``).

    Installing a policy warns from Python 3.14, as ``asyncio.set_event_loop_policy`` does;
    prefer :func:`run` or ``asyncio.Runner(loop_factory=new_event_loop)`` there."""

    def new_event_loop(self) -> Loop:
        """A new :class:`Loop`."""
        return Loop()

    if TYPE_CHECKING and sys.version_info < (3, 14):
        # typeshed marks these abstract; at run time they are inherited (and raise
        # NotImplementedError: subprocesses on this loop need no child watcher)
        def get_child_watcher(self) -> asyncio.AbstractChildWatcher: ...
        def set_child_watcher(self, watcher: asyncio.AbstractChildWatcher | None) -> None: ...


def install() -> None:
    """Make :class:`Loop` the default: ``asyncio.set_event_loop_policy(EventLoopPolicy())``."""
    asyncio.set_event_loop_policy(EventLoopPolicy())
