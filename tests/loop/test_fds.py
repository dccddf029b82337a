"""add_reader / add_writer: level-triggered callbacks on file descriptors."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from looptools import LOOP_TEST_MARKS

pytestmark = LOOP_TEST_MARKS


def run_for(loop, seconds):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_reader_called_while_readable(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = []

    def on_readable():
        calls.append(1)
        if len(calls) == 3:
            # drained only now: the loop must have called us again while data waited
            a.recv(100)

    try:
        loop.add_reader(a, on_readable)
        b.send(b"x")
        run_for(loop, 0.05)
        assert len(calls) == 3
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False
    finally:
        a.close()
        b.close()


def test_reader_with_args_and_fd_int(loop):
    r, w = os.pipe()
    got = []

    def on_readable(fd, tag):
        got.append((tag, os.read(fd, 10)))
        loop.remove_reader(fd)

    try:
        loop.add_reader(r, on_readable, r, "pipe")
        os.write(w, b"hello")
        run_for(loop, 0.05)
        assert got == [("pipe", b"hello")]
    finally:
        os.close(r)
        os.close(w)


def test_writer_and_reader_on_same_fd(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a)
        a.send(b"ping")

    def on_readable():
        events.append("r")
        a.recv(10)
        loop.remove_reader(a)

    try:
        loop.add_reader(a, on_readable)
        loop.add_writer(a, on_writable)
        run_for(loop, 0.02)
        assert b.recv(10) == b"ping"
        b.send(b"pong")
        run_for(loop, 0.02)
        assert events == ["w", "r"]
        assert loop.remove_writer(a) is False
    finally:
        a.close()
        b.close()


def test_replacing_reader(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = []
    try:
        loop.add_reader(a, calls.append, "old")
        loop.add_reader(a, lambda: (calls.append("new"), a.recv(10), loop.remove_reader(a)))
        b.send(b"x")
        run_for(loop, 0.02)
        assert calls == ["new"]
    finally:
        a.close()
        b.close()


def test_invalid_fds(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, print)
    with pytest.raises((ValueError, TypeError)):
        loop.add_reader(object(), print)
    with pytest.raises(ValueError):
        loop.remove_reader(-5)


def test_fd_closed_while_registered_does_not_break_loop(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(a, print)
    a.close()
    b.close()
    run_for(loop, 0.01)
    # the watch is still known by its number: removing it is not an error, it says it was there
    assert loop.remove_reader(fd) is True
    assert loop.remove_reader(fd) is False
    assert loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"


def test_remove_after_close(loop):
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, print)
        loop.close()
        assert loop.remove_reader(a) is False
    finally:
        a.close()
        b.close()
