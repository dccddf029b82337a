"""Smoke test for an installed asyncpg_rs wheel: python wheel_smoke.py DSN.

Run from outside the source tree with the wheel's venv, so that the installed package (and
its compiled core) is what gets imported, not the checkout's.
"""

import asyncio
import sys

import asyncpg_rs


async def main(dsn):
    assert "site-packages" in asyncpg_rs.__file__, asyncpg_rs.__file__
    assert type(asyncio.get_running_loop()).__module__ == "asyncpg_rs.eventloop"
    con = await asyncpg_rs.connect(dsn)
    try:
        assert await con.fetchval("SELECT $1::int + 1", 41) == 42
        rows = await con.fetch("SELECT g, g::text FROM generate_series(1, 3) g")
        assert [tuple(r) for r in rows] == [(1, "1"), (2, "2"), (3, "3")]
        try:
            await con.execute("SELECT * FROM wheel_smoke_missing")
        except asyncpg_rs.UndefinedTableError:
            pass
        else:
            raise AssertionError("no UndefinedTableError")
    finally:
        await con.close()
    async with asyncpg_rs.create_pool(dsn, min_size=1, max_size=2) as pool:
        assert await pool.fetchval("SELECT 1") == 1
    print(f"wheel smoke: ok on Python {sys.version.split()[0]} ({asyncpg_rs.__file__})")


asyncpg_rs.run(main(sys.argv[1]))
