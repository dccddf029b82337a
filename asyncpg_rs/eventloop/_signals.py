"""Unix signals on the loop: ``add_signal_handler`` / ``remove_signal_handler``.

Python's C-level signal handler writes the signal number to the wake-up descriptor
(``signal.set_wakeup_fd``); the loop watches the other end of that socket pair, so a signal
wakes a blocked poll, and the numbers read from it run the handlers as ordinary callbacks.
While the loop runs in the main thread the wake-up descriptor is installed even without
handlers, so Ctrl-C interrupts a blocked poll at once (then Python's own handler raises
``KeyboardInterrupt``, or ``asyncio.Runner``'s cancels the main task).
"""

from __future__ import annotations

import contextvars
import signal
import socket
import threading
from typing import Any, Callable


def _noop_handler(signum, frame):
    """Installed for signals the loop handles: the work happens on the loop, not here."""


class SignalMethods:
    """``add_signal_handler``/``remove_signal_handler`` of :class:`Loop`."""

    _signal_handlers: dict
    _wakeup_sockets: tuple | None
    _wakeup_previous: int | None

    def _init_signals(self) -> None:
        self._signal_handlers = {}
        self._wakeup_sockets = None
        self._wakeup_previous = None

    def _wakeup_socket(self) -> socket.socket:
        if self._wakeup_sockets is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._wakeup_sockets = (reader, writer)
            self._add_internal_reader(reader.fileno(), self._read_signals)
        return self._wakeup_sockets[1]

    def _install_wakeup_fd(self) -> bool:
        """Point ``signal.set_wakeup_fd`` at our socket; False outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        fd = self._wakeup_socket().fileno()
        previous = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        if previous != fd and self._wakeup_previous is None:
            self._wakeup_previous = previous
        return True

    def _release_wakeup_fd(self) -> None:
        if self._signal_handlers or self._wakeup_previous is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            signal.set_wakeup_fd(self._wakeup_previous)
        except (ValueError, OSError):
            pass
        self._wakeup_previous = None

    def _read_signals(self) -> None:
        reader = self._wakeup_sockets[0]
        while True:
            try:
                data = reader.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                return
            for signum in data:
                entry = self._signal_handlers.get(signum)
                if entry is not None:
                    callback, args, context = entry
                    self.call_soon(callback, *args, context=context)

    @staticmethod
    def _check_signal(sig: Any) -> None:
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig: int, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` on the loop when signal ``sig`` arrives (main thread only)."""
        import asyncio

        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # raises ValueError outside the main thread
            if threading.current_thread() is not threading.main_thread():
                raise ValueError("set_wakeup_fd only works in main thread of the main interpreter")
            self._install_wakeup_fd()
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc)) from exc
        self._signal_handlers[sig] = (callback, args, contextvars.copy_context())
        try:
            signal.signal(sig, _noop_handler)
            # a handled signal must not interrupt system calls in other threads
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            self._release_wakeup_fd()
            if exc.errno == 22:  # EINVAL
                raise RuntimeError(f"sig {sig:d} cannot be caught") from exc
            raise

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig``; returns whether one was installed."""
        self._check_signal(sig)
        if sig not in self._signal_handlers:
            return False
        del self._signal_handlers[sig]
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == 22:
                raise RuntimeError(f"sig {sig:d} cannot be caught") from exc
            raise
        if not self.is_running():
            self._release_wakeup_fd()
        return True

    def _close_signals(self) -> None:
        for sig in list(self._signal_handlers):
            try:
                self.remove_signal_handler(sig)
            except (RuntimeError, ValueError):
                pass
        self._release_wakeup_fd()
        if self._wakeup_sockets is not None:
            for sock in self._wakeup_sockets:
                sock.close()
            self._wakeup_sockets = None
