"""Types found at run time: enums, domains, composites, ranges; custom codecs."""

import json

import pytest

from asyncpg_rs import exceptions, types


async def test_enum_domain_composite_range_and_arrays(con):
    await con.execute("""
        CREATE TYPE pg_temp.mood AS ENUM ('sad', 'ok', 'happy');
        CREATE DOMAIN pg_temp.posint AS int4 CHECK (VALUE > 0);
        CREATE TYPE pg_temp.pair AS (a int4, b text, m pg_temp.mood);
        CREATE TYPE pg_temp.floatrange AS RANGE (subtype = float8);
    """)
    assert await con.fetchval("SELECT 'ok'::pg_temp.mood") == "ok"
    assert await con.fetchval("SELECT $1::pg_temp.mood", "happy") == "happy"
    assert await con.fetchval("SELECT ARRAY['sad','ok']::pg_temp.mood[]") == ["sad", "ok"]
    assert await con.fetchval("SELECT 5::pg_temp.posint") == 5
    assert await con.fetchval("SELECT $1::pg_temp.posint + 1", 41) == 42
    with pytest.raises(exceptions.CheckViolationError):
        await con.fetchval("SELECT $1::pg_temp.posint", -1)
    rec = await con.fetchval("SELECT ROW(1, 'x', 'ok')::pg_temp.pair")
    assert tuple(rec) == (1, "x", "ok") and rec["b"] == "x"
    assert await con.fetchval("SELECT ($1::pg_temp.pair).b", (2, "y", "sad")) == "y"
    assert await con.fetchval("SELECT ($1::pg_temp.pair).m", {"a": 1, "b": "z", "m": "ok"}) == "ok"
    pairs = await con.fetchval("SELECT ARRAY[ROW(1,'a','ok'), NULL]::pg_temp.pair[]")
    assert tuple(pairs[0]) == (1, "a", "ok") and pairs[1] is None
    r = await con.fetchval("SELECT '[1.5,2.5)'::pg_temp.floatrange")
    assert r == types.Range(1.5, 2.5)
    assert (
        await con.fetchval(
            "SELECT $1::pg_temp.floatrange::text", types.Range(1, None, lower_inc=False)
        )
        == "(1,)"
    )


async def test_builtin_ranges_and_multiranges(con):
    assert await con.fetchval("SELECT int4range(1, 10)") == types.Range(1, 10)
    assert await con.fetchval("SELECT 'empty'::int4range") == types.Range(empty=True)
    assert await con.fetchval("SELECT $1::int8range::text", (5, None)) == "[5,)"
    if con.get_server_version() >= (14,):
        mr = await con.fetchval("SELECT '{[1,3), [5,7)}'::int4multirange")
        assert mr == [types.Range(1, 3), types.Range(5, 7)]


async def test_set_type_codec_json(con):
    await con.set_type_codec("json", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
    assert await con.fetchval("SELECT $1::json", {"a": [1, 2]}) == {"a": [1, 2]}
    await con.reset_type_codec("json", schema="pg_catalog")
    assert await con.fetchval("SELECT '{}'::json") == "{}"


async def test_set_type_codec_binary_and_unknown_type(con):
    await con.set_type_codec(
        "int4",
        schema="pg_catalog",
        format="binary",
        encoder=lambda v: int(v).to_bytes(4, "big"),
        decoder=lambda b: f"int:{int.from_bytes(b, 'big')}",
    )
    assert await con.fetchval("SELECT 7::int4") == "int:7"
    await con.reset_type_codec("int4", schema="pg_catalog")
    with pytest.raises(ValueError, match="unknown type: public.nosuchtype"):
        await con.set_type_codec("nosuchtype", encoder=str, decoder=str)


async def test_hstore_with_builtin_codec(con):
    try:
        await con.execute("CREATE EXTENSION IF NOT EXISTS hstore")
    except exceptions.PostgresError:
        pytest.skip("hstore extension not available")
    await con.set_builtin_type_codec("hstore", codec_name="pg_contrib.hstore")
    assert await con.fetchval("SELECT 'a=>1, b=>NULL'::hstore") == {"a": "1", "b": None}
    assert await con.fetchval("SELECT $1::hstore -> 'k'", {"k": "v"}) == "v"


async def test_reload_schema_state(con):
    await con.execute("CREATE TYPE pg_temp.t2 AS (a int4)")
    assert tuple(await con.fetchval("SELECT ROW(1)::pg_temp.t2")) == (1,)
    await con.execute("DROP TYPE pg_temp.t2; CREATE TYPE pg_temp.t2 AS (a int4, b int4)")
    await con.reload_schema_state()
    assert tuple(await con.fetchval("SELECT ROW(1, 2)::pg_temp.t2")) == (1, 2)


async def test_types_forgotten_during_introspection_are_introspected_again(pg):
    import asyncpg_rs

    class Forgetful(asyncpg_rs.Connection):
        """Forgets every known type when the first introspection starts, as a concurrent
        reload_schema_state() or set_type_codec() would."""

        forget_once = False
        introspections = 0

        async def _introspect_types(self, oids, timeout):
            self.introspections += 1
            if self.forget_once:
                self.forget_once = False
                await self.reload_schema_state()
            return await super()._introspect_types(oids, timeout)

    con = await asyncpg_rs.connect(**pg.connect_kwargs(), connection_class=Forgetful)
    try:
        await con.execute(
            "CREATE DOMAIN pg_temp.d_one AS int4; CREATE DOMAIN pg_temp.d_two AS int4"
        )
        assert await con.fetchval("SELECT $1::pg_temp.d_one", 10) == 10
        con.forget_once = True
        before = con.introspections
        row = await con.fetchrow("SELECT $1::pg_temp.d_one, $2::pg_temp.d_two", 10, 20)
        assert tuple(row) == (10, 20)
        assert con.introspections - before == 2
    finally:
        await con.close()
