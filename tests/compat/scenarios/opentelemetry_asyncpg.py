"""OpenTelemetry's asyncpg instrumentation: it patches ``asyncpg.connection.Connection``,
``asyncpg.cursor`` and ``asyncpg.prepared_stmt`` by module path, so every query, the pool's
reset, transactions and cursors must produce spans with the right attributes and status."""

from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
AsyncPGInstrumentor().instrument(tracer_provider=PROVIDER)

import asyncpg  # noqa: E402  (instrumented above, as an application would)

KEPT = ("db.statement", "db.system", "db.name", "db.user", "net.peer.name")


async def run(dsn):
    con = await asyncpg.connect(dsn)
    await con.execute("SELECT 1")
    assert await con.fetch("SELECT $1::int AS v", 5) == [(5,)]
    await con.fetchval("SELECT 2")
    try:
        await con.fetch("SELECT no_such_column")
    except asyncpg.UndefinedColumnError:
        pass
    stmt = await con.prepare("SELECT $1::text")
    assert await stmt.fetchval("p") == "p"
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    async with pool.acquire() as c:
        await c.fetchrow("SELECT 3")
    await pool.close()
    async with con.transaction():
        cur = await con.cursor("SELECT generate_series(1, 10)")
        assert len(await cur.fetch(3)) == 3
    await con.close()
    spans = [
        (s.name, s.status.status_code.name, {k: v for k, v in s.attributes.items() if k in KEPT})
        for s in EXPORTER.get_finished_spans()
    ]
    statements = [s[2].get("db.statement") for s in spans]
    for query in (
        "SELECT 1",
        "SELECT $1::int AS v",
        "SELECT 2",
        "SELECT no_such_column",
        "SELECT 3",
        "SELECT generate_series(1, 10)",
    ):
        assert query in statements, (query, statements)
    assert "ERROR" in [s[1] for s in spans if s[2].get("db.statement") == "SELECT no_such_column"]
    return spans
