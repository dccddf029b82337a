"""PreparedStatement."""

import pytest

from asyncpg_rs import exceptions


async def test_prepared_statement_api(con):
    ps = await con.prepare("SELECT $1::int4 AS a, $2::text AS b")
    assert ps.get_query() == "SELECT $1::int4 AS a, $2::text AS b"
    assert ps.get_name()
    params = ps.get_parameters()
    assert [(t.oid, t.name, t.kind) for t in params] == [
        (23, "int4", "scalar"),
        (25, "text", "scalar"),
    ]
    attrs = ps.get_attributes()
    assert [(a.name, a.type.name) for a in attrs] == [("a", "int4"), ("b", "text")]
    assert tuple(await ps.fetchrow(1, "x")) == (1, "x")
    assert await ps.fetchval(2, "y", column=1) == "y"
    assert [tuple(r) for r in await ps.fetch(3, "z")] == [(3, "z")]
    rows = await ps.fetchmany([(1, "a"), (2, "b")])
    assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]


async def test_prepared_executemany_and_status(con):
    await con.execute("CREATE TEMP TABLE pe (a int4)")
    ins = await con.prepare("INSERT INTO pe VALUES ($1)")
    await ins.executemany([(i,) for i in range(10)])
    sel = await con.prepare("SELECT a FROM pe ORDER BY a")
    rows = await sel.fetch()
    assert len(rows) == 10
    assert sel.get_statusmsg() == "SELECT 10"


async def test_explain(con):
    ps = await con.prepare("SELECT generate_series(1, $1::int4)")
    plan = await ps.explain(5)
    assert isinstance(plan, list) and "Plan" in plan[0]
    plan = await ps.explain(5, analyze=True)
    assert "Actual Rows" in plan[0]["Plan"]


async def test_prepare_errors(con):
    with pytest.raises(exceptions.UndefinedTableError):
        await con.prepare("SELECT * FROM no_such_table")
    ps = await con.prepare("SELECT $1::int4")
    with pytest.raises(exceptions.DataError):
        await ps.fetchval("not an int")
    assert await ps.fetchval(5) == 5
