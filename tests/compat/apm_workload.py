"""The one workload every APM agent scenario (``scenarios/apm_*.py``) traces.

It touches each place where an agent hooks asyncpg: connecting, ``execute`` with and
without arguments, ``executemany``, every ``fetch*``, a prepared statement, both kinds of
cursor, a transaction, a failing query and a pool. The agents' spans for it are compared
between the real asyncpg and asyncpg_rs by ``test_libraries.py``.

It also guards the "no network" promise: an audit hook records every Python-level
``socket.connect``/``getaddrinfo`` and :func:`outbound` lists those to anywhere but the
loopback (an agent trying to reach its collector), which each scenario asserts is empty.
"""

from __future__ import annotations

import re
import sys

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_outbound: list[str] = []


def _audit(event, args):
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and addr and addr[0] not in _LOOPBACK:
            _outbound.append(f"connect {addr!r}")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if host is not None and host not in _LOOPBACK and not str(host).startswith("/"):
            _outbound.append(f"getaddrinfo {host!r}")


sys.addaudithook(_audit)


def outbound():
    """Connection attempts (or name lookups) to anywhere but the loopback so far."""
    return list(_outbound)


FAILING_QUERY = "SELECT * FROM apm_no_such_table"


def portal_names_out(sql):
    """``sql`` with a cursor's portal name (each driver names its own) replaced by ``<portal>``."""
    return re.sub(r'"?__asyncpg\w*__"?', "<portal>", sql)


async def run_workload(dsn, on_error=None):
    """Run the workload; returns what it read, so a scenario can also check the data."""
    import asyncpg

    seen = []
    con = await asyncpg.connect(dsn)
    try:
        await con.execute("CREATE TEMP TABLE apm_items (id int PRIMARY KEY, name text)")
        seen.append(await con.execute("INSERT INTO apm_items VALUES ($1, $2)", 1, "one"))
        await con.executemany(
            "INSERT INTO apm_items VALUES ($1, $2)", [(i, f"n{i}") for i in range(2, 8)]
        )
        seen.append(
            [tuple(r) for r in await con.fetch("SELECT id, name FROM apm_items ORDER BY id")]
        )
        seen.append(tuple(await con.fetchrow("SELECT id, name FROM apm_items WHERE id = $1", 2)))
        seen.append(await con.fetchval("SELECT count(*) FROM apm_items WHERE id > $1", 3))
        rows = await con.fetchmany("SELECT $1::int * 2", [(1,), (2,)])
        seen.append([tuple(r) for r in rows])
        stmt = await con.prepare("SELECT name FROM apm_items WHERE id = $1")
        seen.append(await stmt.fetchval(4))
        seen.append([tuple(r) for r in await stmt.fetch(5)])
        async with con.transaction():
            names = [
                r[0] async for r in con.cursor("SELECT name FROM apm_items ORDER BY id", prefetch=3)
            ]
            seen.append(names)
            cur = await con.cursor("SELECT id FROM apm_items ORDER BY id")
            seen.append([tuple(r) for r in await cur.fetch(2)])
            seen.append(await cur.forward(2))
            seen.append(tuple(await cur.fetchrow()))
        try:
            await con.fetch(FAILING_QUERY)
        except asyncpg.UndefinedTableError as e:
            seen.append(type(e).__name__)
            if on_error is not None:
                on_error(e)
        else:
            raise AssertionError("the failing query did not fail")
        seen.append(await con.fetchval("SELECT 1"))  # still usable after the failure
    finally:
        await con.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        seen.append(await pool.fetchval("SELECT $1::int + 1", 41))
        async with pool.acquire() as pcon:
            seen.append(await pcon.execute("SELECT 1"))
    finally:
        await pool.close()
    return seen
