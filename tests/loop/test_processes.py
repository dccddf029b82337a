"""Pipes and subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS

PY = sys.executable


async def test_exec_communicate_and_returncode():
    proc = await asyncio.create_subprocess_exec(
        PY,
        "-c",
        "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1]);"
        "sys.stderr.write('to stderr'); sys.exit(7)",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert isinstance(proc._transport, asyncio.SubprocessTransport)
    data = os.urandom(300_000)  # more than a pipe buffer: both directions must stream
    out, err = await proc.communicate(data)
    assert out == data[::-1]
    assert err == b"to stderr"
    assert proc.returncode == 7


async def test_shell_and_readline():
    proc = await asyncio.create_subprocess_shell(
        "echo one; echo two 1>&2", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert await proc.stdout.readline() == b"one\n"
    assert await proc.stderr.read() == b"two\n"
    assert await proc.wait() == 0


@pytest.mark.parametrize("how", ["terminate", "kill", "send_signal"])
async def test_signals_to_child(how):
    proc = await asyncio.create_subprocess_exec(
        PY,
        "-c",
        "import sys, time; print('up', flush=True); time.sleep(60)",
        stdout=asyncio.subprocess.PIPE,
    )
    assert await proc.stdout.readline() == b"up\n"
    if how == "send_signal":
        proc.send_signal(signal.SIGUSR1)
        expected = -signal.SIGUSR1
    else:
        getattr(proc, how)()
        expected = -signal.SIGTERM if how == "terminate" else -signal.SIGKILL
    assert await asyncio.wait_for(proc.wait(), 10) == expected


async def test_many_children_reaped():
    procs = [await asyncio.create_subprocess_exec(PY, "-c", f"exit({i})") for i in range(10)]
    codes = await asyncio.gather(*(p.wait() for p in procs))
    assert codes == list(range(10))


async def test_subprocess_argument_errors():
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError, match="cmd must be a string"):
        await loop.subprocess_shell(asyncio.SubprocessProtocol, ["ls"])
    with pytest.raises(ValueError, match="bufsize must be 0"):
        await loop.subprocess_exec(asyncio.SubprocessProtocol, PY, bufsize=1)
    with pytest.raises(ValueError, match="universal_newlines must be False"):
        await loop.subprocess_exec(asyncio.SubprocessProtocol, PY, universal_newlines=True)
    with pytest.raises(FileNotFoundError):
        await asyncio.create_subprocess_exec("/nonexistent/program")


async def test_read_and_write_pipes():
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    rfile, wfile = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)
    received = bytearray()
    done = loop.create_future()

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            received.extend(data)

        def eof_received(self):
            received.extend(b"<eof>")

        def connection_lost(self, exc):
            done.set_result(exc)

    rt, _ = await loop.connect_read_pipe(Reader, rfile)
    assert rt.get_extra_info("pipe") is rfile
    wt, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
    assert isinstance(rt, asyncio.ReadTransport) and not isinstance(rt, asyncio.WriteTransport)
    assert isinstance(wt, asyncio.WriteTransport)  # (the stdlib's is a full Transport)
    payload = os.urandom(1 << 20)
    wt.write(payload)
    wt.write_eof()
    assert await asyncio.wait_for(done, 10) is None
    assert bytes(received) == payload + b"<eof>"


async def test_write_pipe_reader_gone():
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    wfile = os.fdopen(w, "wb", 0)
    lost = loop.create_future()

    class Writer(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.set_result(exc)

    wt, _ = await loop.connect_write_pipe(Writer, wfile)
    os.close(r)
    exc = await asyncio.wait_for(lost, 10)
    assert exc is None or isinstance(exc, BrokenPipeError)
    wt.close()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
async def test_terminal_write_pipe_survives_input():
    # a write end on a terminal (stdout on a tty, say) turns readable when someone types:
    # that is input, not the reader going away, and must not close the transport
    import tty

    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    lost = loop.create_future()

    class Writer(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.set_result(exc)

    slave_file = os.fdopen(slave, "wb", 0)
    try:
        wt, _ = await loop.connect_write_pipe(Writer, slave_file)
        os.write(master, b"typed")
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not lost.done() and not wt.is_closing()
        wt.write(b"out")
        received = b""
        for _ in range(100):
            try:
                received += os.read(master, 100)
            except BlockingIOError:
                pass
            if received == b"out":
                break
            await asyncio.sleep(0.01)
        assert received == b"out"
        wt.close()
        assert await asyncio.wait_for(lost, 10) is None
    finally:
        slave_file.close()
        os.close(master)


async def test_regular_file_is_not_a_pipe(tmp_path):
    loop = asyncio.get_running_loop()
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(ValueError, match="only for pipes"):
            await loop.connect_write_pipe(asyncio.Protocol, f)


async def test_returncode_of_a_child_its_popen_reaped():
    # the Popen reaped the child itself (its wait(); asyncio's close() polls it too) before
    # the loop heard of the exit: the Popen's returncode is the real one, not 255 with a
    # warning (which the stdlib's child watchers report, so the check is on our loop)
    import warnings

    import asyncpg_rs

    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    class Protocol(asyncio.SubprocessProtocol):
        def process_exited(self):
            exited.set_result(None)

    transport, _ = await loop.subprocess_exec(
        Protocol, PY, "-c", "import sys; sys.exit(3)", stdin=None, stdout=None, stderr=None
    )
    try:
        transport.get_extra_info("subprocess").wait()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await asyncio.wait_for(exited, 10)
        if isinstance(loop, asyncpg_rs.Loop):
            assert transport.get_returncode() == 3
            assert not [w for w in caught if "Unknown child process" in str(w.message)]
    finally:
        transport.close()
