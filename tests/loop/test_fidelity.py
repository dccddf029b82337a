"""Small behaviours where our loop used to differ from asyncio's (and uvloop's), found by
running uvloop's own test suite against it: debug-mode reports, handles, the stop left behind
by a KeyboardInterrupt, descriptors owned by transports, datagram addresses, subprocess pipes
patched by tests, executor thread names."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
import weakref
from unittest import mock

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS


# ---------------------------------------------------------------- debug mode


def _slow_callback_message(loop, schedule):
    """The slow-callback warning, formatted only after the run (as a queued log record or a
    mock would be)."""
    logger = logging.getLogger("asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    schedule()
    with mock.patch.object(logger, "warning") as warning:
        loop.run_until_complete(asyncio.sleep(0.05))
    assert warning.call_count == 1
    fmt, *args = warning.call_args[0]
    return fmt % tuple(args)


def test_slow_lambda_is_named_with_its_source_line(loop):
    def schedule():
        loop.call_soon(lambda: time.sleep(0.1))

    message = _slow_callback_message(loop, schedule)
    assert message.startswith("Executing <Handle ")
    name = "test_slow_lambda_is_named_with_its_source_line.<locals>.schedule.<locals>.<lambda>"
    assert name in message
    assert f"{__file__}:" in message
    assert message.endswith(" seconds")


def test_slow_timer_callback_is_named(loop):
    def schedule():
        loop.call_later(0.001, lambda: time.sleep(0.1))

    message = _slow_callback_message(loop, schedule)
    assert message.startswith("Executing <TimerHandle ")
    assert "test_slow_timer_callback_is_named.<locals>.schedule.<locals>.<lambda>" in message


def test_slow_task_step_names_the_task(loop):
    async def busy_coroutine():
        time.sleep(0.1)

    logger = logging.getLogger("asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    with mock.patch.object(logger, "warning") as warning:
        loop.run_until_complete(busy_coroutine())
    fmt, *args = warning.call_args[0]
    message = fmt % tuple(args)
    assert message.startswith("Executing <Task finished")
    assert "busy_coroutine" in message


def test_handles_can_be_weakly_referenced(loop):
    handle = loop.call_soon(print)
    timer = loop.call_later(10, print)
    refs = [weakref.ref(handle), weakref.ref(timer)]
    assert [r() for r in refs] == [handle, timer]
    handle.cancel()
    timer.cancel()


# ---------------------------------------------------------------- run_until_complete


def test_keyboard_interrupt_leaves_no_stop_behind(loop):
    async def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(interrupted())
    # a stale stop() would end this run at once: "Event loop stopped before Future completed"
    assert loop.run_until_complete(asyncio.sleep(0.01, result="slept")) == "slept"


def test_system_exit_leaves_no_stop_behind(loop):
    async def exiting():
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        loop.run_until_complete(exiting())
    ran = []
    loop.call_later(0.01, ran.append, "timer")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert ran == ["timer"]


# ---------------------------------------------------------------- executors


async def test_default_executor_threads_have_asyncios_name_prefix():
    loop = asyncio.get_running_loop()
    name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
    assert name.startswith("asyncio_"), name


# ---------------------------------------------------------------- transports' descriptors


async def test_watching_a_transports_socket_is_refused():
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
        try:
            sock = transport.get_extra_info("socket")
            for target in (sock, sock.fileno()):
                for method, args in (
                    (loop.add_reader, (lambda: None,)),
                    (loop.add_writer, (lambda: None,)),
                    (loop.remove_reader, ()),
                    (loop.remove_writer, ()),
                ):
                    with pytest.raises(RuntimeError, match="is used by transport"):
                        method(target, *args)
        finally:
            transport.close()
        await asyncio.sleep(0)


@pytest.mark.loops("asyncpg_rs")  # asyncio reports the closed socket (uvloop: none)
async def test_a_transport_aborted_in_connection_made_reports_no_socket():
    loop = asyncio.get_running_loop()

    class AbortAtOnce(asyncio.Protocol):
        def connection_made(self, transport):
            transport.abort()

    listener = socket.socket()
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        transport, _ = await loop.create_connection(AbortAtOnce, *listener.getsockname())
        await asyncio.sleep(0)
        assert transport.is_closing()
        assert transport.get_extra_info("socket") is None
        # the rest of what it knew stays
        assert transport.get_extra_info("peername") == listener.getsockname()


# ---------------------------------------------------------------- datagrams


@pytest.mark.loops("asyncpg_rs")  # asyncio's socket.sendto resolves the name, blocking the loop
async def test_datagram_sendto_refuses_a_host_name():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    try:
        with pytest.raises(ValueError, match="requires a DNS lookup"):
            transport.sendto(b"x", ("localhost", 9))
        with pytest.raises(ValueError, match="socket family mismatch"):
            transport.sendto(b"x", ("::1", 9))
        # numeric addresses still go out
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
            receiver.bind(("127.0.0.1", 0))
            transport.sendto(b"numeric", receiver.getsockname())
            receiver.settimeout(5)
            assert receiver.recv(100) == b"numeric"
    finally:
        transport.close()
        await asyncio.sleep(0)


# ---------------------------------------------------------------- subprocess pipes


async def test_subprocess_pipe_methods_can_be_patched_on_the_transport():
    # CPython's test_pause_reading: a pipe transport's pause_reading/resume_reading replaced
    # on the instance (a mock) must be what the stream's flow control calls
    loop = asyncio.get_running_loop()
    limit = 10
    size = 2 * limit + 1
    patched = []
    original = loop.connect_read_pipe

    async def connect_read_pipe(*args, **kwargs):
        transport, protocol = await original(*args, **kwargs)
        transport.pause_reading = mock.Mock()
        transport.resume_reading = mock.Mock()
        patched.append(transport)
        return transport, protocol

    code = f"import sys; sys.stdout.write('x' * {size}); sys.stdout.flush()"
    with mock.patch.object(loop, "connect_read_pipe", connect_read_pipe):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=limit,
        )
        stdout_transport = proc._transport.get_pipe_transport(1)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert stdout == b"x" * size
    assert stdout_transport in patched
    assert stdout_transport.pause_reading.called
    assert stdout_transport.resume_reading.called


async def test_pipe_transports_refuse_the_other_direction():
    # asyncio's read pipe has no write() and its write pipe no pause_reading() (uvloop raises
    # NotImplementedError); neither may write to, or close, the pipe by mistake
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; sys.stdout.write(sys.stdin.read())",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    stdin = proc._transport.get_pipe_transport(0)
    stdout = proc._transport.get_pipe_transport(1)
    refused = (NotImplementedError, AttributeError)
    with pytest.raises(refused):
        stdin.pause_reading()
    with pytest.raises(refused):
        stdin.resume_reading()
    with pytest.raises(refused):
        stdout.write(b"wrong way")
    with pytest.raises(refused):
        stdout.writelines([b"wrong way"])
    with pytest.raises(refused):
        stdout.write_eof()
    # both pipes still work
    out, _ = await asyncio.wait_for(proc.communicate(b"through"), 10)
    assert out == b"through"
