"""SQLAlchemy 2's asyncpg dialect: ORM session, Core, streaming (server-side cursors), isolation
levels, executemany, ON CONFLICT, typed columns, and error translation."""

import datetime
import decimal
import uuid

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

WHEN = datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "compat_sa_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)
    balance = mapped_column(sa.Numeric(10, 2))
    opened = mapped_column(sa.DateTime(timezone=True))
    profile = mapped_column(JSONB)
    tags = mapped_column(ARRAY(sa.String))
    key = mapped_column(sa.Uuid)


async def run(dsn):
    out = []
    engine = create_async_engine(
        dsn.replace("postgresql://", "postgresql+asyncpg://"), pool_size=3, pool_pre_ping=True
    )
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)

    async with AsyncSession(engine, expire_on_commit=False) as session:
        async with session.begin():
            session.add_all(
                [
                    Account(
                        name=f"a{i}",
                        balance=decimal.Decimal("10.25") * i,
                        opened=WHEN,
                        profile={"n": i, "nested": [i, None]},
                        tags=["t", str(i)],
                        key=uuid.UUID(int=i),
                    )
                    for i in range(8)
                ]
            )
        rows = (
            (
                await session.execute(
                    sa.select(Account).where(Account.balance > 40).order_by(Account.id)
                )
            )
            .scalars()
            .all()
        )
        assert [a.name for a in rows] == ["a4", "a5", "a6", "a7"]
        assert rows[0].opened == WHEN and rows[0].key == uuid.UUID(int=4)
        out.append(
            [(a.name, a.balance, a.opened.isoformat(), a.profile, a.tags, str(a.key)) for a in rows]
        )
        await session.commit()
        try:
            async with session.begin():
                session.add(Account(name="a1"))
        except sa_exc.IntegrityError as e:
            assert e.orig.sqlstate == "23505"
            out.append(["integrity", type(e.orig).__name__, e.orig.sqlstate])
        else:
            raise AssertionError("duplicate name accepted")

    async with engine.connect() as conn:
        one = await conn.execute(
            sa.text("SELECT CAST(:x AS int) + 1 AS y, :s AS s"), {"x": 41, "s": "text"}
        )
        out.append(list(one.one()))
        stream = await conn.stream(sa.select(Account.name).order_by(Account.id))
        names = [row.name async for row in stream]
        assert names == [f"a{i}" for i in range(8)]
        out.append(names)
        await conn.execute(
            pg_insert(Account.__table__).values(id=1, name="a0").on_conflict_do_nothing()
        )
        await conn.execute(sa.insert(Account.__table__), [{"name": f"m{i}"} for i in range(5)])
        count = (await conn.execute(sa.select(sa.func.count()).select_from(Account))).scalar()
        assert count == 13
        await conn.rollback()
        count = (await conn.execute(sa.select(sa.func.count()).select_from(Account))).scalar()
        assert count == 8
        out.append(count)

    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="SERIALIZABLE")
        level = (await conn.execute(sa.text("SHOW transaction_isolation"))).scalar()
        assert level == "serializable"
        out.append(level)
        await conn.commit()

    async with engine.connect() as conn:
        try:
            await conn.execute(sa.text("SELECT no_such_column FROM compat_sa_account"))
        except sa_exc.ProgrammingError as e:
            out.append(["programming", type(e.orig).__name__, e.orig.sqlstate])
        await conn.rollback()
        # the connection is still usable after the error
        out.append((await conn.execute(sa.text("SELECT 1"))).scalar())

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
    await engine.dispose()
    return out
