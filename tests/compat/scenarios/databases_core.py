"""encode/databases on its asyncpg backend: raw SQL with named parameters, SQLAlchemy Core
statements, execute_many, transactions with rollback, iterate (a cursor)."""

import sqlalchemy as sa
from databases import Database

metadata = sa.MetaData()
notes = sa.Table(
    "compat_db_notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(100)),
    sa.Column("done", sa.Boolean),
)


async def run(dsn):
    out = []
    db = Database(dsn)
    await db.connect()
    await db.execute("DROP TABLE IF EXISTS compat_db_notes")
    await db.execute(
        "CREATE TABLE compat_db_notes (id serial PRIMARY KEY, text varchar(100), done boolean)"
    )
    await db.execute_many(notes.insert(), [{"text": f"n{i}", "done": i % 2 == 0} for i in range(6)])
    rows = await db.fetch_all(notes.select().where(notes.c.done).order_by(notes.c.id))
    assert [r["text"] for r in rows] == ["n0", "n2", "n4"]
    out.append([(r["id"], r["text"], r._mapping["done"]) for r in rows])
    row = await db.fetch_one("SELECT text FROM compat_db_notes WHERE id = :id", {"id": 2})
    out.append(row["text"])
    try:
        async with db.transaction():
            await db.execute(notes.insert().values(text="rolled back"))
            raise LookupError("roll back")
    except LookupError:
        pass
    count = await db.fetch_val("SELECT count(*) FROM compat_db_notes")
    assert count == 6
    out.append(count)
    async with db.transaction():
        await db.execute(notes.update().where(notes.c.id == 1).values(text="edited"))
    out.append(
        [
            r["text"]
            async for r in db.iterate(
                "SELECT text FROM compat_db_notes WHERE id < :n ORDER BY id", {"n": 4}
            )
        ]
    )
    await db.execute("DROP TABLE compat_db_notes")
    await db.disconnect()
    return out
