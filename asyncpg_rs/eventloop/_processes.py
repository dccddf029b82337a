"""Pipes and subprocesses.

Pipe ends are native stream transports in pipe mode (``read``/``write`` instead of
``recv``/``send``). A subprocess transport is asyncio's own ``BaseSubprocessTransport`` over
those pipes, so ``asyncio.create_subprocess_exec``/``_shell`` behave exactly as on the stdlib
loop. Children are reaped through a pidfd watched by the loop (Linux 5.3+), or by a thread
blocked in ``waitpid`` for that one child elsewhere: never by a SIGCHLD handler of ours, so an
application's own SIGCHLD handling is left alone.
"""

from __future__ import annotations

import contextvars
import os
import stat
import subprocess
import threading
import warnings
from asyncio import base_subprocess

from .._native import StreamTransport


def _check_pipe(pipe):
    mode = os.fstat(pipe.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        raise ValueError("Pipe transport is only for pipes, sockets and character devices")


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


class _SubprocessTransport(base_subprocess.BaseSubprocessTransport):
    def __init__(self, *args, **kwargs):
        # the protocol's callbacks (process_exited, connection_lost, ...) run in the context
        # the subprocess was started in, whoever reaps or closes it (as uvloop's)
        self._context = contextvars.copy_context()
        super().__init__(*args, **kwargs)

    def _call(self, cb, *data):
        if self._pending_calls is not None:
            self._pending_calls.append((cb, data))
        else:
            self._loop.call_soon(cb, *data, context=self._context.copy())

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=bufsize,
            **kwargs,
        )


class ProcessMethods:
    """Pipes and subprocesses of :class:`Loop`."""

    # ---------------------------------------------------------------- pipes

    def _pipe_transport(self, pipe, protocol, kind, waiter=None):
        _check_pipe(pipe)
        os.set_blocking(pipe.fileno(), False)
        context = contextvars.copy_context()
        transport = StreamTransport(
            self, pipe, protocol, {"pipe": pipe}, None, kind, context=context
        )
        self.call_soon(protocol.connection_made, transport, context=context)
        self.call_soon(transport._start)
        if waiter is not None:
            self.call_soon(_set_result_unless_cancelled, waiter, None)
        return transport

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Read from ``pipe`` (a file object) into a protocol; returns (transport, protocol)."""
        return await self._connect_pipe(protocol_factory, pipe, "read_pipe")

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Write to ``pipe`` through a transport; returns (transport, protocol)."""
        return await self._connect_pipe(protocol_factory, pipe, "write_pipe")

    async def _connect_pipe(self, protocol_factory, pipe, kind):
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._pipe_transport(pipe, protocol, kind, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        finally:
            # a failed waiter holds the error, whose traceback holds this frame
            del waiter
        return transport, protocol

    # ---------------------------------------------------------------- subprocesses

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Start ``program`` with ``args``; returns (SubprocessTransport, protocol)."""
        if shell:
            raise ValueError("shell must be False")
        _check_binary_mode(universal_newlines, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        transport = await self._make_subprocess_transport(
            protocol, (program,) + args, False, stdin, stdout, stderr, bufsize, **kwargs
        )
        return transport, protocol

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Run ``cmd`` through the shell; returns (SubprocessTransport, protocol)."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if not shell:
            raise ValueError("shell must be True")
        _check_binary_mode(universal_newlines, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        transport = await self._make_subprocess_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, **kwargs
        )
        return transport, protocol

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        waiter = self.create_future()
        transport = _SubprocessTransport(
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        self._watch_child(transport.get_pid(), transport)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        finally:
            # a failed waiter holds the error, whose traceback holds this frame
            del waiter
        return transport

    def _watch_child(self, pid, transport):
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None:
            self.add_reader(pidfd, self._child_exited, pidfd, pid, transport)
            return

        def wait_in_thread():
            returncode = _wait_for(pid, 0, transport)
            if not self.is_closed():
                self.call_soon_threadsafe(transport._process_exited, returncode)

        threading.Thread(
            target=wait_in_thread, name=f"asyncpg_rs-waitpid-{pid}", daemon=True
        ).start()

    def _child_exited(self, pidfd, pid, transport):
        returncode = _wait_for(pid, os.WNOHANG, transport)
        if returncode is None:
            return  # spurious wake-up; still running
        self.remove_reader(pidfd)
        os.close(pidfd)
        transport._process_exited(returncode)


def _wait_for(pid, flags, transport):
    try:
        got, status = os.waitpid(pid, flags)
    except ChildProcessError:
        # reaped elsewhere: by the Popen object itself (its wait() or poll(), which
        # asyncio's close() calls too), whose returncode is then the real one ...
        known = getattr(getattr(transport, "_proc", None), "returncode", None)
        if known is not None:
            return known
        # ... or by an application's SIGCHLD handler: the status is lost
        warnings.warn(
            f"Unknown child process pid {pid}, will report returncode 255",
            RuntimeWarning,
            stacklevel=2,
        )
        return 255
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def _check_binary_mode(universal_newlines, bufsize, text, encoding, errors):
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")
