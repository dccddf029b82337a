"""A short tour of asyncpg_rs against a real server: python examples/demo.py DSN."""

import asyncio
import sys

import asyncpg_rs


async def main(dsn: str) -> None:
    con = await asyncpg_rs.connect(dsn)
    v = con.get_server_version()  # asyncpg's shape: 15.18 is (major=15, minor=0, micro=18)
    print(
        f"connected to PostgreSQL {v.major}.{v.micro}"
        if v.major >= 10
        else f"connected to PostgreSQL {v.major}.{v.minor}.{v.micro}"
    )
    await con.execute(
        "CREATE TEMP TABLE books (id int4 PRIMARY KEY, title text NOT NULL, pages int4)"
    )
    await con.executemany(
        "INSERT INTO books VALUES ($1, $2, $3)",
        [(1, "The Rust Book", 550), (2, "Fluent Python", 1014), (3, "PostgreSQL Internals", 620)],
    )
    async with con.transaction():
        await con.execute("UPDATE books SET pages = pages + 1 WHERE id = $1", 2)
    for row in await con.fetch("SELECT id, title, pages FROM books ORDER BY pages DESC"):
        print(f"  {row[0]}  {row[1]:<24} {row[2]:>5} pages")
    total = await con.fetchval("SELECT sum(pages) FROM books")
    print("total pages:", total)
    try:
        await con.execute("INSERT INTO books VALUES ($1, $2, $3)", 1, "duplicate", 1)
    except asyncpg_rs.UniqueViolationError as e:
        print("as expected:", type(e).__name__, "-", e)
    await con.close()


async def pooled(dsn: str) -> None:
    loop = asyncio.get_running_loop()
    print(f"on {type(loop).__module__}.{type(loop).__name__}:")
    async with asyncpg_rs.create_pool(dsn, min_size=2, max_size=4) as pool:
        sums = await asyncio.gather(*(pool.fetchval("SELECT $1::int4 * 2", i) for i in range(8)))
        print("  8 concurrent queries through a pool:", sums)


if __name__ == "__main__":
    dsn = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1/postgres"
    asyncio.run(main(dsn))  # the driver on the stdlib loop
    # and on asyncpg_rs's own loop, where it takes the native path
    asyncpg_rs.run(pooled(dsn))
