"""The driver over TLS on every loop, and on ours through the native TLS transport: the
plaintext reaches the driver's protocol without asyncio's ``SSLProtocol`` in between, and
large reads, large writes (COPY), cancellation and the connection's end all work on it."""

from __future__ import annotations

import asyncio

import asyncpg_rs
from asyncpg_rs import _native


async def _tls_connection(pg):
    con = await asyncpg_rs.connect(**pg.connect_kwargs(ssl="require"))
    assert await con.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    return con


async def test_driver_takes_the_native_tls_transport_on_our_loop(pg):
    con = await _tls_connection(pg)
    try:
        transport = con._transport
        if isinstance(asyncio.get_running_loop(), asyncpg_rs.Loop):
            assert type(transport) is _native.TlsTransport
            # the driver's protocol is the TLS transport's protocol: it receives natively
            assert isinstance(transport.get_protocol(), _native.PGProtocol)
        assert transport.get_extra_info("ssl_object") is not None
        # sslmode=require does not verify: the certificate is there, unvalidated
        assert transport.get_extra_info("peercert") == {}
        assert transport.get_extra_info("ssl_object").getpeercert(True)
        assert transport.get_extra_info("cipher")[1].startswith("TLS")
    finally:
        await con.close()


async def test_large_reads_and_writes_over_tls(pg):
    con = await _tls_connection(pg)
    try:
        # a result far larger than a TLS record and than one socket read
        rows = await con.fetch("SELECT i, repeat('x', 500) FROM generate_series(1, 20000) i")
        assert len(rows) == 20000 and rows[-1][0] == 20000 and rows[0][1] == "x" * 500
        big = "y" * (3 * 1024 * 1024)
        assert await con.fetchval("SELECT length($1::text)", big) == len(big)
        await con.execute("CREATE TEMP TABLE t (a int, b text)")
        records = [(i, "z" * 200) for i in range(30000)]
        await con.copy_records_to_table("t", records=records)
        assert await con.fetchval("SELECT count(*) FROM t") == 30000
        # the connection is still in step afterwards
        assert await con.fetchval("SELECT 1") == 1
    finally:
        await con.close()


async def test_cancel_and_timeout_over_tls(pg):
    con = await _tls_connection(pg)
    try:
        try:
            await con.fetchval("SELECT pg_sleep(10)", timeout=0.2)
        except asyncio.TimeoutError:
            pass
        else:
            raise AssertionError("the query should have timed out")
        assert await con.fetchval("SELECT 2") == 2
    finally:
        await con.close()
    assert con.is_closed()


async def test_terminate_over_tls(pg):
    con = await _tls_connection(pg)
    con.terminate()
    assert con.is_closed()
    con2 = await _tls_connection(pg)
    await con2.close()
