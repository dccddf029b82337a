"""Running, stopping and closing a loop; running-loop bookkeeping; entry points."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from looptools import LOOP_TEST_MARKS

import asyncpg_rs

pytestmark = LOOP_TEST_MARKS


def test_run_until_complete_returns_result(loop):
    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    assert loop.run_until_complete(main()) is loop
    assert not loop.is_running()


def test_run_until_complete_raises_coroutine_error(loop):
    async def main():
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match="boom"):
        loop.run_until_complete(main())


def test_run_until_complete_on_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def test_stopped_before_future_done(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)


def test_run_forever_and_stop_runs_current_batch_only(loop):
    calls = []

    def later():
        calls.append("later")

    def first():
        calls.append("first")
        loop.stop()
        loop.call_soon(later)

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.run_forever()
    # stop() lets the current batch finish; what it scheduled waits for the next run
    assert calls == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["first", "second", "later"]


def test_is_running_inside(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_reentrant_run_is_refused(loop):
    async def main():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_until_complete(coro)
        coro.close()
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_forever()

    loop.run_until_complete(main())


def test_running_two_loops_in_one_thread_is_refused(loop):
    other = asyncio.new_event_loop()

    async def main():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="another loop is running"):
            other.run_until_complete(coro)
        coro.close()

    try:
        loop.run_until_complete(main())
    finally:
        other.close()


def test_get_running_loop_outside_raises(loop):
    loop.run_until_complete(asyncio.sleep(0))
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_closed_loop_refuses_work(loop):
    loop.close()
    assert loop.is_closed()
    loop.close()  # idempotent
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_later(1, print)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_at(loop.time() + 1, print)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon_threadsafe(print)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_forever()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_until_complete(coro)
    coro.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, print)


def test_close_running_loop_is_refused(loop):
    async def main():
        with pytest.raises(RuntimeError, match="Cannot close a running event loop"):
            loop.close()

    loop.run_until_complete(main())


def test_close_drops_pending_callbacks(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_later(0, ran.append, 2)
    loop.close()
    assert ran == []


def test_keyboard_interrupt_propagates_and_loop_survives(loop):
    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(interrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "still works")) == "still works"


def test_system_exit_propagates(loop):
    async def main():
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        loop.run_until_complete(main())


def test_shutdown_asyncgens_closes_open_generators(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        gen = agen()
        assert await gen.__anext__() == 1
        return gen

    gen = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert closed == [True]
    del gen


def test_asyncgen_finalizer_hook_closes_on_loop(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(asyncio.get_running_loop())

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen  # the finalizer hook schedules aclose() on the loop
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert closed == [loop]


def test_shutdown_default_executor(loop):
    async def main():
        await loop.run_in_executor(None, sum, [1, 2])
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            loop.run_in_executor(None, sum, [1])

    loop.run_until_complete(main())


def test_run_entry_point():
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return type(loop)

    assert asyncpg_rs.run(main()) is asyncpg_rs.Loop


def test_run_debug_flag():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert asyncpg_rs.run(main(), debug=True) is True


def test_run_loop_factory():
    made = []

    def factory():
        made.append(asyncpg_rs.new_event_loop())
        return made[-1]

    async def main():
        return asyncio.get_running_loop()

    assert asyncpg_rs.run(main(), loop_factory=factory) is made[0]
    assert made[0].is_closed()

    # a loop that is not ours is refused, as uvloop.run refuses a non-uvloop one
    coro = main()
    with pytest.raises(TypeError, match="non-asyncpg_rs event loop"):
        asyncpg_rs.run(coro, loop_factory=asyncio.new_event_loop)
    assert coro.cr_frame is None  # closed, never to run


def test_run_refuses_non_coroutine():
    with pytest.raises(ValueError, match="a coroutine was expected"):
        asyncpg_rs.run(42)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_runner_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=asyncpg_rs.new_event_loop) as runner:
        assert runner.run(main()) is asyncpg_rs.Loop
        assert runner.run(main()) is asyncpg_rs.Loop


def test_policy_and_install():
    old = asyncio.get_event_loop_policy()
    try:
        asyncpg_rs.install()
        policy = asyncio.get_event_loop_policy()
        assert isinstance(policy, asyncpg_rs.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, asyncpg_rs.Loop)
            assert isinstance(loop, asyncio.AbstractEventLoop)
        finally:
            loop.close()
        assert asyncio.run(asyncio.sleep(0, "ok")) == "ok"
    finally:
        asyncio.set_event_loop_policy(old)


def test_loop_in_a_thread():
    result = []

    def target():
        result.append(asyncpg_rs.run(asyncio.sleep(0.001, threading.get_ident())))

    t = threading.Thread(target=target)
    t.start()
    t.join()
    assert result and result[0] == t.ident


def test_unclosed_loop_warns():
    lp = asyncpg_rs.new_event_loop()
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        lp.__del__()
    assert lp.is_closed()
