"""add_signal_handler / remove_signal_handler and Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS


def test_signal_handler_runs_on_loop(loop):
    got = []
    done = loop.create_future()

    def handler(tag):
        got.append((tag, asyncio.get_running_loop() is loop))
        done.set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, handler, "usr1")
    try:
        loop.call_later(0.01, os.kill, os.getpid(), signal.SIGUSR1)
        loop.run_until_complete(asyncio.wait_for(done, 5))
        assert got == [("usr1", True)]
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_wakes_blocked_loop(loop):
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGUSR2, lambda: done.set_result("woken"))
    try:
        t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR2))
        t.start()
        assert loop.run_until_complete(asyncio.wait_for(done, 5)) == "woken"
        t.join()
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)


def test_signal_handler_errors(loop):
    with pytest.raises(RuntimeError, match="cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, print)
    with pytest.raises(ValueError):
        loop.add_signal_handler(10_000, print)
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", print)

    async def coro():
        pass

    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.add_signal_handler(signal.SIGUSR1, coro)


def test_signal_handler_outside_main_thread(loop):
    errors = []

    def target():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    assert errors


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, print)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import asyncio, functools, sys
    import asyncpg_rs

    async def main():
        print("ready", flush=True)
        await asyncio.sleep(60)

    if sys.argv[1] == "run":
        run = asyncpg_rs.run if sys.argv[2] == "asyncpg_rs" else asyncio.run
        try:
            run(main())
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    else:
        kind = asyncpg_rs if sys.argv[2] == "asyncpg_rs" else asyncio
        loop = kind.new_event_loop()
        loop.call_soon(functools.partial(print, "ready", flush=True))
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        loop.close()
    """
)


@pytest.mark.parametrize("mode", ["run", "run_forever"])
def test_ctrl_c(loop_kind, mode, tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, loop_kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)  # let it block in poll
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert "interrupted" in out, err
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
