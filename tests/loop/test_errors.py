"""Exception handlers, debug mode."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS


def test_callback_exception_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    assert loop.get_exception_handler() is not None

    def bad():
        raise ValueError("bad callback")

    h = loop.call_soon(bad)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    lp, ctx = contexts[0]
    assert lp is loop
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["handle"] is h
    assert ctx["message"].startswith("Exception in callback")
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_loop_keeps_running_after_callback_error(loop):
    loop.set_exception_handler(lambda lp, ctx: None)
    ran = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(ran.append, "after")
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["after"]


def test_default_handler_logs(loop, caplog):
    def bad():
        raise RuntimeError("logged error")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(bad)
        loop.run_until_complete(asyncio.sleep(0))
    assert "Exception in callback" in caplog.text
    assert "logged error" in caplog.text


def test_failing_handler_is_logged(loop, caplog):
    def handler(lp, ctx):
        raise KeyError("handler broke")

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "original"})
    assert "Unhandled error in exception handler" in caplog.text


def test_set_exception_handler_type_check(loop):
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)


def test_handler_interrupt_propagates(loop):
    def handler(lp, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)
    loop.call_soon(lambda: 1 / 0)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()


def test_unretrieved_task_exception_reported(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def fails():
        raise ValueError("never retrieved")

    async def main():
        loop.create_task(fails())
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    import gc

    gc.collect()
    assert any(isinstance(c.get("exception"), ValueError) for c in contexts)


def test_debug_mode_flags(loop):
    assert loop.get_debug() in (False, True)
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.slow_callback_duration = 0.25
    assert loop.slow_callback_duration == 0.25
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.03)
        loop.run_until_complete(asyncio.sleep(0))
    assert "took" in caplog.text and "seconds" in caplog.text


def test_debug_source_traceback(loop):
    loop.set_debug(True)
    h = loop.call_soon(print)
    assert h._source_traceback
    h.cancel()

    async def nothing():
        pass

    async def main():
        task = loop.create_task(nothing())  # the traceback must end on this line
        await task
        return task._source_traceback[-1]

    last = loop.run_until_complete(main())
    assert last.name == "main" and "create_task(nothing())" in last.line


def test_debug_detects_call_from_wrong_thread(loop):
    loop.set_debug(True)
    errors = []

    async def main():
        def other_thread():
            try:
                loop.call_soon(print)
            except RuntimeError as exc:
                errors.append(str(exc))

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()

    loop.run_until_complete(main())
    assert errors and "Non-thread-safe operation" in errors[0]


def test_debug_rejects_coroutine_callbacks(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
        loop.call_soon(coro_fn)
