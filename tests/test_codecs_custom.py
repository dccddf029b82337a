"""User codecs (set_type_codec in text, binary and tuple format, set_builtin_type_codec),
arrays of text-only types, type metadata, and the rarer builtin types."""

import datetime
import decimal
import json

import pytest

from asyncpg_rs import exceptions
from asyncpg_rs.types import BitString, Path, Point


async def _fresh(con, *ddl):
    for stmt in ddl:
        await con.execute(stmt)


# ---------------------------------------------------------------- tuple format


TUPLE_CASES = [
    # (type, tuple, the server's text of it)
    ("date", (3,), "2000-01-04"),
    ("date", (2**31 - 1,), "infinity"),
    ("date", (-(2**31),), "-infinity"),
    ("time", (60 * 10**6 + 5,), "00:01:00.000005"),
    ("timetz", (60 * 10**6, 12600), "00:01:00-03:30"),
    ("timetz", (3723 * 10**6, -19800), "01:02:03+05:30"),
    ("timestamp", (60 * 10**6,), "2000-01-01 00:01:00"),
    ("timestamp", (-(2**63),), "-infinity"),
    ("timestamptz", (60 * 10**6,), "2000-01-01 00:01:00+00"),
    ("timestamptz", (2**63 - 1,), "infinity"),
    ("interval", (2, 3, 1), "2 mons 3 days 00:00:00.000001"),
    ("interval", (-14, 0, -(10**6)), "-1 years -2 mons -00:00:01"),
]


async def test_tuple_format_codecs_on_datetime_types(con):
    await con.execute("SET TIME ZONE 'UTC'")
    seen = []

    def decoder(t):
        seen.append(t)
        return ("decoded", t)

    def encoder(v):
        return v[1] if isinstance(v, tuple) and v and v[0] == "decoded" else v

    for typ, tup, text in TUPLE_CASES:
        await con.set_type_codec(
            typ, schema="pg_catalog", encoder=encoder, decoder=decoder, format="tuple"
        )
        try:
            got, server_text = await con.fetchrow(f"SELECT $1::{typ}, $1::{typ}::text", tup)
            assert got == ("decoded", tup), typ
            assert server_text == text, (typ, server_text)
            # arrays of the type use the codec for their elements
            arr = await con.fetchval(f"SELECT $1::{typ}[]", [tup, None, ("decoded", tup)])
            assert arr == [("decoded", tup), None, ("decoded", tup)]
        finally:
            await con.reset_type_codec(typ, schema="pg_catalog")
        # back to the builtin codec
        assert not isinstance(await con.fetchval(f"SELECT '{text}'::{typ}"), tuple)
    assert seen and all(isinstance(t, tuple) for t in seen)


async def test_tuple_format_refused_where_there_is_no_tuple_form(con):
    for typ in ("numeric", "int8", "point", "uuid", "text"):
        with pytest.raises(
            exceptions.InterfaceError,
            match=f"{typ} type does not support the 'tuple' exchange format",
        ):
            await con.set_type_codec(
                typ, schema="pg_catalog", encoder=str, decoder=str, format="tuple"
            )
    assert await con.fetchval("SELECT 1.5::numeric") == decimal.Decimal("1.5")


async def test_tuple_format_bad_encoder_output_is_a_data_error(con):
    await con.set_type_codec(
        "date", schema="pg_catalog", encoder=lambda v: v, decoder=lambda t: t, format="tuple"
    )
    try:
        with pytest.raises(exceptions.DataError, match=r"\$1"):
            await con.fetchval("SELECT $1::date", (1, 2))
        with pytest.raises(exceptions.DataError, match="out of int32 range"):
            await con.fetchval("SELECT $1::date", (2**40,))
        with pytest.raises(exceptions.DataError, match="expected a tuple"):
            await con.fetchval("SELECT $1::date", 5)
        assert await con.fetchval("SELECT $1::date", (0,)) == (0,)
    finally:
        await con.reset_type_codec("date", schema="pg_catalog")


async def test_tuple_codec_on_a_composite(con):
    await _fresh(
        con, "DROP TYPE IF EXISTS t_cplx CASCADE", "CREATE TYPE t_cplx AS (r float8, i float8)"
    )
    try:
        with pytest.raises(
            exceptions.UnsupportedClientFeatureError,
            match="only tuple-format codecs can be used on composite types",
        ):
            await con.set_type_codec("t_cplx", encoder=str, decoder=str)
        await con.set_type_codec(
            "t_cplx",
            encoder=lambda c: (c.real, c.imag),
            decoder=lambda t: complex(t[0], t[1]),
            format="tuple",
        )
        assert await con.fetchval("SELECT $1::t_cplx", 1 + 2j) == 1 + 2j
        assert await con.fetchval("SELECT ROW(3, -4)::t_cplx") == 3 - 4j
        assert await con.fetchval("SELECT $1::t_cplx[]", [1j, None]) == [1j, None]
        assert await con.fetchval("SELECT ($1::t_cplx).i", 5 + 7j) == 7.0
    finally:
        await con.execute("DROP TYPE t_cplx CASCADE")


# ---------------------------------------------------------------- text/binary codecs


async def test_text_codec_on_enum_applies_to_enum_arrays(con):
    await _fresh(
        con,
        "DROP TYPE IF EXISTS t_mood CASCADE",
        "CREATE TYPE t_mood AS ENUM ('happy', 'sad', 'so, so')",
    )
    try:
        await con.set_type_codec(
            "t_mood", encoder=lambda v: v.removeprefix("mood:"), decoder=lambda v: "mood:" + v
        )
        assert await con.fetchval("SELECT 'sad'::t_mood") == "mood:sad"
        assert await con.fetchval("SELECT ARRAY['happy', 'so, so']::t_mood[]") == [
            "mood:happy",
            "mood:so, so",
        ]
        assert await con.fetchval("SELECT $1::t_mood[]", ["mood:sad", None, "happy"]) == [
            "mood:sad",
            None,
            "mood:happy",
        ]
        assert await con.fetchval("SELECT ARRAY[['happy'], ['sad']]::t_mood[]") == [
            ["mood:happy"],
            ["mood:sad"],
        ]
        stmt = await con.prepare("SELECT $1::t_mood[] AS m")
        (param,) = stmt.get_parameters()
        assert (param.name, param.kind, param.schema) == ("t_mood[]", "array", "public")
        await con.reset_type_codec("t_mood")
        assert await con.fetchval("SELECT ARRAY['happy']::t_mood[]") == ["happy"]
    finally:
        await con.execute("DROP TYPE t_mood CASCADE")


async def test_custom_json_codec_on_json_arrays(con):
    await con.set_type_codec("json", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)
    try:
        value = [{"a": [1, None]}, None, "null", 22, {"q": '"\\,{}'}]
        got = await con.fetchval("SELECT $1::json[]", value)
        assert got == value
        assert await con.fetchval("""SELECT '{"{\\"x\\": 1}", "[2]"}'::json[]""") == [{"x": 1}, [2]]
    finally:
        await con.reset_type_codec("json", schema="pg_catalog")
    assert await con.fetchval("SELECT $1::json[]", ['"null"']) == ['"null"']


async def test_binary_codec_applies_to_arrays(con):
    def enc(v):
        return int(v).to_bytes(4, "big", signed=True)

    def dec(b):
        return f"int:{int.from_bytes(b, 'big', signed=True)}"

    await con.set_type_codec("int4", schema="pg_catalog", encoder=enc, decoder=dec, format="binary")
    try:
        assert await con.fetchval("SELECT $1::int4", 7) == "int:7"
        assert await con.fetchval("SELECT $1::int4[]", [1, None, -2]) == ["int:1", None, "int:-2"]
    finally:
        await con.reset_type_codec("int4", schema="pg_catalog")
    assert await con.fetchval("SELECT $1::int4[]", [1]) == [1]


async def test_codec_is_refused_on_domains_and_arrays(con):
    await _fresh(con, "DROP DOMAIN IF EXISTS t_posint", "CREATE DOMAIN t_posint AS int4")
    try:
        with pytest.raises(
            exceptions.UnsupportedClientFeatureError,
            match="custom codecs on domain types are not supported",
        ):
            await con.set_type_codec("t_posint", encoder=str, decoder=int)
    finally:
        await con.execute("DROP DOMAIN t_posint")
    with pytest.raises(
        exceptions.InterfaceError, match="cannot use custom codec on type pg_catalog._int4"
    ):
        await con.set_type_codec("_int4", schema="pg_catalog", encoder=str, decoder=str)
    with pytest.raises(ValueError, match="unknown type: public.no_such_type"):
        await con.set_type_codec("no_such_type", encoder=str, decoder=str)


@pytest.mark.parametrize(
    "name,sql,text",
    [
        ("smallint", "1::smallint", "1"),
        ("int", "1::int", "1"),
        ("integer", "1::integer", "1"),
        ("bigint", "1::bigint", "1"),
        ("decimal", "1.5::decimal", "1.5"),
        ("real", "1.5::real", "1.5"),
        ("double precision", "1.5::double precision", "1.5"),
        ("timestamp with timezone", "'2020-01-01 00:00+00'::timestamptz", "2020-01-01 00:00:00+00"),
        ("time without timezone", "'01:02'::time", "01:02:00"),
        ("character", "'x'::character", "x"),
        ("CHARACTER VARYING", "'x'::varchar", "x"),
        ("bit varying", "B'101'::varbit", "101"),
        ("char", "'x'::\"char\"", "x"),
    ],
)
async def test_sql_standard_type_names_in_pg_catalog(con, name, sql, text):
    await con.execute("SET TIME ZONE 'UTC'")
    await con.set_type_codec(name, schema="pg_catalog", encoder=str, decoder=lambda s: f"<{s}>")
    try:
        assert await con.fetchval(f"SELECT {sql}") == f"<{text}>"
    finally:
        await con.reset_type_codec(name, schema="pg_catalog")
    assert await con.fetchval(f"SELECT {sql}") != f"<{text}>"


async def test_set_builtin_type_codec_on_a_domain_and_in_composites(con):
    await _fresh(
        con,
        "DROP TYPE IF EXISTS t_rec CASCADE",
        "DROP DOMAIN IF EXISTS t_dec",
        "CREATE DOMAIN t_dec AS numeric",
        "CREATE TYPE t_rec AS (i t_dec, j int4)",
    )
    try:
        await con.set_builtin_type_codec("t_dec", codec_name="decimal")
        assert await con.fetchval("SELECT $1::t_dec", 44) == 44
        assert await con.fetchval("SELECT ($1::t_dec, 2)::t_rec", 44) == (44, 2)
        await con.reset_type_codec("t_dec")
        await con.set_builtin_type_codec("t_dec", codec_name="numeric", format="text")
        assert await con.fetchval("SELECT $1::t_dec", decimal.Decimal("1.50")) == decimal.Decimal(
            "1.50"
        )
        # a composite with a text-only attribute cannot be read, as in asyncpg
        with pytest.raises(
            exceptions.UnsupportedClientFeatureError,
            match="text encoding of composite types is not supported",
        ):
            await con.fetchval("SELECT ($1::t_dec, 2)::t_rec", 44)
        assert await con.fetchval("SELECT 1") == 1
    finally:
        await con.execute("DROP TYPE t_rec; DROP DOMAIN t_dec")


# ---------------------------------------------------------------- text-only types


async def test_arrays_of_text_only_types_are_lists(con):
    acl = await con.fetchval("SELECT ARRAY['postgres=r/postgres'::aclitem, NULL]")
    assert acl == ["postgres=r/postgres", None]
    got = await con.fetchval("SELECT relacl FROM pg_class WHERE relname = 'pg_class'")
    assert got is None or all(isinstance(x, str) for x in got)
    # explicit lower bounds and nested levels
    assert await con.fetchval(
        "SELECT '[0:1]={postgres=r/postgres,postgres=w/postgres}'::aclitem[]"
    ) == ["postgres=r/postgres", "postgres=w/postgres"]
    await _fresh(
        con,
        "DROP TYPE IF EXISTS t_txt CASCADE",
        "CREATE TYPE t_txt",
        "CREATE FUNCTION t_txt_in(cstring) RETURNS t_txt "
        "AS 'textin' LANGUAGE internal IMMUTABLE STRICT",
        "CREATE FUNCTION t_txt_out(t_txt) RETURNS cstring AS 'textout' "
        "LANGUAGE internal IMMUTABLE STRICT",
        "CREATE TYPE t_txt (INPUT = t_txt_in, OUTPUT = t_txt_out, LIKE = text)",
    )
    try:
        cases = [
            ["a", "b"],
            [None, "b"],
            [],
            ["  a", "  b"],
            ['"a', r'\""'],
            [['"a', r'\""'], [",", '",']],
            ["NULL", "null", "{}", ""],
        ]
        for case in cases:
            assert await con.fetchval("SELECT $1::t_txt[]", case) == case
        assert await con.fetchval("SELECT $1::t_txt", "plain") == "plain"
        with pytest.raises(exceptions.DataError, match="non-homogeneous"):
            await con.fetchval("SELECT $1::t_txt[]", [["a"], ["b", "c"]])
        with pytest.raises(exceptions.DataError, match=r"\$1"):
            await con.fetchval("SELECT $1::t_txt[]", [1])
        assert await con.fetchval("SELECT 2") == 2
    finally:
        await con.execute("DROP TYPE t_txt CASCADE")


async def test_text_only_composites_and_ranges_are_refused_to_send(con):
    await _fresh(
        con, "DROP TYPE IF EXISTS t_acomp CASCADE", "CREATE TYPE t_acomp AS (a aclitem, b int4)"
    )
    try:
        with pytest.raises(
            exceptions.UnsupportedClientFeatureError,
            match=r"query argument \$1: text encoding of composite types",
        ):
            await con.fetchval("SELECT $1::t_acomp", ("postgres=r/postgres", 1))
        assert await con.fetchval("SELECT 3") == 3
    finally:
        await con.execute("DROP TYPE t_acomp")


# ---------------------------------------------------------------- metadata


async def test_type_metadata_names_kinds_and_schemas(con):
    await _fresh(con, "DROP TYPE IF EXISTS t_meta CASCADE", "CREATE TYPE t_meta AS (a int4)")
    try:
        stmt = await con.prepare(
            "SELECT $1::uuid[] a, $2::t_meta b, $3::t_meta[] c, $4::int4range d, "
            "NULL::int8multirange e, NULL::aclitem f, NULL::varchar[] g, 1::int4 h"
        )
        types = {a.name: (a.type.name, a.type.kind, a.type.schema) for a in stmt.get_attributes()}
        assert types == {
            "a": ("uuid[]", "array", "pg_catalog"),
            "b": ("t_meta", "composite", "public"),
            "c": ("t_meta[]", "array", "public"),
            "d": ("int4range", "range", "pg_catalog"),
            "e": ("int8multirange", "multirange", "pg_catalog"),
            "f": ("aclitem", "scalar", "pg_catalog"),
            "g": ("varchar[]", "array", "pg_catalog"),
            "h": ("int4", "scalar", "pg_catalog"),
        }
        assert [p.name for p in stmt.get_parameters()] == [
            "uuid[]",
            "t_meta",
            "t_meta[]",
            "int4range",
        ]
    finally:
        await con.execute("DROP TYPE t_meta CASCADE")


# ---------------------------------------------------------------- rarer builtins


async def test_xid_and_snapshot_types(con):
    for typ, value in [("xid", 2**32 - 1), ("xid", 0), ("cid", 7), ("xid8", 2**64 - 1)]:
        assert await con.fetchval(f"SELECT $1::{typ}", value) == value
    snap = (100, 1000, (100, 200, 300, 400))
    for typ in ("txid_snapshot", "pg_snapshot"):
        assert await con.fetchval(f"SELECT $1::{typ}", snap) == snap
        assert await con.fetchval(f"SELECT $1::{typ}::text", snap) == "100:1000:100,200,300,400"
    with pytest.raises(exceptions.DataError, match=r"\$1"):
        await con.fetchval("SELECT $1::pg_snapshot", "100:1000:")


async def test_tid_errors_name_the_fault(con):
    for value, msg in [
        (b"foo", "list or tuple expected"),
        ((), "invalid number of elements in tid tuple"),
        ([1, 2, 3], "invalid number of elements in tid tuple"),
        ((2**32, 0), "tuple id block value out of uint32 range"),
        ((0, 2**16), "tuple id offset value out of uint16 range"),
    ]:
        with pytest.raises(exceptions.DataError, match=msg):
            await con.fetchval("SELECT $1::tid", value)
    assert await con.fetchval("SELECT $1::tid", [5, 6]) == (5, 6)


async def test_path_from_tuple_is_closed_and_varbit_from_bytes(con):
    closed = await con.fetchval("SELECT $1::path", ((0.0, 0.0), (1.0, 1.0)))
    assert closed == Path(Point(0.0, 0.0), Point(1.0, 1.0), is_closed=True)
    opened = await con.fetchval("SELECT $1::path", [(0.0, 0.0), (1.0, 1.0)])
    assert opened == Path(Point(0.0, 0.0), Point(1.0, 1.0), is_closed=False)
    assert await con.fetchval("SELECT $1::varbit", b"\x01") == BitString("00000001")
    assert await con.fetchval("SELECT $1::varbit::text", bytearray(b"\x02")) == "00000010"


async def test_composite_input_faults(con):
    await _fresh(
        con, "DROP TYPE IF EXISTS t_pair CASCADE", "CREATE TYPE t_pair AS (a text, b int4)"
    )
    try:
        with pytest.raises(
            exceptions.DataError, match="'bad' is not a valid element of composite type t_pair"
        ):
            await con.fetchval("SELECT $1::t_pair", {"bad": 1})
        assert await con.fetchval("SELECT $1::t_pair", {"b": 2}) == (None, 2)
        # tuples inside an array of composites are elements, not a dimension
        assert await con.fetchval("SELECT $1::t_pair[]", [("a", 1), None]) == [("a", 1), None]
        with pytest.raises(
            exceptions.UnsupportedClientFeatureError,
            match=r"query argument \$1: input of anonymous composite types",
        ):
            await con.fetchval("SELECT (1, 'foo') = $1", (1, "foo"))
        assert await con.fetchval("SELECT 4") == 4
    finally:
        await con.execute("DROP TYPE t_pair CASCADE")


async def test_numeric_decodes_as_asyncpg_does(con):
    cases = {
        "10000": "1E+4",
        "120000": "1.2E+5",
        "10000.00": "10000.00",
        "100": "100",
        "0.0001": "0.0001",
        "-2e7": "-2.000E+7",
        "0": "0",
    }
    for sql, want in cases.items():
        got = await con.fetchval(f"SELECT {sql}::numeric")
        assert str(got) == want, sql


async def test_interval_and_dates_still_plain_after_tuple_codecs(con):
    assert await con.fetchval("SELECT '1 day'::interval") == datetime.timedelta(days=1)
