"""Tortoise ORM on its asyncpg backend: schema generation, bulk create, filters across a
foreign key, JSON and decimal fields, transactions and IntegrityError, raw queries."""

from tortoise import Tortoise, fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction


class Author(Model):
    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=50, unique=True)
    meta = fields.JSONField(null=True)

    class Meta:
        app = "models"
        table = "compat_tortoise_author"


class Book(Model):
    id = fields.IntField(primary_key=True)
    title = fields.TextField()
    price = fields.DecimalField(max_digits=8, decimal_places=2)
    author = fields.ForeignKeyField("models.Author", related_name="books")

    class Meta:
        app = "models"
        table = "compat_tortoise_book"


async def run(dsn):
    out = []
    await Tortoise.init(
        db_url=dsn.replace("postgresql://", "asyncpg://"), modules={"models": [__name__]}
    )
    conn = Tortoise.get_connection("default")
    await conn.execute_script(
        "DROP TABLE IF EXISTS compat_tortoise_book; DROP TABLE IF EXISTS compat_tortoise_author;"
    )
    await Tortoise.generate_schemas()
    ann = await Author.create(name="ann", meta={"k": [1, 2]})
    await Book.bulk_create([Book(title=f"t{i}", price=f"{i}.25", author=ann) for i in range(5)])
    books = (
        await Book.filter(author__name="ann", price__gt=1)
        .order_by("id")
        .values_list("title", "price")
    )
    assert [b[0] for b in books] == ["t1", "t2", "t3", "t4"]
    out.append(books)
    try:
        async with in_transaction():
            await Author.create(name="bob")
            await Author.create(name="ann")
    except IntegrityError:
        out.append("integrity")
    assert await Author.all().count() == 1
    out.append(await Author.get(name="ann").values("name", "meta"))
    out.append(await conn.execute_query_dict("SELECT $1::int + 1 AS y", [41]))
    await conn.execute_script("DROP TABLE compat_tortoise_book; DROP TABLE compat_tortoise_author;")
    await Tortoise.close_connections()
    return out
