"""Corrupt answers from the server: a clean error of asyncpg's class, no hang, bounded memory.

A relay (``tools/wire_relay.py``) sits between the driver and the real throwaway server,
passes the startup through and then rewrites the server's answers: bad message lengths,
truncated and unknown messages, DataRows that disagree with their RowDescription, invalid
UTF-8, wrong binary widths, absurd array headers, one-byte TCP writes, a close in the middle
of a message. Each case checks the exception's class, that the connection is either closed or
still answers correctly (where the stream can resync), and that nothing waits forever.

Cases whose lengths or counts could size an allocation run in a child process under a
1 GiB address-space limit: a driver that trusts such a number dies there (an allocation
failure aborts), and the test sees the abort instead of the machine swapping.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import subprocess
import sys

import pytest
from wire_relay import Close, Relay, data_row, message

import asyncpg_rs
from asyncpg_rs import exceptions

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = os.path.join(ROOT, "tools", "wire_fault_child.py")
# no operation on a corrupt stream may take longer than this
BOUND = 5.0
CHILD_MEMORY = 1 << 30

# the queries the cases corrupt, with their column layout
TWO_COLUMNS = "SELECT 1::int4 AS a, 'x'::text AS b"
INT_ARRAY = "SELECT ARRAY[1, 2, 3]::int4[] AS a"
TIMETZ = "SELECT '12:00+02'::timetz AS t"


class CorruptFirst:
    """Rewrite the first message of ``kind`` after the startup with ``make(raw)``."""

    def __init__(self, kind, make):
        self.kind = kind
        self.make = make
        self.done = False

    def __call__(self, kind, raw):
        if self.done or kind != self.kind:
            return raw
        self.done = True
        return self.make(raw)


def with_length(length):
    """The message with its length field replaced (and its body left as it was)."""
    return lambda raw: raw[:1] + struct.pack("!I", length) + raw[5:]


def array_value(ndim, dims, elements=(), flags=0, elem_oid=23):
    head = struct.pack("!iii", ndim, flags, elem_oid)
    for length, lower in dims:
        head += struct.pack("!ii", length, lower)
    for e in elements:
        head += struct.pack("!i", len(e)) + e
    return head


# ---------------------------------------------------------------- in-process cases

# case -> (query, rewrite, expected exception classes, whether the connection may stay open)
STREAM_CASES = {
    "length 0": (TWO_COLUMNS, CorruptFirst(b"D", with_length(0)), exceptions.ProtocolError),
    "length 1": (TWO_COLUMNS, CorruptFirst(b"D", with_length(1)), exceptions.ProtocolError),
    "length 2": (TWO_COLUMNS, CorruptFirst(b"D", with_length(2)), exceptions.ProtocolError),
    "length 3": (TWO_COLUMNS, CorruptFirst(b"D", with_length(3)), exceptions.ProtocolError),
    "unknown message type": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: message(b"@", b"what is this") + raw),
        exceptions.ProtocolError,
    ),
    "RowDescription count beyond its body": (
        TWO_COLUMNS,
        CorruptFirst(b"T", lambda raw: message(b"T", struct.pack("!h", 1000) + raw[7:])),
        exceptions.ProtocolError,
    ),
    "RowDescription cut short": (
        TWO_COLUMNS,
        CorruptFirst(b"T", lambda raw: message(b"T", raw[5:-3])),
        exceptions.ProtocolError,
    ),
    "DataRow cut short": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: message(b"D", struct.pack("!hi", 2, 4) + b"\0\0\0\1")),
        exceptions.ProtocolError,
    ),
    "DataRow value longer than the message": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: message(b"D", struct.pack("!hi", 2, 1000) + b"\0\0\0\1")),
        exceptions.ProtocolError,
    ),
    "DataRow with more columns": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: data_row([b"\0\0\0\1", b"x", b"extra"])),
        exceptions.ProtocolError,
    ),
    "DataRow with fewer columns": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: data_row([b"\0\0\0\1"])),
        exceptions.ProtocolError,
    ),
    "DataRow with a negative column count": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: message(b"D", struct.pack("!h", -1))),
        exceptions.ProtocolError,
    ),
    "invalid UTF-8 in text": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: data_row([b"\0\0\0\1", b"\xff\xfe\xc3"])),
        exceptions.ProtocolError,
    ),
    "int4 of 3 bytes": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: data_row([b"\0\0\1", b"x"])),
        exceptions.ProtocolError,
    ),
    "int4 of 5 bytes": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: data_row([b"\0\0\0\0\1", b"x"])),
        exceptions.ProtocolError,
    ),
    "int4 of 0 bytes": (
        TWO_COLUMNS,
        CorruptFirst(b"D", lambda raw: data_row([b"", b"x"])),
        exceptions.ProtocolError,
    ),
    "negative value length other than -1": (
        TWO_COLUMNS,
        CorruptFirst(
            b"D", lambda raw: message(b"D", struct.pack("!hi", 2, -7) + struct.pack("!i", -1))
        ),
        exceptions.ProtocolError,
    ),
    "array element of 3 bytes": (
        INT_ARRAY,
        CorruptFirst(b"D", lambda raw: data_row([array_value(1, [(1, 1)], [b"\0\0\1"])])),
        exceptions.ProtocolError,
    ),
    "array with negative ndim": (
        INT_ARRAY,
        CorruptFirst(b"D", lambda raw: data_row([array_value(-1, [])])),
        exceptions.ProtocolError,
    ),
    "array with a negative dimension": (
        INT_ARRAY,
        CorruptFirst(b"D", lambda raw: data_row([array_value(1, [(-5, 1)], [b"\0\0\0\1"])])),
        exceptions.ProtocolError,
    ),
    "array header cut short": (
        INT_ARRAY,
        CorruptFirst(b"D", lambda raw: data_row([struct.pack("!ii", 1, 0)])),
        exceptions.ProtocolError,
    ),
    "timetz zone offset beyond a day": (
        TIMETZ,
        CorruptFirst(b"D", lambda raw: data_row([struct.pack("!qi", 0, 90000)])),
        exceptions.ProtocolError,
    ),
    "timetz zone offset -2**31": (
        TIMETZ,
        CorruptFirst(b"D", lambda raw: data_row([struct.pack("!qi", 0, -(2**31))])),
        exceptions.ProtocolError,
    ),
    "CommandComplete tag not terminated": (
        TWO_COLUMNS,
        CorruptFirst(b"C", lambda raw: message(b"C", b"SELECT 1")),
        exceptions.ProtocolError,
    ),
}


async def _connect_through(pg, relay):
    return await asyncpg_rs.connect(
        **pg.connect_kwargs(host=relay.host, port=relay.port), ssl=False, timeout=BOUND
    )


async def _closed_soon(con):
    for _ in range(100):
        if con.is_closed():
            return True
        await asyncio.sleep(0.01)
    return con.is_closed()


@pytest.mark.parametrize("case", list(STREAM_CASES))
async def test_corrupt_answer(pg, case):
    query, rewrite, expected = STREAM_CASES[case]
    rewrite = CorruptFirst(rewrite.kind, rewrite.make)  # fresh state per run
    with Relay(pg.host, pg.port, rewrite=rewrite) as relay:
        con = await _connect_through(pg, relay)
        try:
            with pytest.raises(expected):
                await asyncio.wait_for(con.fetch(query), BOUND)
            assert rewrite.done
            if not con.is_closed():
                # the stream resynchronised: the connection must answer correctly
                assert await asyncio.wait_for(con.fetchval("SELECT 2"), BOUND) == 2
                assert await asyncio.wait_for(con.fetchval("SELECT $1::int4", 7), BOUND) == 7
            else:
                with pytest.raises(exceptions.InterfaceError):
                    await asyncio.wait_for(con.fetchval("SELECT 2"), BOUND)
        finally:
            con.terminate()


async def test_one_byte_writes_still_work(pg):
    with Relay(pg.host, pg.port, chunk=1, chunk_delay=0.0002) as relay:
        con = await _connect_through(pg, relay)
        try:
            rows = await asyncio.wait_for(con.fetch(TWO_COLUMNS + " UNION ALL SELECT 3, 'yz'"), 30)
            assert [tuple(r) for r in rows] == [(1, "x"), (3, "yz")]
            assert await asyncio.wait_for(con.fetchval(INT_ARRAY), 30) == [1, 2, 3]
            assert await asyncio.wait_for(con.fetchval("SELECT $1::text", "é" * 50), 30) == (
                "é" * 50
            )
        finally:
            con.terminate()


@pytest.mark.parametrize("where", ["header", "body"])
async def test_close_mid_message(pg, where):
    def cut(raw):
        return Close(raw[:3] if where == "header" else raw[: len(raw) - 2])

    rewrite = CorruptFirst(b"D", cut)
    with Relay(pg.host, pg.port, rewrite=rewrite) as relay:
        con = await _connect_through(pg, relay)
        try:
            with pytest.raises(exceptions.ConnectionDoesNotExistError):
                await asyncio.wait_for(con.fetch(TWO_COLUMNS), BOUND)
            assert await _closed_soon(con)
            with pytest.raises(exceptions.InterfaceError):
                await con.fetchval("SELECT 1")
        finally:
            con.terminate()


# ---------------------------------------------------------------- child-process cases

# case -> (query, rewrite); the answer must be a ProtocolError and a closed connection
MEMORY_CASES = {
    "length 0xFFFFFFFF": (TWO_COLUMNS, CorruptFirst(b"D", with_length(0xFFFFFFFF))),
    "length 2**31-1": (TWO_COLUMNS, CorruptFirst(b"D", with_length(0x7FFFFFFF))),
    "length -2**31": (TWO_COLUMNS, CorruptFirst(b"D", with_length(0x80000000))),
    # a DataRow may be as long as a 1 GiB value and its header: the first length past that
    # (src/pg/protocol/framing.rs); a shorter one is a row still on its way
    "length 2**30+4": (TWO_COLUMNS, CorruptFirst(b"D", with_length((1 << 30) + 4))),
    "CommandComplete length 2**30+1": (
        TWO_COLUMNS,
        CorruptFirst(b"C", with_length((1 << 30) + 1)),
    ),
    "RowDescription length 2**31-1": (TWO_COLUMNS, CorruptFirst(b"T", with_length(0x7FFFFFFF))),
    "array ndim 2**31-1": (
        INT_ARRAY,
        CorruptFirst(b"D", lambda raw: data_row([array_value(0x7FFFFFFF, [(1, 1)])])),
    ),
    "array dimension 2**31-1": (
        INT_ARRAY,
        CorruptFirst(
            b"D", lambda raw: data_row([array_value(1, [(0x7FFFFFFF, 1)], [b"\0\0\0\1"])])
        ),
    ),
    "array dimensions whose product overflows": (
        INT_ARRAY,
        CorruptFirst(
            b"D",
            lambda raw: data_row([array_value(6, [(1 << 16, 1)] * 6, [b"\0\0\0\1"] * 3)]),
        ),
    ),
    "array outer dimension 2**31-1 over an empty one": (
        INT_ARRAY,
        CorruptFirst(b"D", lambda raw: data_row([array_value(2, [(0x7FFFFFFF, 1), (0, 1)])])),
    ),
}


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


@pytest.mark.parametrize("case", list(MEMORY_CASES))
async def test_corrupt_answer_in_bounded_memory(pg, event_loop_name, case):
    # async only to be run once per loop by the harness: the child runs the driver on that
    # loop, and the relay has its own thread, so waiting for the child here blocks nothing
    loop_name = event_loop_name
    query, rewrite = MEMORY_CASES[case]
    rewrite = CorruptFirst(rewrite.kind, rewrite.make)
    with Relay(pg.host, pg.port, rewrite=rewrite) as relay:
        kwargs = pg.connect_kwargs(host=relay.host, port=relay.port)
        proc = subprocess.run(
            [sys.executable, CHILD, loop_name, json.dumps(kwargs), query],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_limit_memory,
            cwd=ROOT,
        )
    assert proc.returncode == 0, (
        f"the child died (status {proc.returncode}) under a {CHILD_MEMORY >> 20} MiB "
        f"address-space limit: {proc.stderr.strip()[-600:]}"
    )
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "ProtocolError", outcome
    assert outcome["closed"] or outcome["usable"], outcome
    assert outcome["seconds"] < BOUND, outcome
