"""Piccolo's PostgresEngine: table creation, inserts with JSONB/array/numeric columns, joins
through a foreign key, transactions, a connection pool with concurrent queries, updates."""

import asyncio
import decimal
import os
import urllib.parse

from piccolo.columns import JSONB, Array, Boolean, ForeignKey, Integer, Numeric, Varchar
from piccolo.engine.postgres import PostgresEngine
from piccolo.table import Table


def _config(dsn):
    u = urllib.parse.urlparse(dsn)
    config = {
        "host": u.hostname,
        "port": u.port,
        "user": urllib.parse.unquote(u.username),
        "database": u.path.lstrip("/"),
    }
    if u.password:
        config["password"] = urllib.parse.unquote(u.password)
    return config


# Piccolo binds tables to an engine when the module is imported, as applications do
ENGINE = PostgresEngine(config=_config(os.environ["COMPAT_DSN"]))


class Band(Table, db=ENGINE, tablename="compat_piccolo_band"):
    name = Varchar(length=50, unique=True)
    popularity = Integer(default=0)
    rating = Numeric(digits=(5, 2))
    info = JSONB(null=True)
    tags = Array(base_column=Varchar())


class Concert(Table, db=ENGINE, tablename="compat_piccolo_concert"):
    band = ForeignKey(references=Band)
    sold_out = Boolean(default=False)


async def run(dsn):
    out = []
    await Concert.alter().drop_table(if_exists=True)
    await Band.alter().drop_table(if_exists=True)
    await Band.create_table()
    await Concert.create_table()
    await Band.insert(
        *[
            Band(
                name=f"b{i}",
                popularity=i * 10,
                rating=decimal.Decimal(f"{i}.5"),
                info={"i": i},
                tags=["x", str(i)],
            )
            for i in range(5)
        ]
    )
    rows = (
        await Band.select(Band.name, Band.rating, Band.info, Band.tags)
        .where(Band.popularity > 15)
        .order_by(Band.id)
    )
    assert [r["name"] for r in rows] == ["b2", "b3", "b4"]
    out.append(rows)
    b1 = await Band.objects().get(Band.name == "b1")
    await Concert.insert(Concert(band=b1.id, sold_out=True))
    out.append(await Concert.select(Concert.band.name, Concert.sold_out))
    try:
        async with ENGINE.transaction():
            await Band.insert(Band(name="zz", rating=1, tags=[]))
            await Band.insert(Band(name="b1", rating=1, tags=[]))
    except Exception as e:  # the driver's own class: asyncpg.UniqueViolationError
        assert getattr(e, "sqlstate", None) == "23505", repr(e)
        out.append(type(e).__name__)
    assert await Band.count() == 5
    await ENGINE.start_connection_pool(min_size=1, max_size=3)
    firsts = await asyncio.gather(
        *(Band.select(Band.name).where(Band.popularity == i * 10).first() for i in range(5))
    )
    out.append(firsts)
    await Band.update({Band.popularity: Band.popularity + 1}).where(Band.name == "b0")
    out.append(await Band.select(Band.popularity).where(Band.name == "b0").first())
    await ENGINE.close_connection_pool()
    await Concert.alter().drop_table()
    await Band.alter().drop_table()
    return out
