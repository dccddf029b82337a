"""call_soon / call_later / call_at / call_soon_threadsafe, handles, contexts, tasks."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time

import pytest
from looptools import LOOP_TEST_MARKS, timer_count

import asyncpg_rs

pytestmark = LOOP_TEST_MARKS

var = contextvars.ContextVar("var", default="unset")


def run_briefly(loop, seconds=0.0):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_call_soon_fifo_with_args(loop):
    calls = []
    for i in range(100):
        loop.call_soon(calls.append, i)
    loop.call_soon(lambda *a: calls.append(a), 1, "two", 3.0)
    run_briefly(loop)
    assert calls == list(range(100)) + [(1, "two", 3.0)]


def test_call_soon_returns_cancellable_handle(loop):
    calls = []
    h = loop.call_soon(calls.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # twice is fine
    loop.call_soon(calls.append, 2)
    run_briefly(loop)
    assert calls == [2]
    assert "Handle" in repr(h)


def test_call_soon_rejects_non_callable(loop):
    loop.set_debug(True)  # the stdlib checks in debug mode (we always do)
    with pytest.raises(TypeError, match="a callable object was expected by call_soon"):
        loop.call_soon(42)
    with pytest.raises(TypeError):
        loop.call_later(0, "not callable")


def test_call_later_none_delay(loop):
    with pytest.raises(TypeError, match="delay must not be None"):
        loop.call_later(None, print)


def test_context_is_copied_at_schedule_time(loop):
    seen = []
    var.set("outer")

    def cb():
        seen.append(var.get())
        var.set("changed by callback")

    loop.call_soon(cb)
    loop.call_soon(lambda: seen.append(var.get()))
    run_briefly(loop)
    # each callback ran in its own copy: the first one's change did not leak
    assert seen == ["outer", "outer"]
    assert var.get() == "outer"


def test_explicit_context_is_used_and_shared(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    seen = []

    def set_it():
        var.set("set by first")

    h = loop.call_soon(set_it, context=ctx)
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_later(0, lambda: seen.append(var.get()), context=ctx)
    run_briefly(loop, 0.001)
    if hasattr(h, "get_context"):  # asyncio's handles have it from 3.12
        assert h.get_context() is ctx
    assert seen == ["set by first", "set by first"]


def test_call_later_order_and_timing(loop):
    calls = []
    start = loop.time()
    loop.call_later(0.02, calls.append, "b")
    loop.call_later(0.01, calls.append, "a")
    loop.call_later(0.03, calls.append, "c")
    run_briefly(loop, 0.05)
    assert calls == ["a", "b", "c"]
    assert loop.time() - start >= 0.03


def test_same_time_timers_run_in_scheduling_order(loop, loop_kind):
    calls = []
    when = loop.time() + 0.005
    for i in range(200):
        loop.call_at(when, calls.append, i)
    run_briefly(loop, 0.02)
    if loop_kind == "asyncpg_rs":
        assert calls == list(range(200))
    else:
        # the stdlib's heapq does not keep ties in order; it only runs them all
        assert sorted(calls) == list(range(200))


def test_call_at_in_the_past_runs_next_iteration(loop):
    calls = []
    h = loop.call_at(loop.time() - 10, calls.append, 1)
    assert h.when() < loop.time()
    run_briefly(loop)
    run_briefly(loop)
    assert calls == [1]


def test_time_is_monotonic_clock(loop):
    before = time.monotonic()
    t = loop.time()
    after = time.monotonic()
    assert before <= t <= after


def test_timer_handle_api(loop):
    calls = []
    h = loop.call_later(10, calls.append, 1)
    assert abs(h.when() - (loop.time() + 10)) < 0.5
    if hasattr(h, "get_context"):
        assert isinstance(h.get_context(), contextvars.Context)
    h.cancel()
    assert h.cancelled()
    assert "cancelled" in repr(h)
    run_briefly(loop)
    assert calls == []


def test_cancelled_timers_do_not_pile_up(loop):
    async def main():
        for i in range(5000):
            loop.call_later(3600 + i, print).cancel()
            if i % 100 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    # the stdlib and ours both rebuild the heap once cancelled handles dominate it
    assert timer_count(loop) < 2500


def test_threadsafe_wakes_blocked_loop(loop):
    fut = loop.create_future()

    def from_thread():
        time.sleep(0.05)
        loop.call_soon_threadsafe(fut.set_result, threading.get_ident())

    t = threading.Thread(target=from_thread)
    t.start()
    started = time.monotonic()
    # the loop blocks in poll with nothing else to do; the call must wake it
    ident = loop.run_until_complete(asyncio.wait_for(fut, 10))
    t.join()
    assert ident == t.ident
    assert time.monotonic() - started < 5


def test_threadsafe_from_many_threads(loop):
    per_thread = 2000
    threads = 8
    done = loop.create_future()
    counts = {}

    def cb(tid):
        counts[tid] = counts.get(tid, 0) + 1
        if sum(counts.values()) == per_thread * threads:
            done.set_result(None)

    def producer(tid):
        for _ in range(per_thread):
            loop.call_soon_threadsafe(cb, tid)

    workers = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    loop.run_until_complete(asyncio.wait_for(done, 30))
    for w in workers:
        w.join()
    assert counts == {i: per_thread for i in range(threads)}


def test_create_task_name_and_context(loop):
    async def coro():
        return var.get(), asyncio.current_task().get_name()

    ctx = contextvars.copy_context()
    ctx.run(var.set, "task ctx")

    async def main():
        t1 = loop.create_task(coro(), name="named")
        t2 = loop.create_task(coro(), context=ctx)
        return await t1, await t2

    (v1, n1), (v2, _) = loop.run_until_complete(main())
    assert n1 == "named"
    assert v2 == "task ctx"


def test_task_factory(loop):
    made = []

    def factory(lp, coro, **kwargs):
        task = asyncio.Task(coro, loop=lp, **kwargs)
        made.append(task)
        return task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        return await loop.create_task(asyncio.sleep(0, 5), name="x")

    assert loop.run_until_complete(main()) == 5
    assert made and made[-1].get_name() == "x"
    with pytest.raises(TypeError):
        loop.set_task_factory(42)
    loop.set_task_factory(None)


def test_futures_and_tasks_are_cpythons(loop):
    fut = loop.create_future()
    assert type(fut) is asyncio.Future
    assert fut.get_loop() is loop

    async def main():
        return asyncio.current_task()

    task = loop.run_until_complete(main())
    assert type(task) is asyncio.Task
    fut.cancel()


def test_gather_and_wait_for(loop):
    async def leaf(i):
        await asyncio.sleep(0.001 * (i % 3))
        return i

    async def main():
        results = await asyncio.gather(*(leaf(i) for i in range(100)))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(1), 0.01)
        return results

    assert loop.run_until_complete(main()) == list(range(100))


def test_handle_cancel_from_inside_own_callback(loop):
    calls = []
    holder = {}

    def cb():
        holder["h"].cancel()
        calls.append(1)

    holder["h"] = loop.call_soon(cb)
    run_briefly(loop)
    assert calls == [1]


def test_create_task_passes_other_keywords_on(loop):
    # Python 3.14's create_task(coro, **kwargs) hands every keyword to the task factory (or
    # the task: eager_start=...); ours does on every Python, the stdlib's from 3.14
    if not isinstance(loop, asyncpg_rs.Loop) and sys.version_info < (3, 14):
        coro = asyncio.sleep(0)
        with pytest.raises(TypeError):  # the stdlib loop takes only name= and context=
            loop.create_task(coro, flavour="x")
        coro.close()
        return
    seen = {}

    def factory(lp, coro, **kwargs):
        seen.update(kwargs)
        return asyncio.Task(coro, loop=lp, name=kwargs.get("name"))

    loop.set_task_factory(factory)

    async def main():
        return await loop.create_task(asyncio.sleep(0, 7), name="n", flavour="x")

    assert loop.run_until_complete(main()) == 7
    assert seen == {"name": "n", "flavour": "x"}
    loop.set_task_factory(None)
    coro = asyncio.sleep(0)
    with pytest.raises(TypeError):
        loop.create_task(coro, flavour="x")  # asyncio.Task takes no such keyword
    coro.close()
